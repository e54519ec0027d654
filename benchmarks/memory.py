"""Memory: peak RSS of ``asyncovf run`` importing large disks at high concurrency.

A 64-VM batch of one OVA with a 256 MiB disk at concurrency 64 (issue 6:
target <= 200 MiB), against two baselines measured in the same run: the
interpreter with asyncovf imported (the floor), and the same batch at
concurrency 1. Memory is meant to be bounded by workers x chunk size, not by
disk size: 64 uploads of 256 MiB each move 16 GiB through the process.

Run: ``.venv/bin/python -m benchmarks.memory [--vms 64] [--size-mb 256]``.
Needs about vms x size of free disk (vcsim stores what it receives).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=64)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        print(f"building an OVA with a {args.size_mb} MiB disk…", flush=True)
        built = build_package(Path(tmp), "mem",
                              disks=(DiskSpec(args.size_mb * 2, args.size_mb * 2**20),))
        floor = idle_baseline()
        rows: list[dict[str, Any]] = [{"run": "interpreter + asyncovf imported",
                                       "peak_rss_mib": round(floor.peak_rss_mib, 1)}]
        for concurrency in (1, args.concurrency):
            with running_vcsim() as vcsim:  # a fresh simulator: its datastore starts empty
                batch = batch_file(Path(tmp), built.path, args.vms, f"mem-c{concurrency}")
                run = run_batch(vcsim, batch, concurrency)
            moved = args.vms * args.size_mb
            rows.append({"run": f"{args.vms} x {args.size_mb} MiB at concurrency {concurrency}",
                         "peak_rss_mib": round(run.peak_rss_mib, 1),
                         "seconds": round(run.seconds, 1),
                         "mib_per_s": round(moved / run.seconds, 1),
                         "above_floor_mib": round(run.peak_rss_mib - floor.peak_rss_mib, 1)})
            print(rows[-1], flush=True)
    top = rows[-1]
    result = {"vms": args.vms, "size_mb": args.size_mb, "rows": rows,
              "target_mib": 200, "meets_target": top["peak_rss_mib"] <= 200,
              "per_worker_above_floor_mib": round(top["above_floor_mib"] / args.concurrency, 2)}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| run | peak RSS MiB | above floor | MiB/s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['peak_rss_mib']} | {row.get('above_floor_mib', '')} | "
              f"{row.get('mib_per_s', '')} |")


if __name__ == "__main__":
    main()
