"""The circuit breaker: a run whose jobs keep failing stops taking new ones.

Overload and failure are met in this order:

1. one SOAP call retries within its bounded retry policy (``vsphere/session.py``);
2. a job that fails is retried from scratch, ``--job-retries`` times;
3. the breaker counts only the jobs that failed after all that.

When the error rate of the last ``window`` finished jobs — the run report's
``error_rate`` (``engine/error_rate.py``): failed over finished, input errors
in neither — passes ``max_error_rate``, the breaker trips: the run takes no
new job, the jobs in flight finish or abort with every guarantee, the rest are
not started, and ``asyncovf run`` exits 4 saying why.

A burst of transient failures is not that: when the last :data:`BURST`
finished jobs all failed on the connection, a timeout or vCenter refusing new
work (HTTP 503), the run pauses new work for a backoff (doubling from
``RunSettings.burst_pause`` up to :data:`PAUSE_MAX`, back to the start after a job
succeeds), as a vCenter restarting or a network blip asks, instead of failing
every remaining job in a few seconds.

The defaults are :class:`~asyncovf.engine.options.RunSettings`' (20 jobs, 50 %,
a first pause of 2 s): the run's settings, the command line and the breaker
read them there.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

import anyio

from asyncovf.engine.batch import JobResult, JobStatus
from asyncovf.engine.error_rate import counts_toward_error_rate, error_rate
from asyncovf.engine.options import RunSettings

log = logging.getLogger(__name__)

#: Finished jobs failed in a row on transient errors that pause new work.
BURST: Final = 3
PAUSE_MAX: Final = 60.0
#: The error kinds of a failure that may pass by itself (errors.error_kind).
TRANSIENT_KINDS: Final = frozenset({"connection", "timeout"})


class CircuitBreaker:
    """The run's breaker: :meth:`record` each finished job, :meth:`admit` before each new one."""

    def __init__(self, *, window: int = RunSettings.error_window,
                 max_error_rate: float | None = RunSettings.max_error_rate,
                 pause_first: float = RunSettings.burst_pause) -> None:
        """``max_error_rate`` None: the breaker never trips (bursts still pause)."""
        self.window = window
        self.max_error_rate = max_error_rate
        self.pause_first = pause_first
        self._recent: deque[tuple[JobStatus, bool]] = deque(maxlen=window)
        #: Why the breaker tripped (one line), or None while it has not.
        self.tripped: str | None = None
        self._transient_failures = 0
        self._pause = pause_first
        #: Pauses taken for bursts of transient failures, and their seconds.
        self.pauses: list[float] = []

    def record(self, result: JobResult) -> None:
        """A job ended: count it (if it is an outcome) and trip if the window says so."""
        if not counts_toward_error_rate(result.status, input_error=result.input_error):
            return
        self._recent.append((result.status, result.input_error))
        if result.status is JobStatus.FAILED:
            transient = (result.error_kind in TRANSIENT_KINDS
                         or "HTTP 503" in (result.error or ""))
            self._transient_failures = self._transient_failures + 1 if transient else 0
        else:
            self._transient_failures = 0
            self._pause = self.pause_first
        limit = self.max_error_rate
        rate = error_rate(self._recent)
        if (self.tripped is None and limit is not None and rate.finished == self.window
                and rate.ratio is not None and rate.ratio > limit):
            self.tripped = (f"{rate.failed} of the last {rate.finished} finished jobs failed "
                            f"(error rate {rate.ratio:.0%}, over --max-error-rate "
                            f"{limit:.0%})")
            log.info("circuit breaker: %s; taking no new job", self.tripped)

    async def admit(self) -> bool:
        """Before a new job: False once tripped; after a burst of transient failures,
        first a pause (the burst is then forgotten, so the next jobs try again)."""
        if self.tripped is not None:
            return False
        if self._transient_failures >= BURST:
            pause, self._pause = self._pause, min(self._pause * 2, PAUSE_MAX)
            self._transient_failures = 0
            log.warning("%d jobs in a row failed on transient errors; pausing new work %g s",
                        BURST, pause)
            self.pauses.append(pause)
            await anyio.sleep(pause)
        return self.tripped is None


__all__ = ["BURST", "PAUSE_MAX", "CircuitBreaker"]
