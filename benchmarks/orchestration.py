"""Orchestration rate: N imports of a 1 MiB OVA against vcsim.

Measures, in one run against one simulator:

* ``asyncovf run`` in-process, through the library's :func:`asyncovf.run_batch`
  (open the source, check the placements in one session of their own, run the
  pool), at each concurrency: imports/s, SOAP round trips per import (from the
  harness's counters, the placement check's included), CPU seconds per import
  of our process;
* the baseline people script today: one ``asyncovf import`` process per VM,
  16 at a time.

Prints JSON and a Markdown table. Run:
``.venv/bin/python -m benchmarks.orchestration [--count 200] [--concurrency 1 8 16 32 64]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from asyncovf import (
    BatchPlan,
    ConnectionSettings,
    JobSpec,
    JobStatus,
    PlacementRequest,
    RunSettings,
    Watcher,
    run_batch,
)
from tests.factory import DiskSpec, build_package
from tests.vcsim.harness import Vcsim, running_vcsim

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used: the simulator's, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plan_for(source: Path, prefix: str, count: int) -> BatchPlan:
    jobs = tuple(
        JobSpec(index=i, name=f"{prefix}-{i:04d}", source=str(source),
                placement=PlacementRequest(cluster="DC0_C0", datastore="LocalDS_0"),
                origin="benchmark")
        for i in range(count)
    )
    return BatchPlan("benchmark", {}, jobs)


def in_process(vcsim: Vcsim, source: Path, count: int, concurrency: int, *,
               spec_per_vm: bool = False, prefix: str | None = None,
               strategy: str = "import", watcher: Watcher | None = None) -> dict[str, Any]:
    connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                    password=vcsim.password, ca_file=str(vcsim.ca_file))
    plan = plan_for(source, prefix or f"c{concurrency}", count)

    vcsim.reset_counters()
    cpu = cpu_seconds()
    simulator_cpu = process_cpu_seconds(vcsim.process.pid)
    started = time.perf_counter()
    # What ``asyncovf run`` does: opens the source, checks the placements, runs the pool.
    results = anyio.run(partial(run_batch, connection, plan,
                                RunSettings(concurrency=concurrency, spec_per_vm=spec_per_vm,
                                            strategy=strategy), watcher=watcher))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    simulator_cpu = process_cpu_seconds(vcsim.process.pid) - simulator_cpu
    counters = vcsim.counters()
    imported = sum(r.status is JobStatus.IMPORTED for r in results)
    assert imported == count, [r.error for r in results if r.error][:3]
    # One session per worker, plus the placement check's own (one login, one
    # inventory load, one logout) before the first import.
    assert counters.ok("Login") == counters.ok("Logout") == concurrency + 1
    return {
        "mode": "asyncovf run (in-process)" + (", --spec-per-vm" if spec_per_vm else "")
                + (f", --strategy {strategy}" if strategy != "import" else ""),
        "concurrency": concurrency,
        "imports": imported,
        "seconds": round(elapsed, 3),
        "imports_per_s": round(imported / elapsed, 1),
        "soap_per_import": round(counters.total_calls() / imported, 2),
        "soap_by_method": {m: counters.calls(m) for m in sorted(counters.methods)},
        "cpu_s_per_import": round(cpu / imported, 4),
        # The simulator's (launcher and vcsim: one process) over the same run.
        "simulator_cpu_s_per_import": round(simulator_cpu / imported, 4),
        # The disk bytes the client sent, as the simulator's NFC intake counted them.
        "nfc_bytes": counters.nfc_bytes,
    }


def alternating_arguments(description: str | None) -> argparse.Namespace:
    """``--count``, ``--concurrency``, ``--rounds`` and ``--json`` of a benchmark that
    alternates modes in-process (:func:`alternating_runs`)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def alternating_runs(modes: Sequence[str], rounds: int,
                     run: Callable[[Vcsim, Path, str, int], dict[str, Any]]
                     ) -> dict[str, list[dict[str, Any]]]:
    """Each mode once a round, in turn, for ``rounds`` rounds, against one simulator and
    a 1 MiB OVA (``run(vcsim, package, mode, round)``): a slow moment of the machine
    hits every mode alike. Each mode's runs, in order."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        package = build_package(Path(tmp), "bench", disks=(DiskSpec(16, 1024 * 1024),))
        with running_vcsim() as vcsim:
            for number in range(rounds):
                for mode in modes:
                    runs[mode].append(run(vcsim, package.path, mode, number))
    return runs


def process_per_vm(vcsim: Vcsim, source: Path, count: int, parallel: int) -> dict[str, Any]:
    env = {**os.environ, "VSPHERE_SERVER": vcsim.url, "VSPHERE_USER": vcsim.username,
           "VSPHERE_PASSWORD": vcsim.password}

    def one(index: int) -> int:
        return subprocess.run(
            [sys.executable, "-m", "asyncovf", "import", str(source), "--name",
             f"proc-{index:04d}", "--cluster", "DC0_C0", "--datastore", "LocalDS_0",
             "--ca-file", str(vcsim.ca_file)],
            env=env, cwd=ROOT, capture_output=True).returncode

    vcsim.reset_counters()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        codes = list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    counters = vcsim.counters()
    ok = codes.count(0)
    assert ok == count, f"{count - ok} single imports failed"
    return {
        "mode": f"one process per VM, {parallel} at a time",
        "concurrency": parallel,
        "imports": ok,
        "seconds": round(elapsed, 3),
        "imports_per_s": round(ok / elapsed, 1),
        "soap_per_import": round(counters.total_calls() / ok, 2),
        "soap_by_method": {m: counters.calls(m) for m in sorted(counters.methods)},
        "cpu_s_per_import": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--baseline-parallel", type=int, default=16)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        package = build_package(Path(tmp), "bench", disks=(DiskSpec(16, 1024 * 1024),))
        with running_vcsim() as vcsim:
            rows = [in_process(vcsim, package.path, args.count, concurrency)
                    for concurrency in args.concurrency]
            if not args.no_baseline:
                rows.append(process_per_vm(vcsim, package.path, args.count,
                                           args.baseline_parallel))
    result: dict[str, Any] = {"count": args.count, "rows": rows}
    if not args.no_baseline:
        baseline = rows[-1]["imports_per_s"]
        for row in rows[:-1]:
            row["ratio_vs_process_per_vm"] = round(row["imports_per_s"] / baseline, 2)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| mode | concurrency | imports/s | SOAP calls/import | CPU s/import | vs baseline |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        cpu = f"{row['cpu_s_per_import']:.4f}" if row["cpu_s_per_import"] is not None else "-"
        ratio = row.get("ratio_vs_process_per_vm")
        print(f"| {row['mode']} | {row['concurrency']} | {row['imports_per_s']} | "
              f"{row['soap_per_import']} | {cpu} | {f'{ratio}x' if ratio else '1.0x'} |")


if __name__ == "__main__":
    main()
