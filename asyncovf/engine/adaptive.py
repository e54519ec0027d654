"""Concurrency that adapts to what vCenter can take: ``--concurrency auto[:MAX]``.

A fixed number guessed too high costs a run most of its throughput against a
vCenter that queues and refuses, and puts that load on a shared vCenter. So
the limit starts low and follows vCenter's answers, AIMD-style (the model of
Netflix's concurrency-limits and Envoy's adaptive concurrency):

* every SOAP call reports how long its answer took and whether it was an
  overload signal: HTTP 503 (a session or a call refused), a SOAP timeout, or
  NotAllowedInCurrentState / TaskInProgress (``vsphere.calls.OVERLOAD_FAULTS``);
* every :data:`TICK` the limiter looks at what came in: any overload signal
  halves the limit (:data:`DECREASE`); answers whose slow tail (the 90th
  percentile) is past :data:`LATENCY_BOUND` times the baseline (the best tail
  seen) cut it by a fifth (:data:`SLOW_DECREASE`, at least one): vCenter still
  serves everything, and halving on a slow tail alone threw away half the
  throughput at every brush with the knee; answers near the
  baseline (within :data:`NEAR_BOUND` of it) raise it by one, up to the
  maximum (every tick until the first cut, so a short run does not spend
  itself climbing; by one not by a multiple, since an overshoot into a
  vCenter's refusals costs more than the climb); in between, it holds;
* a change waits :data:`HOLD` after the last, :data:`CUT_HOLD` after an
  overload signal's cut (hysteresis), so workers do not log in and out on
  every tick.

The pool applies the limit: a worker over it retires after its job and logs
out, one under it starts and logs in (engine/workers.py); each still owns one
session for its whole life. The limit over time is the report's
``concurrency_series``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Final

from asyncovf.vsphere.calls import CallRecord

log = logging.getLogger(__name__)

#: A call that ended without vCenter's answer says nothing of its latency.
UNANSWERED: Final = frozenset({"connection", "cancelled"})

#: How often the limit is reconsidered, in seconds.
TICK: Final = 0.25
#: The least time between two changes of the limit, in seconds.
HOLD: Final = 0.5
#: After a cut, the time before another: the workers over the new limit are
#: still finishing their jobs, and what they meet is the old limit's doing.
CUT_HOLD: Final = 1.5
#: The limit a run starts at (or the maximum, when lower).
START: Final = 4
#: The multiplicative cut on an overload signal (vCenter refused or timed out).
DECREASE: Final = 0.5
#: The cut when only the answers' slow tail says overload: vCenter still serves
#: everything, so a gentler step keeps the run near its knee instead of halving
#: it away and climbing back.
SLOW_DECREASE: Final = 0.8
#: Answers slower than this many times the baseline median count as overload, if
#: also slower by :data:`LATENCY_FLOOR` at least: a baseline of a millisecond
#: doubles with any noise (the client's own CPU), not only with vCenter's queue.
LATENCY_BOUND: Final = 2.0
LATENCY_FLOOR: Final = 0.02
#: Answers within this many times the baseline (or :data:`NEAR_FLOOR` of it) let the
#: limit rise: past it, more workers only queue.
NEAR_BOUND: Final = 1.5
NEAR_FLOOR: Final = 0.002


@dataclass
class AdaptiveLimit:
    """The limit and what the calls reported since the last tick."""

    maximum: int
    limit: int = 0
    baseline: float | None = None
    changed: float = field(default_factory=time.monotonic)
    _latencies: list[float] = field(default_factory=list)
    _overloads: int = 0
    #: Overload signals seen over the run, for the report and tests.
    overloads: int = 0
    #: No cut yet: the limit may rise every tick, not every :data:`HOLD`.
    slow_start: bool = True
    _cut: bool = False  # the last change was a cut

    def __post_init__(self) -> None:
        if self.maximum < 1:
            raise ValueError(f"the most workers must be at least 1, not {self.maximum}")
        self.limit = self.limit or min(START, self.maximum)

    def observe(self, call: CallRecord) -> None:
        """One SOAP call's answer (or its absence), from the session that made it."""
        if call.overloaded:
            self._overloads += 1
            self.overloads += 1
        elif call.fault not in UNANSWERED:
            self._latencies.append(call.seconds)

    def tick(self, now: float | None = None) -> int:
        """Reconsider the limit with what came in since the last tick; the limit."""
        now = time.monotonic() if now is None else now
        overloads, latencies = self._overloads, self._latencies
        self._overloads, self._latencies = 0, []
        # The slow tail, not the middle: a queue in front of vCenter delays the
        # calls that find it full first, while the median can still look idle.
        median = _tail(latencies) if latencies else None
        if median is not None and (self.baseline is None or median < self.baseline):
            self.baseline = median
        hold = CUT_HOLD if self._cut else TICK if self.slow_start else HOLD
        if now - self.changed < hold:
            return self.limit
        slow = (median is not None and self.baseline is not None
                and median > max(self.baseline * LATENCY_BOUND, self.baseline + LATENCY_FLOOR))
        cut = bool(overloads)
        if cut or slow:
            factor = DECREASE if cut else SLOW_DECREASE
            wanted = max(1, min(self.limit - 1, int(self.limit * factor)))
            self.slow_start = False
        elif median is not None and self.baseline is not None and median <= max(
                self.baseline * NEAR_BOUND, self.baseline + NEAR_FLOOR):
            wanted = min(self.maximum, self.limit + 1)
        else:
            wanted = self.limit  # slower than the baseline but not overloaded, or no answer
        if wanted != self.limit:
            log.info("concurrency auto: %d -> %d (%d overload signals, median %s, baseline %s)",
                     self.limit, wanted, overloads,
                     f"{median * 1000:.0f} ms" if median is not None else "-",
                     f"{self.baseline * 1000:.0f} ms" if self.baseline is not None else "-")
            self.limit, self.changed, self._cut = wanted, now, cut
        return self.limit


def _tail(latencies: list[float]) -> float:
    """The 90th percentile of the latencies (their largest, when there are few)."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def parse_concurrency(text: str) -> tuple[int, int | None]:
    """``--concurrency``: ``N`` → (N, None); ``auto`` or ``auto:MAX`` → (MAX, MAX), MAX
    defaulting to 64. Raises ValueError with a one-line reason."""
    if text == "auto" or text.startswith("auto:"):
        most = text.partition(":")[2] or "64"
        if not most.isdigit() or int(most) < 1:
            raise ValueError(f"{text}: auto:MAX needs a whole number MAX of at least 1")
        return int(most), int(most)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text}: must be a whole number of at least 1, or auto[:MAX]")
    return int(text), None


__all__ = ["DECREASE", "HOLD", "LATENCY_BOUND", "LATENCY_FLOOR", "NEAR_BOUND", "NEAR_FLOOR",
           "CUT_HOLD", "START", "TICK",
           "AdaptiveLimit", "parse_concurrency"]
