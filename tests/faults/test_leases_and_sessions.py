"""Lease and session faults real vCenter has and vcsim lacks, added by the harness.

Each test asserts the job outcomes and the invariants: sessions opened = closed
(expired ones counted as closed by the server), every lease completed or
aborted, no lease open, every VM in inventory belongs to an imported job.
"""

from __future__ import annotations

import anyio
import pytest

from asyncovf.engine.pool import JobStatus, RunSettings
from tests.faults.support import FaultRun, run_batch

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]


async def test_a_lease_initializing_for_a_while_is_waited_for(fault_run: FaultRun) -> None:
    await fault_run.set_faults(lease={"times": 1, "initializing_reads": 4})
    runner = await run_batch(fault_run, count=2)
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 2
    assert runner.results[0].timings["lease_wait"] > 0
    counters = await fault_run.counters()
    # four 'initializing' reads, then 'ready', for the first lease; one read for the other
    assert counters.calls("RetrievePropertiesEx") >= 1 + 5 + 1
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
        await anyio.sleep(0.5)
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
