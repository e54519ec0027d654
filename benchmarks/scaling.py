"""Scaling: wall time and peak RSS of ``asyncovf run`` for 10, 100 and 1,000 jobs.

Cost must grow linearly with jobs — the same seconds per job at every size —
and memory must not grow with the number of jobs *done*: a finished job keeps
only its report line. Each size runs in a fresh child process against one vcsim
(a fresh one per size, so the simulator's own inventory growth does not tilt
the comparison); the 10-job run is the baseline the others are compared with.
Fixed costs (interpreter start, logins, the inventory traversal) dominate
small runs, so the marginal cost per extra job is printed too; and, measured
in-process with tracemalloc, the memory a finished job keeps.

Run: ``.venv/bin/python -m benchmarks.scaling [--sizes 10 100 1000] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

from asyncovf import ConnectionSettings, JobResult, JobStatus, RunSettings, run_batch
from benchmarks.children import batch_file, idle_baseline
from benchmarks.children import run_batch as run_cli
from benchmarks.orchestration import plan_for
from tests.factory import DiskSpec, build_package
from tests.vcsim.harness import Vcsim, running_vcsim


def retained_per_job(vcsim: Vcsim, source: Path, count: int, concurrency: int) -> float:
    """Bytes still allocated per job after :func:`asyncovf.run_batch` returns (tracemalloc).

    What a finished job should keep is its report line (name, status, phase
    times); anything more would grow a 100,000-job run without bound.
    """
    connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                    password=vcsim.password, ca_file=str(vcsim.ca_file))

    def batch(jobs: int, prefix: str) -> list[JobResult]:
        return anyio.run(run_batch, connection, plan_for(source, prefix, jobs),
                         RunSettings(concurrency=concurrency))

    batch(20, f"warm{count}")  # imports, caches, first-use allocations
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    results = batch(count, f"kept{count}")  # what a library caller holds once it returns
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(results) == count
    assert all(r.status is JobStatus.IMPORTED for r in results), \
        [r.error for r in results if r.error][:3]
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        built = build_package(Path(tmp), "tiny", disks=(DiskSpec(8, 64 * 1024),))
        floor = idle_baseline()
        for size in args.sizes:
            with running_vcsim() as vcsim:
                run = run_cli(vcsim, batch_file(Path(tmp), built.path, size, "scale"),
                              args.concurrency, "--report", str(Path(tmp) / f"r{size}.json"))
            rows.append({"jobs": size, "seconds": round(run.seconds, 2),
                         "ms_per_job": round(1000 * run.seconds / size, 1),
                         "cpu_ms_per_job": round(1000 * run.cpu_seconds / size, 1),
                         "peak_rss_mib": round(run.peak_rss_mib, 1),
                         "rss_above_floor_mib": round(run.peak_rss_mib - floor.peak_rss_mib, 1)})
            print(rows[-1], flush=True)
        with running_vcsim() as vcsim:
            retained = {size: round(retained_per_job(vcsim, built.path, size,
                                                     args.concurrency) / 1024, 2)
                        for size in (100, 400)}
    base = rows[0]
    for row in rows:
        row["ms_per_job_vs_first"] = round(row["ms_per_job"] / base["ms_per_job"], 2)
        row["cpu_per_job_vs_first"] = round(row["cpu_ms_per_job"] / base["cpu_ms_per_job"], 2)
    marginal = [round(1000 * (b["seconds"] - a["seconds"]) / (b["jobs"] - a["jobs"]), 1)
                for a, b in zip(rows, rows[1:], strict=False)]
    result = {"concurrency": args.concurrency, "floor_rss_mib": round(floor.peak_rss_mib, 1),
              "rows": rows, "marginal_ms_per_job": marginal,
              "retained_kib_per_finished_job": retained}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| jobs | wall s | ms/job | CPU ms/job | CPU/job vs 10 | peak RSS MiB |\n"
          "|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['jobs']} | {row['seconds']} | {row['ms_per_job']} | "
              f"{row['cpu_ms_per_job']} | {row['cpu_per_job_vs_first']}x | "
              f"{row['peak_rss_mib']} |")
    print(f"\nmarginal ms per extra job between sizes: {marginal}; memory kept per finished "
          f"job (KiB, after 100 / 400 jobs): {retained}")


if __name__ == "__main__":
    main()
