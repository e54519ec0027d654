"""Lease and session faults real vCenter has and vcsim lacks, added by the harness.

Each test asserts the job outcomes and the invariants: sessions opened = closed
(expired ones counted as closed by the server), every lease completed or
aborted, no lease open, every VM in inventory belongs to an imported job.
"""

from __future__ import annotations

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from tests.faults.support import FaultRun, job_name, run_batch

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]


async def test_a_lease_initializing_for_a_while_is_waited_for(fault_run: FaultRun) -> None:
    target = job_name(fault_run, 1)
    await fault_run.set_faults(lease={"vm": target, "initializing_reads": 6})
    runner = await run_batch(fault_run, count=3)
    assert [(r.status, r.attempts, r.error) for r in runner.results] == \
        [(JobStatus.IMPORTED, 1, None)] * 3
    counters = await fault_run.counters()
    # Six reads answered 'initializing', then one 'ready', for the target's lease;
    # one read each for the others'. The poll backs off from 20 ms: the target's
    # lease wait is the sum of six sleeps, the others' none.
    # + the inventory, + one read per worker of the finished marks' tasks it sent.
    workers = len({r.worker for r in runner.results})
    assert counters.calls("RetrievePropertiesEx") == 7 + 1 + 1 + 1 + workers
    assert counters.calls("ReconfigVM_Task") == 3
    waits = {r.name: r.timings["lease_wait"] for r in runner.results}
    assert waits[target] >= 0.02 + 0.04 + 0.08 + 0.16 + 0.32 + 0.64
    assert all(wait < 0.5 for name, wait in waits.items() if name != target), waits
    await fault_run.check_invariants(runner)


async def test_a_lease_that_gets_no_progress_expires_and_the_job_is_retried(
    fault_run: FaultRun,
) -> None:
    # The target's first lease expires after 1 s without progress, and every
    # progress report for it fails: the keep-alive keeps trying (it never stops
    # at the first error), the lease goes to error as vCenter's does, the guard
    # aborts it, and the job's second attempt imports.
    target = job_name(fault_run, 1)
    await fault_run.set_faults(
        lease={"vm": target, "times": 1, "expire_after_seconds": 1.0},
        soap=[{"method": "HttpNfcLeaseProgress", "vm": target, "fault": "SystemError"}],
        nfc=[{"vm": target, "times": 1, "throttle_bps": 60_000}])
    runner = await run_batch(fault_run, count=3, settings=RunSettings(
        concurrency=3, job_retries=1, upload_attempts=1))
    by_name = {r.name: r for r in runner.results}
    assert (by_name[target].status, by_name[target].attempts, by_name[target].error) == \
        (JobStatus.IMPORTED, 2, None)
    assert [(r.status, r.attempts) for n, r in by_name.items() if n != target] == \
        [(JobStatus.IMPORTED, 1)] * 2
    phases = [phase for attempt, phase, _ in by_name[target].phases if attempt == 1]
    assert phases[-2:] == ["abort", "failed"]
    counters = await fault_run.counters()
    assert counters.leases_in_error == 1
    assert counters.faults("HttpNfcLeaseProgress") >= 2  # retried after the first failure
    assert counters.ok("HttpNfcLeaseAbort") == 1 and counters.ok("HttpNfcLeaseComplete") == 3
    await fault_run.check_invariants(runner)


