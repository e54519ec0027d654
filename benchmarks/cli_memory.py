"""Peak RSS of ``asyncovf run``, the command as a user runs it, for 100 to 10,000 jobs.

Each run is a child process (``python -m asyncovf run``, measured by its own
``VmHWM``: :mod:`benchmarks.children`) importing a 1 MiB-disk OVA, against a
fresh simulator per run. The targets: at most 150 MiB at concurrency 16 and
200 MiB at 64, plus at most 4 KiB per job (its report row) — so memory may not
grow with the bytes streamed. The baseline in the same run is the idle CLI
(``asyncovf --help``): the interpreter and every module the command loads.

Run: ``.venv/bin/python -m benchmarks.cli_memory [--sizes 100 1000 10000] [--concurrency 16 64]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.children import batch_file, idle_baseline, run_batch
from tests.factory import DiskSpec, build_package
from tests.vcsim.harness import running_vcsim

#: Peak RSS allowed, MiB, by concurrency; plus :data:`PER_JOB_KIB` per job.
TARGET_MIB = {16: 150, 64: 200}
PER_JOB_KIB = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--disk-kib", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        built = build_package(Path(tmp), "mem", disks=(DiskSpec(16, args.disk_kib * 1024),))
        floor = idle_baseline().peak_rss_mib
        for concurrency in args.concurrency:
            for size in args.sizes:
                with running_vcsim() as vcsim:
                    run = run_batch(vcsim, batch_file(Path(tmp), built.path, size,
                                                      f"mem{concurrency}"), concurrency)
                target = TARGET_MIB.get(concurrency)
                limit = target + size * PER_JOB_KIB / 1024 if target else None
                rows.append({"concurrency": concurrency, "jobs": size,
                             "peak_rss_mib": round(run.peak_rss_mib, 1),
                             "over_idle_cli": round(run.peak_rss_mib / floor, 2),
                             "limit_mib": round(limit, 1) if limit else None,
                             "within": run.peak_rss_mib <= limit if limit else None,
                             "seconds": round(run.seconds, 1)})
                print(rows[-1], flush=True)
    result = {"disk_kib": args.disk_kib, "idle_cli_mib": round(floor, 1), "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nidle CLI: {floor:.1f} MiB\n\n| concurrency | jobs | peak RSS MiB | × idle CLI "
          "| limit MiB | within |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['concurrency']} | {row['jobs']} | {row['peak_rss_mib']} | "
              f"{row['over_idle_cli']}× | {row['limit_mib']} | {row['within']} |")


if __name__ == "__main__":
    main()
