"""Faults that hit one job of a batch: NFC uploads, lost or late SOAP answers, SOAP faults.

The harness targets one VM by name (its lease's uploads, the calls that name it
or its lease) or the Nth call of a method. Each test asserts what the report
says about the faulted job *and* about the others (imported at the first
attempt, no retries: unaffected), that the fault really was injected (harness
counters), and the invariants: Login = Logout, ImportVApp = Complete + Abort,
no lease open, only imported jobs' VMs in the inventory.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from asyncovf.engine.options import RunSettings
from asyncovf.engine.pool import BatchRunner
from tests.faults.support import FaultRun, job_name, report_jobs, run_batch

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

COUNT = 5
TARGET = 2  # the faulted job's index


def fast(**overrides: Any) -> RunSettings:
    """Run settings with short backoffs, so retries cost milliseconds."""
    values: dict[str, Any] = {"concurrency": 3, "upload_initial_wait": 0.01,
                              "job_retries": 1}
    values.update(overrides)
    return RunSettings(**values)


def split(run: FaultRun, runner: BatchRunner) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The faulted job's report record, and the others'."""
    jobs = report_jobs(runner)
    assert len(jobs) == COUNT
    target = jobs.pop(job_name(run, TARGET))
    return target, list(jobs.values())


def assert_unaffected(others: list[dict[str, Any]]) -> None:
    for job in others:
        assert (job["status"], job["attempts"], job["upload_retries"], job["error"]) == \
            ("imported", 1, 0, None), job


# -- NFC uploads -------------------------------------------------------------------------

NFC_FAULTS = {
    "http-500-after-bytes": ({"status": 500, "after_bytes": 50_000}, "status"),
    "reset-after-bytes": ({"reset": True, "after_bytes": 50_000}, "reset"),
    "reset-before-any-byte": ({"reset": True, "after_bytes": 0}, "reset"),
    "stall-past-the-deadline": ({"stall_seconds": 2.0}, "stall"),
}


@pytest.mark.parametrize("fault", NFC_FAULTS, ids=list(NFC_FAULTS))
async def test_an_nfc_failure_on_one_job_is_recovered_by_an_upload_retry(
    fault_run: FaultRun, fault: str
) -> None:
    rule, kind = NFC_FAULTS[fault]
    target_name = job_name(fault_run, TARGET)
    await fault_run.set_faults(nfc={"vm": target_name, "times": 1, **rule})
    # The stall deadline (no byte moving for 0.5 s) is what ends a stalled upload.
    runner = await run_batch(fault_run, count=COUNT, settings=fast(stall_timeout=0.5))

    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["upload_retries"]) == \
        ("imported", 1, 1), target
    assert target["bytes"] == others[0]["bytes"] > 0  # the failed attempt's bytes taken back
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.nfc_faults == {kind: 1}
    assert counters.nfc_requests == {"POST": COUNT + 1}
    assert counters.ok("ImportVApp") == COUNT and counters.ok("HttpNfcLeaseAbort") == 0
    await fault_run.check_invariants(runner)


async def test_a_stall_shorter_than_the_deadline_is_waited_out(fault_run: FaultRun) -> None:
    await fault_run.set_faults(nfc={"vm": job_name(fault_run, TARGET), "times": 1,
                                    "stall_seconds": 0.5})
    runner = await run_batch(fault_run, count=COUNT, settings=fast(stall_timeout=10.0))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["upload_retries"]) == \
        ("imported", 1, 0)
    assert target["timings"]["upload"] >= 0.5  # it did wait for the stalled server
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.nfc_faults == {"stall": 1} and counters.nfc_requests == {"POST": COUNT}
    await fault_run.check_invariants(runner)


