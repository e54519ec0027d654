"""``deploy/kubernetes/job.yaml`` run as Kubernetes would run it, against the simulator.

Each "pod" is the CLI started with the Job's own command line (its ``args``,
``$(JOB_COMPLETION_INDEX)`` expanded, the batch and reports paths moved to the
test's directory) and the pod's environment: ``JOB_COMPLETION_INDEX`` as
Kubernetes sets it, ``ASYNCOVF_SHARD_COUNT``, and vCenter's address,
credentials and CA in ``VSPHERE_*`` as the Secret gives them.

Three pods at once split a batch with nothing imported twice and nothing left
over, their reports merge into one run and one cleanup removes it all. A pod
killed mid-shard and started again (as the Job replaces a failed pod, with the
same index) finishes its shard: the VMs its first attempt finished are left
alone, the ones it left half-imported are removed and imported again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncovf.cli.run import COMPLETION_INDEX, SHARD_COUNT
from asyncovf.engine.plan import load_batch
from asyncovf.loadreport.merge import merge_reports
from tests.faults.support import ROOT, FaultRun, cli_environment
from tests.integration.inspect import list_vms
from tests.unit.test_deploy_manifests import container, substituted

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: Where the Job's pods find the batch file and write their reports.
BATCH_IN_POD = "/config/batch.yaml"
REPORTS_IN_POD = "/reports/"


def pod_argv(batch: Path, reports: Path, index: int) -> list[str]:
    """The Job's container args for the pod of ``index``, paths moved to the test's.

    Each pod has a network of its own; here they share one, so each serves its
    metrics on a free loopback port, and none waits out the linger after its run.
    """
    words = substituted(container()["args"], {COMPLETION_INDEX: str(index)})
    assert words.count(BATCH_IN_POD) == 1, "the Job reads its batch from the ConfigMap"
    argv = []
    for previous, word in zip(["", *words], words, strict=False):
        if word == BATCH_IN_POD:
            word = str(batch)
        elif word.startswith(REPORTS_IN_POD):
            word = str(reports / word.removeprefix(REPORTS_IN_POD))
        elif previous == "--metrics-port":
            word = "127.0.0.1:0"
        argv.append(word)
    assert argv.count("auto") == 1 and "--shard" in argv
    return [sys.executable, "-m", "asyncovf", *argv, "--metrics-linger", "0"]


def pod_environment(run: FaultRun, index: int, count: int) -> dict[str, str]:
    """What a pod's container sees: its index, the shard count, the Secret's values."""
    env = {key: value for key, value in cli_environment(run).items()
           if key not in (COMPLETION_INDEX, SHARD_COUNT)}
    env.update({COMPLETION_INDEX: str(index), SHARD_COUNT: str(count),
                "VSPHERE_CA_FILE": str(run.vcsim.ca_file)})
    return env


async def run_pod(run: FaultRun, batch: Path, reports: Path, index: int, count: int
                  ) -> tuple[int, str, str]:
    """One pod to its end: (exit status, stdout, stderr)."""
    done = await anyio.run_process(pod_argv(batch, reports, index),
                                   env=pod_environment(run, index, count), cwd=ROOT,
                                   check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def write_fleet(run: FaultRun, directory: Path, count: int) -> tuple[Path, list[str]]:
    """A batch of ``count`` VMs of the run's package, and their names in file order."""
    batch = directory / "batch.yaml"
    await anyio.Path(batch).write_text(
        f"defaults:\n  source: {run.package_path}\n  cluster: DC0_C0\n"
        f'  datastore: LocalDS_0\nvms:\n  - name: "{run.prefix}-{{index:03d}}"\n'
        f"    count: {count}\n")
    names = [f"{run.prefix}-{i:03d}" for i in range(1, count + 1)]
    return batch, names


async def shard_names(batch: Path, number: int, total: int) -> list[str]:
    plan = await anyio.to_thread.run_sync(load_batch, batch)
    return [job.name for job in plan.shard(number, total).jobs]


async def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await anyio.Path(path).read_text())
    return data


def with_status(report: dict[str, Any], status: str) -> list[str]:
    return [job["name"] for job in report["jobs"] if job["status"] == status]


async def names_in_inventory(run: FaultRun) -> Counter[str]:
    """How many VMs of each name of this test there are (a name twice: imported twice)."""
    return Counter(vm.name for vm in await list_vms(run.connection)
                   if vm.name.startswith(run.prefix))


async def moids_of(run: FaultRun, names: list[str]) -> dict[str, str]:
    return {vm.name: vm.moid for vm in await list_vms(run.connection) if vm.name in names}


