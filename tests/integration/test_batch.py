"""The bulk engine against vcsim: pool, sessions, cache, retries, conflicts, Ctrl-C.

Every test checks the job outcomes *and* the invariants: sessions opened =
closed, every ImportVApp ended by Complete or Abort, and no VM left behind
that a job did not report ``imported``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import OnConflict, RunSettings
from asyncovf.engine.plan import JOB_KEYS, BatchPlan, load_batch
from asyncovf.engine.pool import BatchRunner
from asyncovf.engine.run import open_sources
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.session import VCenterSession
from tests.factory import DiskSpec, build_package
from tests.integration.inspect import list_vms
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[2]


SMALL_DISK = DiskSpec(16, 64 * 1024)


def batch(tmp_path: Path, vms: str, *, disk: DiskSpec = SMALL_DISK,
          extra_defaults: str = "") -> BatchPlan:
    build_package(tmp_path, "photon", disks=(disk,))
    path = tmp_path / "batch.yaml"
    path.write_text(f"defaults:\n  source: ./photon.ova\n  cluster: DC0_C0\n"
                    f"  datastore: LocalDS_0\n{extra_defaults}vms:\n{vms}")
    return load_batch(path)


async def make_batch(tmp_path: Path, vms: str, **kwargs: Any) -> BatchPlan:
    """``batch`` for async tests: building packages and reading files off the loop."""
    return await anyio.to_thread.run_sync(lambda: batch(tmp_path, vms, **kwargs))


async def run_plan(connection: ConnectionSettings, plan: BatchPlan,
                   settings: RunSettings) -> BatchRunner:
    packages, errors = await open_sources(plan)
    runner = BatchRunner(connection, plan.jobs, packages, settings, source_errors=errors)
    await runner.run()
    return runner


def check_invariants(vcsim: Vcsim, runner: BatchRunner | None = None) -> None:
    """The simulator's own counts: every session logged out and none live, every lease
    completed or aborted by a call that succeeded, and none open."""
    counters = vcsim.counters()
    assert counters.ok("Login") == counters.ok("Logout"), "a session was not logged out"
    assert counters.sessions_live == 0, "a session is still live"
    assert counters.leases_open == 0, "a lease is still open"
    assert counters.ok("ImportVApp") == (
        counters.ok("HttpNfcLeaseComplete") + counters.ok("HttpNfcLeaseAbort")
    ), "a lease was neither completed nor aborted"
    if runner is not None:
        assert runner.sessions_opened == runner.sessions_closed


async def vm_names(connection: ConnectionSettings, prefix: str) -> set[str]:
    return {vm.name for vm in await list_vms(connection) if vm.name.startswith(prefix)}


async def test_two_hundred_vms_at_concurrency_16_with_one_session_per_worker(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, '  - name: "bulk-{index:03d}"\n    count: 200\n')
    runner = await run_plan(connection, plan, RunSettings(concurrency=16))

    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 200
    assert all(r.vm and r.attempts == 1 and r.bytes > 0 for r in runner.results)
    assert len({r.vm for r in runner.results}) == 200
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.ok("Login") == 16 == counters.ok("Logout")
    assert runner.sessions_opened == 16 == runner.sessions_closed
    assert counters.ok("ImportVApp") == 200 == counters.ok("HttpNfcLeaseComplete")
    assert runner.inventory.refreshes == 1  # 16 workers missed at once; one traversal
    assert await vm_names(connection, "bulk-") == {f"bulk-{i:03d}" for i in range(1, 201)}
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_failed_upload_is_retried_as_a_whole_job(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: retry-me\n")
    # The first upload dies with a 500 after 1000 bytes; no upload retries, so
    # the lease is aborted and the job starts again from CreateImportSpec.
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
        nfc={"times": 1, "status": 500, "after_bytes": 1000}))
    runner = await run_plan(connection, plan, RunSettings(concurrency=1, job_retries=1,
                                                          upload_attempts=1))
    (result,) = runner.results
    assert (result.status, result.attempts, result.error) == (JobStatus.IMPORTED, 2, None)
    assert result.timings["abort"] >= 0 and [p for a, p, _ in result.phases if a == 1][-1] == \
        "failed"
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.calls("ImportVApp") == 2 and counters.ok("HttpNfcLeaseAbort") == 1
    assert await vm_names(connection, "retry-me") == {"retry-me"}
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_transient_upload_failures_are_retried_within_the_job(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: upload-retry\n")
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
        nfc={"times": 2, "status": 503, "after_bytes": 10}))
    runner = await run_plan(connection, plan, RunSettings(
        concurrency=1, job_retries=0, upload_attempts=3, upload_initial_wait=0.01))
    (result,) = runner.results
    assert (result.status, result.attempts, result.upload_retries) == (JobStatus.IMPORTED, 1, 2)
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.nfc_requests == {"POST": 3}
    # Bytes of the failed attempts are taken back: the report counts the file once.
    packages, _ = await open_sources(plan)
    assert result.bytes == sum(m.size for n, m in packages[plan.jobs[0].source].members.items()
                               if n.endswith(".vmdk"))
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_client_errors_are_never_retried(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: forbidden\n")
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
        nfc={"times": 5, "status": 403, "after_bytes": 0}))
    runner = await run_plan(connection, plan, RunSettings(concurrency=1, job_retries=2,
                                                          upload_initial_wait=0.01))
    (result,) = runner.results
    assert (result.status, result.attempts) == (JobStatus.FAILED, 1)
    assert result.error and "rejected: HTTP 403" in result.error
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.nfc_requests == {"POST": 1} and counters.ok("HttpNfcLeaseAbort") == 1
    assert await vm_names(connection, "forbidden") == set()
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_worker_keeps_its_upload_connection_from_one_import_to_the_next(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    # The body ends as its last chunk is written, not a reader-thread hop later:
    # had vCenter's answer come first, aiohttp would have closed the connection,
    # and every other upload paid a new TLS handshake.
    plan = await make_batch(tmp_path, '  - name: "keepalive-{index}"\n    count: 8\n')
    runner = await run_plan(connection, plan, RunSettings(concurrency=1))
    assert {r.status for r in runner.results} == {JobStatus.IMPORTED}
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.nfc_requests == {"POST": 8}
    assert counters.nfc_connections == 1
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_session_expiry_is_recovered_by_logging_in_again(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, '  - name: "relog-{index}"\n    count: 3\n')
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
        soap=[{"method": "CreateImportSpec", "fault": "NotAuthenticated", "nth": 2}]))
    # One CreateImportSpec per VM, so the second job's is the one that finds
    # its session gone.
    runner = await run_plan(connection, plan, RunSettings(concurrency=1, spec_per_vm=True))
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 3
    assert runner.relogins == 1 and all(r.attempts == 1 for r in runner.results)
    # The injected NotAuthenticated ended that session on the server, as vCenter's does:
    # nothing is left logged in, and every session we opened was logged out or expired.
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert (counters.sessions_expired, counters.sessions_live) == (1, 0)
    assert counters.ok("Login") == counters.ok("Logout") + 1
    assert runner.sessions_opened == runner.sessions_closed


async def test_skip_resumes_a_half_finished_batch(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, '  - name: "resume-{index}"\n    count: 6\n')
    half = BatchPlan(plan.path, plan.connection, plan.jobs[:3])  # a run that stopped half-way
    await run_plan(connection, half, RunSettings(concurrency=2))

    runner = await run_plan(connection, plan, RunSettings(concurrency=2,
                                                          on_conflict=OnConflict.SKIP))
    assert [r.status for r in runner.results] == [JobStatus.SKIPPED] * 3 + \
        [JobStatus.IMPORTED] * 3
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.calls("ImportVApp") == 6  # 3 + 3: nothing imported twice
    assert await vm_names(connection, "resume-") == {f"resume-{i}" for i in range(1, 7)}
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_name_conflict_fails_the_job_without_retrying(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: taken\n")
    await run_plan(connection, plan, RunSettings(concurrency=1))
    runner = await run_plan(connection, plan, RunSettings(concurrency=1, job_retries=3))
    (result,) = runner.results
    assert (result.status, result.attempts, result.input_error) == (JobStatus.FAILED, 1, True)
    assert re.fullmatch(r"a VM named 'taken' already exists in /DC0/vm \(vm-\d+\); "
                        r"use --on-conflict skip or replace", result.error or "")
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_replace_destroys_the_old_vm_first(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: replaced\n")
    first = await run_plan(connection, plan, RunSettings(concurrency=1))
    second = await run_plan(connection, plan, RunSettings(concurrency=1,
                                                          on_conflict=OnConflict.REPLACE))
    assert second.results[0].status is JobStatus.IMPORTED
    assert second.results[0].vm != first.results[0].vm
    vms = [vm for vm in await list_vms(connection) if vm.name == "replaced"]
    assert [vm.moid for vm in vms] == [second.results[0].vm]
    await anyio.to_thread.run_sync(check_invariants, vcsim, second)


async def test_a_stale_folder_reference_refreshes_the_cache_and_retries_once(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: stale-mor\n",
                            extra_defaults="  folder: /DC0/vm/moving\n")
    packages, _ = await open_sources(plan)
    runner = BatchRunner(connection, plan.jobs, packages, RunSettings(concurrency=1))
    async with VCenterSession(connection) as session:
        vm_folder = (await runner.inventory.get(session)).find("vm-folder", "/DC0/vm").ref
        old = await session.invoke(vm_folder, "CreateFolder", name="moving")
        snapshot = await runner.inventory.refresh(session, seen=runner.inventory.snapshot)
        assert snapshot.find("vm-folder", "/DC0/vm/moving").moid == old._moId
        # Someone deletes and re-creates the folder: same path, new MOR.
        await session.wait_for_task(await session.invoke(old, "Destroy"))
        new = await session.invoke(vm_folder, "CreateFolder", name="moving")
    await runner.run()
    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED and result.attempts == 1
    assert runner.inventory.refreshes == 3  # first load, the refresh above, the stale-MOR one
    assert runner.inventory.snapshot is not None
    assert runner.inventory.snapshot.find("vm-folder", "/DC0/vm/moving").moid == new._moId
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_broken_source_fails_only_its_jobs(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    await anyio.to_thread.run_sync(lambda: build_package(tmp_path, "short",
                                                        declared_size_delta=100))
    plan = await make_batch(tmp_path, '  - name: "good-{index}"\n    count: 2\n'
                           "  - name: bad-1\n    source: ./short.ova\n"
                           "  - name: missing-1\n    source: ./nope.ova\n")
    runner = await run_plan(connection, plan, RunSettings(concurrency=2))
    by_name = {r.name: r for r in runner.results}
    assert by_name["good-1"].status is by_name["good-2"].status is JobStatus.IMPORTED
    assert by_name["bad-1"].status is JobStatus.FAILED and by_name["bad-1"].input_error
    assert "shorter than its ovf:size" in (by_name["bad-1"].error or "")
    assert "no such file or directory" in (by_name["missing-1"].error or "").lower()
    assert await vm_names(connection, "bad-") == set() == await vm_names(connection, "missing-")
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


@pytest.mark.parametrize(("cap", "most"), [(None, 6), (2, 2)], ids=["uncapped", "capped"])
async def test_per_datastore_cap_bounds_uploads_in_flight(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path, cap: int | None, most: int
) -> None:
    plan = await make_batch(tmp_path, f'  - name: "cap{cap}-{{index}}"\n    count: 6\n')
    # Slow uploads (each ~0.25 s) so that six workers would overlap if allowed.
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(nfc={"throttle_bps": 2**20}))
    runner = await run_plan(connection, plan, RunSettings(concurrency=6, max_per_datastore=cap))
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 6
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    if cap is None:
        assert counters.nfc_max_in_flight > 2  # the test can tell the difference
    else:
        assert counters.nfc_max_in_flight == most
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_job_timeout_mid_upload_aborts_the_lease(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: too-slow\n")
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(nfc={"throttle_bps": 1024}))
    runner = await run_plan(connection, plan, RunSettings(concurrency=1, job_timeout=1.0))
    (result,) = runner.results
    assert result.status is JobStatus.FAILED
    assert (result.error or "").startswith("job timeout: not finished after 1 s")
    assert 0 < result.bytes and "abort" in result.timings
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.ok("HttpNfcLeaseAbort") == 1
    assert await vm_names(connection, "too-slow") == set()
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


def run_cli(vcsim: Vcsim, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password)
    return subprocess.Popen([sys.executable, "-m", "asyncovf", "run", *args,
                             "--ca-file", str(vcsim.ca_file)], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **popen)  # type: ignore[call-overload]


def test_sigint_mid_upload_aborts_every_lease_and_exits_130(vcsim: Vcsim, tmp_path: Path) -> None:
    plan = batch(tmp_path, '  - name: "sigint-{index}"\n    count: 8\n',
                 disk=DiskSpec(64, 8 * 2**20))
    report = tmp_path / "report.json"
    # Throttled uploads keep four imports mid-upload when the signal arrives.
    process = run_cli(vcsim, plan.path, "--concurrency", "4", "--bandwidth", "4M",
                      "--report", str(report), "--progress", "plain")
    deadline = time.monotonic() + 30
    while vcsim.counters().nfc_bytes < 2**20:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted (SIGINT)" in stderr

    data = json.loads(report.read_text())
    assert data["run"]["interrupted"] == "SIGINT"
    statuses = {job["name"]: job["status"] for job in data["jobs"]}
    assert set(statuses.values()) <= {"aborted", "imported"}
    assert list(statuses.values()).count("aborted") >= 4
    counters = vcsim.counters()
    assert counters.ok("HttpNfcLeaseAbort") >= 4
    check_invariants(vcsim)
    imported = {name for name, status in statuses.items() if status == "imported"}
    connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                    password=vcsim.password, ca_file=str(vcsim.ca_file))
    assert anyio.run(vm_names, connection, "sigint-") == imported


def test_cli_run_writes_the_report_and_the_summary(vcsim: Vcsim, tmp_path: Path) -> None:
    plan = batch(tmp_path, '  - name: "cli-{index}"\n    count: 5\n')
    report = tmp_path / "out" / "report.json"
    process = run_cli(vcsim, plan.path, "--concurrency", "3", "--report", str(report))
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "5 jobs: 5 imported, 0 skipped, 0 failed, 0 aborted" in stdout
    data = json.loads(report.read_text())
    assert [job["status"] for job in data["jobs"]] == ["imported"] * 5
    job = data["jobs"][0]
    assert set(job) >= {"name", "status", "vm", "attempts", "bytes", "timings", "error"}
    assert set(job["timings"]) >= {"spec", "import", "lease_wait", "upload", "complete"}
    totals = data["totals"]
    assert totals["imported"] == 5 and totals["sessions_opened"] == 3
    assert totals["soap_calls"]["ImportVApp"] == 5
    check_invariants(vcsim)


def test_cli_dry_run_creates_nothing(vcsim: Vcsim, tmp_path: Path) -> None:
    plan = batch(tmp_path, '  - name: "dry-{index}"\n    count: 3\n'
                           "  - name: dry-bad\n    datastore: NoSuchDS\n")
    process = run_cli(vcsim, plan.path, "--dry-run")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert "ok    dry-1 … dry-3 (3 VMs)" in stdout
    assert "error: datastore 'NoSuchDS' not found" in stdout
    counters = vcsim.counters()
    assert counters.calls("CreateImportSpec") == 1 and counters.calls("ImportVApp") == 0
    check_invariants(vcsim)


def test_cli_rejects_a_bad_batch_file_with_its_location(vcsim: Vcsim, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("vms:\n  - name: x\n    source: a.ova\n    colour: blue\n")
    process = run_cli(vcsim, str(path))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip() == (f"asyncovf: error: {path}:4: vms[0].colour: unknown key; "
                              f"expected one of: {', '.join(sorted(JOB_KEYS))}")
    assert vcsim.counters().calls("Login") == 0