async def test_a_connection_reset_with_no_upload_retries_left_retries_the_job(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(nfc={"vm": job_name(fault_run, TARGET), "times": 1,
                                    "reset": True, "after_bytes": 50_000})
    runner = await run_batch(fault_run, count=COUNT, settings=fast(upload_attempts=1))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["upload_retries"]) == \
        ("imported", 2, 0)
    assert [p["phase"] for p in target["phases"] if p["attempt"] == 1][-2:] == \
        ["upload", "abort"]
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.ok("ImportVApp") == COUNT + 1
    assert counters.ok("HttpNfcLeaseAbort") == 1 and counters.ok("HttpNfcLeaseComplete") == COUNT
    await fault_run.check_invariants(runner)


@pytest.mark.parametrize("failures", [1, 2, 3])
async def test_the_first_k_upload_attempts_fail_then_the_upload_succeeds(
    fault_run: FaultRun, failures: int
) -> None:
    await fault_run.set_faults(nfc={"vm": job_name(fault_run, TARGET), "times": failures,
                                    "status": 503, "after_bytes": 1000})
    runner = await run_batch(fault_run, count=COUNT, settings=fast(upload_attempts=4))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["upload_retries"]) == \
        ("imported", 1, failures)
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.nfc_faults == {"status": failures}
    assert counters.nfc_requests == {"POST": COUNT + failures}
    assert counters.ok("HttpNfcLeaseAbort") == 0
    await fault_run.check_invariants(runner)


async def test_upload_failures_beyond_the_attempts_retry_the_whole_job(
    fault_run: FaultRun,
) -> None:
    # Four upload attempts fail: three upload retries, then the job starts again
    # with a new lease, whose upload succeeds at once.
    await fault_run.set_faults(nfc={"vm": job_name(fault_run, TARGET), "times": 4,
                                    "status": 503, "after_bytes": 1000})
    runner = await run_batch(fault_run, count=COUNT, settings=fast(upload_attempts=4))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["upload_retries"]) == \
        ("imported", 2, 3)
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.nfc_requests == {"POST": COUNT + 4}
    assert counters.ok("HttpNfcLeaseAbort") == 1
    await fault_run.check_invariants(runner)


async def test_the_first_k_failures_exhaust_every_retry_and_fail_only_that_job(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(nfc={"vm": job_name(fault_run, TARGET), "times": 0,
                                    "status": 503, "after_bytes": 1000})
    runner = await run_batch(fault_run, count=COUNT, settings=fast(upload_attempts=2,
                                                                   job_retries=1))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["upload_retries"]) == \
        ("failed", 2, 2)
    assert target["error"].startswith("upload of appliance-disk1.vmdk rejected: HTTP 503")
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.nfc_faults == {"status": 4}
    assert counters.ok("HttpNfcLeaseAbort") == 2
    await fault_run.check_invariants(runner)


async def test_a_throttled_upload_slows_only_its_own_job(fault_run: FaultRun) -> None:
    target_name = job_name(fault_run, TARGET)
    # ~350 kB at 200 kB/s: the target uploads for well over a second, while the
    # other workers import the rest of the batch.
    await fault_run.set_faults(nfc={"vm": target_name, "throttle_bps": 200_000},
                               lease={"vm": target_name, "expire_after_seconds": 1.0})
    runner = await run_batch(fault_run, count=COUNT, settings=fast(concurrency=3))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["upload_retries"]) == \
        ("imported", 1, 0)
    assert target["bytes"] == others[0]["bytes"]
    assert_unaffected(others)
    # Nobody waited for the slow one: every other job ended before it.
    assert max(job["end"] for job in others) < target["end"]
    counters = await fault_run.counters()
    assert counters.nfc_faults == {"throttle": 1}
    # The lease expires after 1 s without progress: only the keep-alive saved it.
    assert counters.ok("HttpNfcLeaseProgress") >= 1
    await fault_run.check_invariants(runner)


# -- SOAP: lost answers --------------------------------------------------------------------

