"""What vCenter does on its own, and the tool living with it.

The launcher, like vCenter, deletes the VM of an import whose lease was
aborted or timed out, times out a lease that got no progress, refuses Login
past its session cap with HTTP 503, and ends idle sessions. These tests turn
each on or off explicitly and move the launcher's clock instead of waiting.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.vsphere.session import VCenterSession
from tests.faults.support import FaultRun, import_cli, job_name, report_jobs, run_batch
from tests.integration.inspect import list_vms

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

#: Every upload refused after its first bytes (a 4xx: not retried), so every job fails.
REFUSED_UPLOAD = {"status": 403, "after_bytes": 1000}
FAIL_ONCE = RunSettings(concurrency=2, job_retries=0, upload_attempts=1)


async def names_left(run: FaultRun) -> set[str]:
    return {vm.name for vm in await list_vms(run.connection) if vm.name.startswith(run.prefix)}


async def test_a_vm_vcenter_removed_before_the_tool_is_no_cleanup_error(
    fault_run: FaultRun,
) -> None:
    await fault_run.behave(delete_before_answer=True)
    await fault_run.set_faults(nfc=REFUSED_UPLOAD)
    runner = await run_batch(fault_run, count=2, settings=FAIL_ONCE)
    assert [r.status for r in runner.results] == [JobStatus.FAILED] * 2
    assert all("HTTP 403" in (r.error or "") for r in runner.results), runner.results
    jobs = report_jobs(runner)
    assert [job["cleanup_errors"] for job in jobs.values()] == [[], []]
    counters = await fault_run.settled()
    assert counters.vms_deleted_by_server == 2 and counters.vms_already_gone == 0
    assert counters.calls("Destroy_Task") == 0  # nothing left for the tool to remove
    assert await names_left(fault_run) == set()
    await fault_run.check_invariants(runner)


async def test_import_says_nothing_of_a_removal_vcenter_made(fault_run: FaultRun,
                                                            tmp_path: Path) -> None:
    await fault_run.behave(delete_before_answer=True)
    await fault_run.set_faults(nfc=REFUSED_UPLOAD)
    report = tmp_path / "report.json"
    status, _, stderr = await import_cli(fault_run, "--name", job_name(fault_run, 0),
                                         "--report", str(report))
    assert status == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 403" in lines[0], stderr
    assert "remov" not in stderr and "cleanup" not in stderr
    (job,) = json.loads(report.read_text())["jobs"]
    assert job["cleanup_errors"] == []
    counters = await fault_run.settled()
    assert counters.vms_deleted_by_server == 1
    await fault_run.check_invariants(imported=set())


async def test_vcenter_racing_the_tools_removal_leaves_no_error_and_no_vm(
    fault_run: FaultRun,
) -> None:
    # vCenter's deletion starts as the Abort is answered, and the tool's removal
    # follows at once: either may win, for each VM; neither outcome is an error.
    await fault_run.set_faults(nfc=REFUSED_UPLOAD)
    runner = await run_batch(fault_run, count=6, settings=RunSettings(
        concurrency=3, job_retries=0, upload_attempts=1))
    assert [r.status for r in runner.results] == [JobStatus.FAILED] * 6
    assert [job["cleanup_errors"] for job in report_jobs(runner).values()] == [[]] * 6
    counters = await fault_run.settled()
    assert counters.vms_deleted_by_server + counters.vms_already_gone == 6
    assert await names_left(fault_run) == set()
    await fault_run.check_invariants(runner)


async def test_the_tool_removes_a_half_imported_vm_itself(fault_run: FaultRun) -> None:
    # With vCenter's own deletion off, only the tool's removal can empty the folder.
    await fault_run.keep_aborted_vms()
    await fault_run.set_faults(nfc=REFUSED_UPLOAD)
    runner = await run_batch(fault_run, count=2, settings=FAIL_ONCE)
    assert [r.status for r in runner.results] == [JobStatus.FAILED] * 2
    counters = await fault_run.settled()
    assert counters.vms_deleted_by_server == 0
    assert counters.ok("Destroy_Task") == 2
    assert await names_left(fault_run) == set()
    await fault_run.check_invariants(runner)


async def test_a_lease_that_times_out_on_vcenters_clock_fails_the_job_cleanly(
    fault_run: FaultRun,
) -> None:
    # leaseTimeout 5 s: the guard reports progress every second. The upload
    # stalls; the launcher's clock then jumps 10 s, past the timeout since the
    # last report, and vCenter times the lease out and deletes its VM.
    await fault_run.behave(lease_timeout_seconds=5)
    await fault_run.set_faults(nfc={"stall_seconds": 120})

    async def jump_once_uploading() -> None:
        await fault_run.wait_until(lambda c: sum(c.nfc_requests.values()) >= 1
                                   and c.ok("HttpNfcLeaseProgress") >= 1)
        await anyio.to_thread.run_sync(fault_run.vcsim.advance_clock, 10.0)

    async with anyio.create_task_group() as group:
        group.start_soon(jump_once_uploading)
        runner = await run_batch(fault_run, count=1, settings=RunSettings(
            concurrency=1, job_retries=0, upload_attempts=1))
    (result,) = runner.results
    assert (result.status, result.error_kind) == (JobStatus.FAILED, "lease: Timedout"), result
    assert "no progress for 5.0 s" in (result.error or "")
    assert report_jobs(runner)[result.name]["cleanup_errors"] == []
    counters = await fault_run.settled()
    assert counters.leases_timed_out == 1
    assert counters.vms_deleted_by_server + counters.vms_already_gone == 1
    assert await names_left(fault_run) == set()
    await fault_run.check_invariants(runner)


async def test_an_idle_session_that_vcenter_ended_is_logged_in_again(
    fault_run: FaultRun,
) -> None:
    async with VCenterSession(fault_run.connection) as session:
        before = await session.retrieve(session.content.rootFolder, ["name"])
        await anyio.to_thread.run_sync(fault_run.vcsim.advance_clock, 1801.0)
        counters = await fault_run.counters()
        assert counters.sessions_idle_expired == 1  # ended by vCenter, not by the tool
        after = await session.retrieve(session.content.rootFolder, ["name"])
    assert after == before
    counters = await fault_run.counters()
    assert counters.ok("Login") == 2 and counters.faults("RetrievePropertiesEx") == 1
    assert counters.sessions_live == fault_run.sessions_live_before


async def test_a_login_past_the_session_cap_leaves_the_jobs_to_the_workers_that_got_in(
    fault_run: FaultRun,
) -> None:
    cap = fault_run.sessions_live_before + 1
    await fault_run.behave(session_cap=cap)
    runner = await run_batch(fault_run, count=4, settings=RunSettings(concurrency=2))
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 4
    counters = await fault_run.counters()
    assert counters.logins_refused == 1 and counters.sessions_peak == cap
    await fault_run.check_invariants(runner)


async def test_with_no_session_to_be_had_every_job_says_why(fault_run: FaultRun) -> None:
    async with VCenterSession(fault_run.connection):  # holds the one session allowed
        await fault_run.behave(session_cap=fault_run.sessions_live_before + 1)
        runner = await run_batch(fault_run, count=3, settings=RunSettings(concurrency=2))
    assert [r.status for r in runner.results] == [JobStatus.FAILED] * 3
    error = runner.results[0].error or ""
    assert error.startswith("not started: worker "), error  # whichever tried first
    assert "worker 1: Login to " in error and "worker 2: Login to " in error
    assert "HTTP 503 Service Unavailable (too many sessions (1 live, the limit)); vCenter is " \
        "refusing new work: overloaded, or at its session limit" in error
    assert "b'" not in error
    counters = await fault_run.counters()
    assert counters.logins_refused == 2 and counters.ok("ImportVApp") == 0
    await fault_run.check_invariants(runner)
