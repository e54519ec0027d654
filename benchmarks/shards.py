"""One process against N shard processes: the same batch, against one simulator.

One ``asyncovf run`` at ``--concurrency C``, then N processes run exactly as the
pods of the Kubernetes Indexed Job run (``--shard auto``, JOB_COMPLETION_INDEX
and ASYNCOVF_SHARD_COUNT in each one's environment) at ``--concurrency C/N``,
all at once. Reported for each: correctness (every VM of the batch imported
exactly once across the reports, the inventory holding exactly the batch's VMs,
Login = Logout), the sessions vCenter saw, and wall time. Not a speed contest:
on two cores shared with the simulator the shards only compete for CPU; they
pay off when one client's network or CPU is what limits the run.

Run: ``.venv/bin/python -m benchmarks.shards [--count 400] [--shards 4] [--concurrency 16]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from asyncovf.cli.run import COMPLETION_INDEX, SHARD_COUNT
from asyncovf.vsphere.connection import ConnectionSettings
from tests.factory import DiskSpec, build_package
from tests.integration.inspect import list_vms
from tests.vcsim.harness import Vcsim, running_vcsim

ROOT = Path(__file__).resolve().parents[1]


def environment(vcsim: Vcsim, index: int | None, count: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("VSPHERE_") and key not in (COMPLETION_INDEX, SHARD_COUNT)}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password, VSPHERE_CA_FILE=str(vcsim.ca_file))
    if index is not None:
        env.update({COMPLETION_INDEX: str(index), SHARD_COUNT: str(count)})
    return env


async def run_processes(vcsim: Vcsim, batch: Path, reports: Path, shards: int,
                        concurrency: int) -> None:
    """``shards`` processes at once (1: one plain run), each writing its report."""
    async def one(index: int | None) -> None:
        report = reports / f"shard-{index if index is not None else 'all'}.json"
        argv = [sys.executable, "-m", "asyncovf", "run", str(batch), "--progress", "plain",
                "--concurrency", str(concurrency), "--report", str(report),
                *(["--shard", "auto"] if index is not None else [])]
        done = await anyio.run_process(argv, env=environment(vcsim, index, shards), cwd=ROOT,
                                       check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    async with anyio.create_task_group() as group:
        for index in (range(shards) if shards > 1 else [None]):
            group.start_soon(one, index)


def measure(vcsim: Vcsim, package: Path, directory: Path, count: int, shards: int,
            concurrency: int, prefix: str) -> dict[str, Any]:
    batch = directory / f"{prefix}.yaml"
    batch.write_text(f"defaults:\n  source: {package}\n  cluster: DC0_C0\n"
                     f"  datastore: LocalDS_0\nvms:\n  - name: \"{prefix}-{{index:04d}}\"\n"
                     f"    count: {count}\n")
    reports = directory / prefix
    reports.mkdir()
    vcsim.reset_counters()
    started = time.perf_counter()
    anyio.run(run_processes, vcsim, batch, reports, shards, concurrency)
    seconds = time.perf_counter() - started
    found = [json.loads(path.read_text()) for path in sorted(reports.glob("shard-*.json"))]
    counters = vcsim.counters()
    imported = Counter(job["name"] for report in found for job in report["jobs"]
                       if job["status"] == "imported")
    wanted = {f"{prefix}-{index:04d}" for index in range(1, count + 1)}
    inventory = {vm.name for vm in anyio.run(list_vms, _connection(vcsim))
                 if vm.name.startswith(f"{prefix}-")}
    return {
        "processes": shards, "concurrency_each": concurrency, "seconds": round(seconds, 2),
        "imports_per_s": round(count / seconds, 1),
        "imported_once": set(imported) == wanted and max(imported.values()) == 1,
        "inventory_is_the_batch": inventory == wanted,
        "logins": counters.ok("Login"), "logouts": counters.ok("Logout"),
        "sessions_peak": counters.sessions_peak,
    }


def _connection(vcsim: Vcsim) -> ConnectionSettings:
    return ConnectionSettings(server=vcsim.url, username=vcsim.username,
                              password=vcsim.password, ca_file=str(vcsim.ca_file))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16,
                        help="of the one process; each shard gets concurrency / shards")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        package = build_package(Path(tmp), "bench", disks=(DiskSpec(16, 1024 * 1024),)).path
        with running_vcsim() as vcsim:
            runs = [measure(vcsim, package, Path(tmp), args.count, 1, args.concurrency, "one"),
                    measure(vcsim, package, Path(tmp), args.count, args.shards,
                            max(1, args.concurrency // args.shards), "shd")]
    print(json.dumps(runs, indent=1))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    print()
    print("| processes × concurrency | imported exactly once | inventory = batch | "
          "Login / Logout | sessions at peak | seconds |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['processes']} × {run['concurrency_each']} | {run['imported_once']} | "
              f"{run['inventory_is_the_batch']} | {run['logins']} / {run['logouts']} | "
              f"{run['sessions_peak']} | {run['seconds']:.1f} |")


if __name__ == "__main__":
    main()