# (method, rule, expected attempts of the target, SOAP retries in the run, ok
# ImportVApp, ok Abort, ok Complete) — the calls that match the rule are the
# target's only (its name, or its lease).
DROPS: dict[str, tuple[str, dict[str, Any], int, int, int, int, int]] = {
    # Safe to repeat: the session sends the call again; the job never notices.
    # (A job asks for its name only with skip or replace: ImportVApp is the check.)
    "CreateImportSpec": ("CreateImportSpec", {"drop": True}, 1, 1, COUNT, 0, COUNT),
    "CreateImportSpec-after-the-call": ("CreateImportSpec", {"drop_after_call": True},
                                        1, 1, COUNT, 0, COUNT),
    "lease-read": ("RetrievePropertiesEx", {"drop": True}, 1, 1, COUNT, 0, COUNT),
    # Not safe to repeat: the attempt fails; the job is retried from scratch.
    "ImportVApp-before-the-call": ("ImportVApp", {"drop": True}, 2, 0, COUNT, 0, COUNT),
    "Complete-before-the-call": ("HttpNfcLeaseComplete", {"drop": True},
                                 2, 0, COUNT + 1, 1, COUNT),
    # vCenter completed the lease but the answer was lost: the guard's Abort
    # finds the lease gone, the VM it cannot vouch for is removed, and the job
    # imports again. ImportVApp = Complete + Abort still: two leases, two Completes.
    "Complete-after-the-call": ("HttpNfcLeaseComplete", {"drop_after_call": True},
                                2, 0, COUNT + 1, 0, COUNT + 1),
}


@pytest.mark.parametrize("case", DROPS, ids=list(DROPS))
async def test_a_dropped_soap_answer_on_one_job(fault_run: FaultRun, case: str) -> None:
    method, rule, attempts, soap_retries, imports, aborts, completes = DROPS[case]
    await fault_run.set_faults(soap=[{"method": method, "vm": job_name(fault_run, TARGET),
                                      "times": 1, **rule}])
    # A CreateImportSpec of the target's own: one per VM, not one per group.
    runner = await run_batch(fault_run, count=COUNT,
                             settings=fast(spec_per_vm=method == "CreateImportSpec"))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["error"]) == \
        ("imported", attempts, None), target
    assert runner.soap_retries == soap_retries
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.dropped(method) == 1
    assert (counters.ok("ImportVApp"), counters.ok("HttpNfcLeaseAbort"),
            counters.ok("HttpNfcLeaseComplete")) == (imports, aborts, completes)
    await fault_run.check_invariants(runner)


@pytest.mark.parametrize(("rule", "kind", "error"),
                         [({"drop_after_call": True}, "connection", r"ImportVApp call to \S+ "
                           r"failed: Response payload is not completed"),
                          ({"delay_ms": 2500, "delay_after_call": True}, "timeout",
                           r"ImportVApp to \S+ got no answer in 1\.5 s")],
                         ids=["dropped-after-the-call", "answer-later-than-the-call-timeout"])
async def test_a_lost_importvapp_answer_ends_its_lease_with_the_session_and_removes_the_vm(
    fault_run: FaultRun, rule: dict[str, Any], kind: str, error: str
) -> None:
    # vCenter carried ImportVApp out, so a lease and a VM exist that the job never
    # learned. The worker logs out and in again (a lease ends with its session) and
    # removes the VM by name; the job fails and the rest of the batch is untouched.
    fault_run.connection = dataclasses.replace(fault_run.connection, call_timeout=1.5)
    await fault_run.keep_aborted_vms()  # the VM's removal is the tool's to prove
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "vm": job_name(fault_run, TARGET),
                                      "times": 1, **rule}])
    runner = await run_batch(fault_run, count=COUNT, settings=fast(job_retries=0))
    target, others = split(fault_run, runner)
    assert_unaffected(others)
    assert (target["status"], target["attempts"], target["error_kind"]) == \
        ("failed", 1, kind), target
    assert re.match(error, target["error"]), target["error"]
    assert target["cleanup_errors"] == []
    assert runner.sessions_renewed == 1
    counters = await fault_run.settled()
    assert counters.leases_ended_by_logout == 1  # the lease the answer would have named
    assert counters.ok("HttpNfcLeaseAbort") == 0 and counters.ok("Destroy_Task") == 1
    await fault_run.check_invariants(runner)