async def test_a_lease_that_expires_is_reported_with_its_fault_when_retries_run_out(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(
        lease={"expire_after_seconds": 1.0},
        soap=[{"method": "HttpNfcLeaseProgress", "fault": "SystemError"}],
        nfc=[{"throttle_bps": 60_000}])
    runner = await run_batch(fault_run, count=1, settings=RunSettings(
        concurrency=1, job_retries=0, upload_attempts=1))
    (result,) = runner.results
    assert (result.status, result.attempts, result.error_kind) == \
        (JobStatus.FAILED, 1, "lease: Timedout")
    assert (result.error or "").startswith(f"lease for '{result.name}' went to error"), \
        result.error
    assert "Timedout: lease timed out: no progress for 1.0 s" in (result.error or "")
    await fault_run.check_invariants(runner)


async def test_soap_faults_drawn_at_random_are_retried_as_whole_jobs(
    fault_run: FaultRun,
) -> None:
    # 40 % of CreateImportSpec calls answer InvalidState (seeded): every fault
    # costs exactly one job attempt, and every job ends imported. Each VM asks
    # for its own spec, so each job draws its own faults.
    await fault_run.set_faults(seed=3, soap=[{"method": "CreateImportSpec",
                                              "fault": "InvalidState", "probability": 0.4}])
    runner = await run_batch(fault_run, count=8, settings=RunSettings(
        concurrency=2, job_retries=10, spec_per_vm=True))
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 8
    counters = await fault_run.counters()
    injected = counters.faults("CreateImportSpec")
    assert injected > 0
    assert sum(r.attempts - 1 for r in runner.results) == injected
    assert counters.ok("CreateImportSpec") == 8
    assert counters.calls("ImportVApp") == 8  # a refused spec never reaches ImportVApp
    await fault_run.check_invariants(runner)


async def test_a_lease_error_mid_upload_is_recovered_by_a_job_retry(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(lease={"times": 1, "error_after_bytes": 100_000,
                                      "error_fault": "FileFault"})
    runner = await run_batch(fault_run, count=3, settings=RunSettings(
        concurrency=1, job_retries=1, upload_attempts=1))
    first = runner.results[0]
    assert (first.status, first.attempts) == (JobStatus.IMPORTED, 2)
    assert [r.attempts for r in runner.results[1:]] == [1, 1]
    counters = await fault_run.counters()
    assert counters.ok("HttpNfcLeaseAbort") == 1 and counters.ok("HttpNfcLeaseComplete") == 3
    await fault_run.check_invariants(runner)


async def test_a_lease_error_is_reported_with_the_servers_fault_when_retries_run_out(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(lease={"times": 2, "error_after_bytes": 100_000,
                                      "error_fault": "FileFault"})
    runner = await run_batch(fault_run, count=1, settings=RunSettings(
        concurrency=1, job_retries=1, upload_attempts=1))
    (result,) = runner.results
    assert (result.status, result.attempts) == (JobStatus.FAILED, 2)
    assert (result.error or "").startswith(
        f"lease for '{result.name}' went to error (upload of appliance-disk1.vmdk rejected: "
        "HTTP 500 ): FileFault: injected FileFault after 100000 bytes")
    assert result.error_kind == "lease: FileFault"
    await fault_run.check_invariants(runner)


async def test_progress_keeps_a_slow_upload_alive_past_the_lease_timeout(
    fault_run: FaultRun,
) -> None:
    # The lease expires after 1 s without progress (leaseTimeout=1); the upload
    # takes about 2.5 s. Only a working keep-alive lets it finish.
    await fault_run.set_faults(lease={"times": 1, "expire_after_seconds": 1.0},
                               nfc={"times": 1, "throttle_bps": 120_000})
    runner = await run_batch(fault_run, count=1)
    (result,) = runner.results
    assert (result.status, result.attempts, result.error) == (JobStatus.IMPORTED, 1, None)
    counters = await fault_run.counters()
    assert counters.ok("HttpNfcLeaseProgress") >= 5
    await fault_run.check_invariants(runner)


async def test_session_expiry_mid_batch_is_recovered_by_logging_in_again(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(nfc={"throttle_bps": 2_000_000})  # keep the batch running

    async def expire_soon() -> None:
        # Once every worker is logged in and uploading (the simulator says so), not
        # after a guess at how long that takes.
        await fault_run.wait_until(lambda c: c.sessions_live == fault_run.sessions_live_before
                                   + 3 and c.nfc_bytes > 0)
        assert await anyio.to_thread.run_sync(fault_run.vcsim.expire_sessions) == 3

    async with anyio.create_task_group() as group:
        group.start_soon(expire_soon)
        runner = await run_batch(fault_run, count=9, settings=RunSettings(concurrency=3))
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 9
    assert runner.relogins == 3
    # Imports in flight lost their leases with their sessions: retried as whole jobs.
    interrupted = [r for r in runner.results if r.attempts == 2]
    assert len(interrupted) <= 3
    counters = await fault_run.counters()
    assert counters.sessions_expired == 3
    await fault_run.check_invariants(runner)
