"""Descriptor parsing cost over the shared corpus (CPU time, not wall time).

Targets (issue 3): the largest fixture parses in under 20 ms of CPU; the whole
corpus in under 5 s. Baseline in the same run: lxml's bare hardened parse of
the same bytes, so the ratio shows what building our model adds.
Run: ``.venv/bin/python -m benchmarks.parse``.
"""

from __future__ import annotations

import json
import time

from lxml import etree

from asyncovf.errors import PackageError
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.spec import options_document
from tests.corpus import corpus_files


def cpu() -> float:
    return time.process_time()


def main() -> None:
    files = [(p, p.read_bytes()) for p in corpus_files()]
    largest_path, largest = max(files, key=lambda item: len(item[1]))
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)

    rounds = 20
    started = cpu()
    for _ in range(rounds):
        try:
            parse_descriptor(largest, name=largest_path.name)
        except PackageError:
            pass
    ours_largest = (cpu() - started) / rounds
    started = cpu()
    for _ in range(rounds):
        try:
            etree.fromstring(largest, parser)
        except etree.XMLSyntaxError:
            pass
    bare_largest = (cpu() - started) / rounds

    started = cpu()
    parsed = refused = 0
    for path, data in files:
        try:
            options_document(parse_descriptor(data, name=path.name), verbose=True)
            parsed += 1
        except PackageError:
            refused += 1
    corpus = cpu() - started

    result = {
        "largest_fixture": largest_path.name,
        "largest_bytes": len(largest),
        "largest_cpu_ms": round(ours_largest * 1000, 2),
        "largest_bare_lxml_cpu_ms": round(bare_largest * 1000, 2),
        "largest_ratio_vs_bare_lxml": round(ours_largest / bare_largest, 2),
        "corpus_files": len(files),
        "corpus_parsed": parsed,
        "corpus_refused": refused,
        "corpus_cpu_s_with_spec": round(corpus, 3),
    }
    print(json.dumps(result, indent=1))
    print(f"\n| measure | value | target |\n|---|---|---|\n"
          f"| largest fixture ({len(largest) // 1024} KiB) | {result['largest_cpu_ms']} ms CPU "
          f"({result['largest_ratio_vs_bare_lxml']}x bare lxml) | < 20 ms |\n"
          f"| whole corpus ({len(files)} files), parse + verbose spec | "
          f"{result['corpus_cpu_s_with_spec']} s CPU | < 5 s |")


if __name__ == "__main__":
    main()
