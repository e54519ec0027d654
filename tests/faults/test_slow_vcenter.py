"""A slow vCenter: every SOAP answer 200 ms late, and a 50-VM batch still completes."""

from __future__ import annotations

import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from tests.faults.support import FaultRun, report_jobs, run_batch

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]


async def test_every_method_200_ms_late_still_imports_a_50_vm_batch(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(soap=[{"method": "*", "delay_ms": 200}])
    runner = await run_batch(fault_run, count=50, settings=RunSettings(concurrency=16))

    jobs = report_jobs(runner)
    assert [job["status"] for job in jobs.values()] == ["imported"] * 50
    assert {(job["attempts"], job["upload_retries"], job["error"]) for job in jobs.values()} == \
        {(1, 0, None)}
    assert all(job["timings"]["import"] >= 0.2 for job in jobs.values())  # it was slow
    assert runner.soap_retries == 0 and runner.relogins == 0
    assert runner.sessions_opened == 16 == runner.sessions_closed
    counters = await fault_run.counters()
    # Every call was late: ImportVApp, a lease read, Complete and the finished mark
    # per VM, the group's CreateImportSpec, and each worker's RetrieveServiceContent,
    # Login, Logout and read of its mark tasks.
    delayed = sum(counters.delayed(method) for method in counters.methods)
    assert delayed == counters.total_calls() >= 50 * 4 + 1 + 16 * 4
    assert counters.ok("HttpNfcLeaseComplete") == 50 and counters.ok("HttpNfcLeaseAbort") == 0
    assert all(r.status is JobStatus.IMPORTED for r in runner.results)
    await fault_run.check_invariants(runner)