async def test_three_pods_at_once_import_the_batch_once_and_one_cleanup_removes_it(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    pods = 3
    batch, names = await write_fleet(fault_run, tmp_path, count=12)
    reports = tmp_path / "reports"
    await anyio.Path(reports).mkdir()
    before = {vm.moid for vm in await list_vms(fault_run.connection)}

    outcomes: dict[int, tuple[int, str, str]] = {}

    async def pod(index: int) -> None:
        outcomes[index] = await run_pod(fault_run, batch, reports, index, pods)

    async with anyio.create_task_group() as group:
        for index in range(pods):
            group.start_soon(pod, index)

    for index, (status, _, stderr) in sorted(outcomes.items()):
        assert status == 0, f"pod {index}: {stderr}"
    paths = [reports / f"shard-{index}.json" for index in range(pods)]
    shard_reports = [await read_json(path) for path in paths]
    # Each pod ran the shard its index names, and imported exactly that shard.
    for index, report in enumerate(shard_reports):
        assert report["run"]["shard"] == f"{index + 1}/{pods}"
        assert sorted(with_status(report, "imported")) == sorted(
            await shard_names(batch, index + 1, pods))
    imported = [name for report in shard_reports for name in with_status(report, "imported")]
    assert sorted(imported) == sorted(names), "the union of the shards is the batch, once"

    counters = await fault_run.settled()
    assert counters.ok("ImportVApp") == counters.ok("HttpNfcLeaseComplete") == len(names)
    assert counters.ok("Login") == counters.ok("Logout") and counters.sessions_expired == 0
    assert counters.leases_open == 0
    assert await names_in_inventory(fault_run) == Counter(names)
    await fault_run.check_invariants(imported=set(names))

    # The three reports read as one run.
    merged = merge_reports(shard_reports, [str(path) for path in paths])
    assert sorted(job["name"] for job in merged["jobs"]) == sorted(names)
    assert merged["run"]["shards"] == [f"{k}/{pods}" for k in range(1, pods + 1)]
    done = await anyio.run_process([sys.executable, "-m", "asyncovf", "report", *map(str, paths)],
                                   cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert f"{len(names)} of {len(names)} jobs imported" in done.stdout.decode()

    # One cleanup over the three reports removes every VM the Job created, and only those.
    done = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "cleanup", *map(str, paths)],
        env=pod_environment(fault_run, 0, pods), cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert {vm.moid for vm in await list_vms(fault_run.connection)} == before
    await fault_run.check_invariants(imported=set())


async def test_a_pod_killed_mid_shard_and_started_again_finishes_its_shard(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    # Pod 0 of 2 has 8 VMs and the Job's 4 workers. The uploads of its 3rd to 6th
    # VMs stall, so once its first two are imported all four workers hold a
    # half-imported VM (an open lease, the "importing" mark), and the last two
    # have not started: then the pod is killed, as an OOM kill or a lost node does.
    batch, _ = await write_fleet(fault_run, tmp_path, count=16)
    shard = await shard_names(batch, 1, 2)
    assert len(shard) == 8
    finished, half_imported, never_started = shard[:2], shard[2:6], shard[6:]
    await fault_run.set_faults(nfc=[{"vm": name, "stall_seconds": 110}
                                    for name in half_imported])
    reports = tmp_path / "reports"
    await anyio.Path(reports).mkdir()

    stderr = bytearray()
    process = await anyio.open_process(pod_argv(batch, reports, 0),
                                       env=pod_environment(fault_run, 0, 2), cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def drain() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            stderr.extend(chunk)

    async with anyio.create_task_group() as group:
        group.start_soon(drain)
        try:
            await fault_run.wait_until(
                lambda c: c.ok("HttpNfcLeaseComplete") >= 2
                and c.nfc_faults.get("stall", 0) >= len(half_imported), within=90)
            assert process.returncode is None, stderr.decode()
        finally:
            process.kill()
            await process.wait()
    assert process.returncode == -9
    killed = await fault_run.settled()
    assert killed.ok("HttpNfcLeaseComplete") == len(finished)
    assert killed.ok("ImportVApp") == len(finished) + len(half_imported)
    assert killed.leases_open == len(half_imported)
    assert await names_in_inventory(fault_run) == Counter(finished + half_imported)
    left = await moids_of(fault_run, half_imported)
    assert not (reports / "shard-0.json").exists()  # killed: no report

    # The Job starts a new pod with the same index: same command line, same shard.
    await fault_run.set_faults()
    status, _, err = await run_pod(fault_run, batch, reports, 0, 2)
    assert status == 0, err
    report = await read_json(reports / "shard-0.json")
    assert report["run"]["shard"] == "1/2"
    assert sorted(with_status(report, "skipped")) == sorted(finished)
    assert sorted(with_status(report, "imported")) == sorted(half_imported + never_started)
    # Each half-imported VM was removed and imported again, and the report says so.
    jobs = {job["name"]: job for job in report["jobs"]}
    assert {name: jobs[name]["replaced"] for name in half_imported} == left
    assert all(jobs[name]["replaced"] is None for name in finished + never_started)
    redone = await moids_of(fault_run, half_imported)
    assert set(redone.values()).isdisjoint(left.values())
    # Every VM of the shard exactly once, and none of the other shard's.
    assert await names_in_inventory(fault_run) == Counter(shard)

    # The killed pod's sessions and leases are vCenter's to end: it ends idle
    # sessions after 30 minutes, and their leases with them.
    await anyio.to_thread.run_sync(fault_run.vcsim.advance_clock, 1801.0)
    counters = await fault_run.settled()
    assert counters.leases_open == 0
    assert counters.leases_ended_by_server == len(half_imported)
    await fault_run.check_invariants(imported=set(shard))

    # The killed pod wrote no report: the last one's says skipped of what it had
    # finished, and only --include-skipped takes those too.
    done = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "cleanup", str(reports / "shard-0.json"),
         "--include-skipped", "--ca-file", str(fault_run.vcsim.ca_file)],
        env=cli_environment(fault_run), cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert "8 VMs the run imported or skipped" in done.stdout.decode()
    assert await names_in_inventory(fault_run) == Counter()