async def test_a_failed_search_for_the_leftover_vm_is_tried_again(fault_run: FaultRun) -> None:
    # After a lost ImportVApp answer the VM is found by name; the first search
    # (the job's first FindChild: the name is not asked for before ImportVApp) fails.
    target = job_name(fault_run, TARGET)
    await fault_run.keep_aborted_vms()  # the VM's removal is the tool's to prove
    await fault_run.set_faults(soap=[
        {"method": "ImportVApp", "vm": target, "times": 1, "drop_after_call": True},
        {"method": "FindChild", "vm": target, "nth": 1, "fault": "FileFault"}])
    runner = await run_batch(fault_run, count=COUNT, settings=fast(job_retries=0))
    target_job, others = split(fault_run, runner)
    assert_unaffected(others)
    assert (target_job["status"], target_job["cleanup_errors"]) == ("failed", []), target_job
    counters = await fault_run.settled()
    assert counters.faults("FindChild") == 1 and counters.ok("Destroy_Task") == 1
    await fault_run.check_invariants(runner)


# -- SOAP: late answers ----------------------------------------------------------------------

async def test_a_late_answer_within_the_call_timeout_is_waited_for(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "vm": job_name(fault_run, TARGET),
                                      "delay_ms": 800}])
    runner = await run_batch(fault_run, count=COUNT, settings=fast())
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"]) == ("imported", 1)
    assert target["timings"]["import"] >= 0.8
    assert runner.soap_retries == 0
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.delayed("ImportVApp") == 1
    await fault_run.check_invariants(runner)


@pytest.mark.parametrize("method", ["CreateImportSpec", "RetrievePropertiesEx"])
async def test_a_late_answer_past_the_call_timeout_is_asked_again(
    fault_run: FaultRun, method: str
) -> None:
    # Both calls are safe to repeat: the timed-out one is sent again.
    fault_run.connection = dataclasses.replace(fault_run.connection, call_timeout=0.5)
    await fault_run.set_faults(soap=[{"method": method, "vm": job_name(fault_run, TARGET),
                                      "times": 1, "delay_ms": 1500}])
    runner = await run_batch(fault_run, count=COUNT,
                             settings=fast(spec_per_vm=method == "CreateImportSpec"))
    target, others = split(fault_run, runner)
    assert (target["status"], target["attempts"], target["error"]) == ("imported", 1, None)
    assert runner.soap_retries == 1
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.delayed(method) == 1
    await fault_run.check_invariants(runner)


# -- SOAP: faults ----------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["InvalidState", "TaskInProgress", "FileFault"])
@pytest.mark.parametrize("job_retries", [1, 0])
async def test_a_fault_on_the_nth_importvapp(
    fault_run: FaultRun, fault: str, job_retries: int
) -> None:
    # One worker: the Nth ImportVApp is the Nth job's.
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "fault": fault,
                                      "nth": TARGET + 1}])
    runner = await run_batch(fault_run, count=COUNT, settings=fast(concurrency=1,
                                                                   job_retries=job_retries))
    target, others = split(fault_run, runner)
    if job_retries:
        assert (target["status"], target["attempts"], target["error"]) == \
            ("imported", 2, None)
    else:
        assert (target["status"], target["attempts"]) == ("failed", 1)
        assert target["error"] == f"ImportVApp: {fault}: injected {fault}"
        assert target["vm"] is None
    assert_unaffected(others)
    counters = await fault_run.counters()
    assert counters.faults("ImportVApp") == 1
    assert counters.ok("ImportVApp") == COUNT - 1 + job_retries
    assert counters.ok("HttpNfcLeaseAbort") == 0  # the failed call created no lease
    await fault_run.check_invariants(runner)
