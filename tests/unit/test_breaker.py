"""The circuit breaker's arithmetic: the error rate of its window, and bursts that pause."""

from __future__ import annotations

from typing import Any

import pytest

from asyncovf.engine.batch import JobResult, JobStatus
from asyncovf.engine.breaker import BURST, CircuitBreaker
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import JobSpec
from asyncovf.vsphere.inventory import PlacementRequest

pytestmark = pytest.mark.anyio


def job(status: JobStatus, *, kind: str | None = None, input_error: bool = False,
        error: str | None = None) -> JobResult:
    spec = JobSpec(index=0, name="vm", source="a.ova", placement=PlacementRequest(),
                   origin="test")
    return JobResult(spec, status=status, error_kind=kind, input_error=input_error,
                     error=error or ("failed" if status is JobStatus.FAILED else None))


def test_it_trips_once_the_full_window_passes_the_rate_and_says_so() -> None:
    breaker = CircuitBreaker(window=4, max_error_rate=0.5)
    for result in (job(JobStatus.FAILED), job(JobStatus.FAILED), job(JobStatus.FAILED)):
        breaker.record(result)
    assert breaker.tripped is None  # three finished: the window is not full yet
    breaker.record(job(JobStatus.IMPORTED))
    assert breaker.tripped == ("3 of the last 4 finished jobs failed (error rate 75%, over "
                               "--max-error-rate 50%)")


def test_only_outcomes_count_as_the_report_counts_them() -> None:
    breaker = CircuitBreaker(window=2, max_error_rate=0.0)
    # Refused for its input, aborted: neither failed nor finished. Skipped: finished.
    for result in (job(JobStatus.FAILED, input_error=True), job(JobStatus.ABORTED),
                   job(JobStatus.SKIPPED), job(JobStatus.IMPORTED)):
        breaker.record(result)
    assert breaker.tripped is None
    breaker.record(job(JobStatus.FAILED))
    assert breaker.tripped is not None and breaker.tripped.startswith("1 of the last 2 ")


def test_off_it_never_trips() -> None:
    breaker = CircuitBreaker(window=1, max_error_rate=None)
    breaker.record(job(JobStatus.FAILED))
    assert breaker.tripped is None


async def test_a_burst_of_transient_failures_pauses_new_work_doubling_until_a_success(
) -> None:
    breaker = CircuitBreaker(window=100, max_error_rate=None, pause_first=0.001)
    transient: list[dict[str, Any]] = [{"kind": "connection"}, {"kind": "timeout"},
                                       {"kind": "connection", "error": "ImportVApp: HTTP 503"}]
    for round_ in range(2):
        for index in range(BURST):
            breaker.record(job(JobStatus.FAILED, **transient[index]))
        assert await breaker.admit()
        assert len(breaker.pauses) == round_ + 1
    assert breaker.pauses == [0.001, 0.002]
    assert await breaker.admit() and len(breaker.pauses) == 2  # the burst is forgotten
    breaker.record(job(JobStatus.IMPORTED))  # a success: the next pause starts over
    for _ in range(BURST):
        breaker.record(job(JobStatus.FAILED, error="ImportVApp: HTTP 503 Service Unavailable"))
    assert await breaker.admit() and breaker.pauses[-1] == 0.001
    # A fault of vCenter's is no blip: it does not pause.
    for _ in range(BURST):
        breaker.record(job(JobStatus.FAILED, kind="InsufficientResourcesFault"))
    assert await breaker.admit() and len(breaker.pauses) == 3


async def test_once_tripped_no_job_is_admitted() -> None:
    breaker = CircuitBreaker(window=1, max_error_rate=0.0)
    assert await breaker.admit()
    breaker.record(job(JobStatus.FAILED))
    assert not await breaker.admit()


@pytest.mark.parametrize(("values", "message"), [
    ({"error_window": 0}, "error_window must be at least 1 job, not 0"),
    ({"max_error_rate": 1.0}, "max_error_rate must be at least 0 and under 1, not 1"),
])
def test_the_run_settings_refuse_a_breaker_that_cannot_work(values: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunSettings(**values)
