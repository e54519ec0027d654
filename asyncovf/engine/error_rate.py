"""The error rate of a run, defined once: failed jobs over finished jobs, input errors excluded.

A load test asks "how often did vCenter (or the path to it) fail an import?",
not "how much of my batch file was wrong". So a job refused for its input —
a broken package, a placement that does not exist, anything rejected before
vCenter was touched — counts neither as a failure nor as a finished job.
A job that did not finish (aborted: interrupted, stopped by the run timeout,
never started) is no outcome either; a skipped job (its VM already there, by
``--on-conflict skip``) finished without failing.

The run report's ``error_rate`` threshold reads this off the report's job
records, and the engine (a circuit breaker over the jobs finished so far) off
its results: both through :func:`error_rate`, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from asyncovf.engine.batch import JobStatus

#: The statuses of a job that ran to an outcome.
FINISHED = frozenset({JobStatus.IMPORTED, JobStatus.SKIPPED, JobStatus.FAILED})


@dataclass(frozen=True)
class ErrorRate:
    """Failed jobs over finished jobs (input errors in neither)."""

    failed: int
    finished: int

    @property
    def ratio(self) -> float | None:
        """``failed / finished``, or None before any job finished (no rate yet)."""
        return self.failed / self.finished if self.finished else None

    def __str__(self) -> str:
        ratio = self.ratio
        shown = "n/a" if ratio is None else f"{ratio:.2%}"
        return f"{shown} ({self.failed} failed of {self.finished} finished)"


def counts_toward_error_rate(status: JobStatus | str, *, input_error: bool) -> bool:
    """Whether a job with this outcome is in the rate's denominator."""
    return JobStatus(status) in FINISHED and not input_error


def error_rate(outcomes: Iterable[tuple[JobStatus | str, bool]]) -> ErrorRate:
    """The error rate of jobs given as ``(status, input_error)`` pairs.

    ``status`` is a :class:`JobStatus` or its value as the run report writes it
    (``"failed"``); ``input_error`` whether the job was refused for its input
    with nothing reaching vCenter (:attr:`JobResult.input_error`).
    """
    failed = finished = 0
    for status, input_error in outcomes:
        if counts_toward_error_rate(status, input_error=input_error):
            finished += 1
            failed += JobStatus(status) is JobStatus.FAILED
    return ErrorRate(failed=failed, finished=finished)


__all__ = ["FINISHED", "ErrorRate", "counts_toward_error_rate", "error_rate"]
