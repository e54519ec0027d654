"""Pass/fail criteria of a load test, as k6 has them: ``p95(upload)<30s``, ``error_rate<1%``.

A threshold is ``METRIC OP VALUE``:

- METRIC is a latency percentile of one phase — ``p50``, ``p90``, ``p95``,
  ``p99`` (any ``pN``, 0 < N ≤ 100) or ``max`` of a phase of the run report
  (``upload``, ``lease_wait``…) or of ``job``, a job's whole time from its
  start to its end; or ``error_rate`` (:mod:`asyncovf.engine.error_rate`:
  failed over finished jobs, input errors excluded); or ``imports_per_s``
  (imported jobs over the run's seconds).
- OP is ``<``, ``<=``, ``>`` or ``>=``.
- VALUE is a number with a unit that fits the metric: ``s`` or ``ms`` for a
  latency (seconds when bare), ``%`` for the error rate (a fraction when
  bare: ``error_rate<0.01`` is ``error_rate<1%``), none for imports per second.

Parsing is strict — a typo in a phase name would otherwise pass a threshold
that measures nothing — and a threshold with nothing to measure (no job
reached that phase, no job finished) fails: a load test passes on evidence.

Everything here is a pure function of the run report's JSON, so
``asyncovf run --threshold`` and ``asyncovf report --threshold`` judge alike.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from asyncovf.engine.error_rate import ErrorRate, error_rate
from asyncovf.errors import UsageError
from asyncovf.loadreport.analysis import end_to_end, percentile, phase_latencies, succeeded
from asyncovf.report import PHASE_ORDER

#: The end-to-end latency's name in a threshold: a job's start to its end.
JOB: Final = "job"
#: Error kinds the run report gives a job refused for its input (for reports
#: that do not record ``input_error`` itself): its placement or descriptor, its package.
INPUT_ERROR_KINDS: Final = frozenset({"input", "package"})

_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_EXPRESSION: Final = re.compile(
    r"\s*(?P<metric>[a-z_]+[0-9.]*)(?:\((?P<phase>[^()]*)\))?\s*(?P<op><=|>=|<|>)"
    r"\s*(?P<value>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[a-z%]*)\s*")
_PERCENTILE: Final = re.compile(r"p([0-9]+(?:\.[0-9]+)?)")
#: Each unit's factor to the metric's base unit (seconds, a fraction, per second).
_UNITS: Final[dict[str, dict[str, float]]] = {
    "latency": {"": 1.0, "s": 1.0, "ms": 0.001},
    "error_rate": {"": 1.0, "%": 0.01},
    "imports_per_s": {"": 1.0},
}


class ThresholdError(UsageError):
    """A ``--threshold`` that does not parse: the expression, and why."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression, self.reason = expression, reason
        super().__init__(f"--threshold {expression!r}: {reason}")


@dataclass(frozen=True)
class Threshold:
    """One parsed ``METRIC OP VALUE``; ``limit`` in the metric's base unit."""

    text: str  # as the user wrote it, for messages
    metric: str  # "latency", "error_rate" or "imports_per_s"
    op: str
    limit: float
    unit: str = ""  # as written, to show a measured value the same way
    phase: str | None = None  # a latency's phase, or JOB
    rank: float | None = None  # a latency's percentile; 100 for max

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.limit)

    def show(self, value: float) -> str:
        """``value`` (in the base unit) in the unit the threshold was written in."""
        if self.unit == "ms":
            return f"{value * 1000:.6g}ms"
        if self.unit == "%":
            return f"{value * 100:.4g}%"
        return f"{value:.6g}{'s' if self.metric == 'latency' else ''}"


@dataclass(frozen=True)
class Verdict:
    """A threshold judged on one report: what was measured, and whether it held."""

    threshold: Threshold
    value: float | None  # None: nothing to measure, which fails
    detail: str = ""  # what the value is made of, e.g. "3 failed of 40 finished"

    @property
    def passed(self) -> bool:
        return self.value is not None and self.threshold.holds(self.value)

    def describe(self) -> str:
        """One line: ``threshold p95(upload)<30s failed: 41.2s (120 samples)``."""
        verdict = "passed" if self.passed else "failed"
        measured = ("nothing to measure" if self.value is None
                    else self.threshold.show(self.value))
        return (f"threshold {self.threshold.text} {verdict}: {measured}"
                + (f" ({self.detail})" if self.detail else ""))


def parse_threshold(text: str) -> Threshold:
    """``text`` as a :class:`Threshold`, or a :class:`ThresholdError` (a usage error: exit
    2) saying what is wrong with it."""
    def refuse(why: str) -> ThresholdError:
        return ThresholdError(text, why)

    match = _EXPRESSION.fullmatch(text)
    if match is None:
        raise refuse("expected METRIC OP VALUE, e.g. 'p95(upload)<30s', 'error_rate<1%' "
                     "or 'imports_per_s>5'")
    name, phase, op, unit = match["metric"], match["phase"], match["op"], match["unit"]
    rank: float | None = None
    if name in ("error_rate", "imports_per_s"):
        if phase is not None:
            raise refuse(f"{name} takes no phase")
        metric = name
    else:
        metric = "latency"
        percentile_match = _PERCENTILE.fullmatch(name)
        rank = 100.0 if name == "max" else (
            float(percentile_match[1]) if percentile_match else None)
        if rank is None:
            raise refuse(f"unknown metric {name!r}; expected p50, p90, p95, p99, max "
                         "(of a phase), error_rate or imports_per_s")
        if not 0 < rank <= 100:
            raise refuse(f"percentile {name!r}: expected above p0, at most p100")
        phases = ", ".join((*PHASE_ORDER, JOB))
        if phase is None:
            raise refuse(f"{name} of what? e.g. {name}(upload); phases: {phases}")
        phase = phase.strip()
        if phase not in (*PHASE_ORDER, JOB):
            raise refuse(f"unknown phase {phase!r}; expected one of {phases}")
    units = _UNITS[metric]
    if unit not in units:
        raise refuse(f"unit {unit!r} does not fit {name}; expected "
                     + " or ".join(repr(u) if u else "none" for u in units))
    return Threshold(text=text.strip(), metric=metric, op=op,
                     limit=float(match["value"]) * units[unit], unit=unit, phase=phase,
                     rank=rank)


def is_input_error(job: Mapping[str, Any]) -> bool:
    """Whether a job record is one refused for its input: its ``input_error`` when the
    report records it, else told by its error kind."""
    recorded = job.get("input_error")
    if isinstance(recorded, bool):
        return recorded
    return job.get("status") == "failed" and job.get("error_kind") in INPUT_ERROR_KINDS


def report_error_rate(report: Mapping[str, Any]) -> ErrorRate:
    """The run's :func:`~asyncovf.engine.error_rate.error_rate`, from its job records."""
    return error_rate((job["status"], is_input_error(job)) for job in report["jobs"]
                      if job.get("status") in ("imported", "skipped", "failed", "aborted"))


def measure(report: Mapping[str, Any], threshold: Threshold) -> Verdict:
    """``threshold`` judged on ``report`` (a run report, as JSON decodes it)."""
    if threshold.metric == "error_rate":
        rate = report_error_rate(report)
        return Verdict(threshold, rate.ratio,
                       f"{rate.failed} failed of {rate.finished} finished")
    if threshold.metric == "imports_per_s":
        seconds = float(report["run"].get("seconds") or 0.0)
        imported = sum(job.get("status") == "imported" for job in report["jobs"])
        return Verdict(threshold, imported / seconds if seconds > 0 else None,
                       f"{imported} imported in {seconds:.6g}s")
    assert threshold.phase is not None and threshold.rank is not None
    samples = (end_to_end(succeeded(report["jobs"])) if threshold.phase == JOB
               else phase_latencies(report).get(threshold.phase, []))
    if not samples:
        return Verdict(threshold, None, f"no {threshold.phase} in the report")
    return Verdict(threshold, percentile(samples, threshold.rank), f"{len(samples)} samples")


def evaluate(report: Mapping[str, Any], thresholds: Sequence[Threshold]) -> list[Verdict]:
    """Every threshold judged on ``report``, in the order given; the run fails its
    thresholds (exit 3) if any verdict has not :attr:`~Verdict.passed`."""
    return [measure(report, threshold) for threshold in thresholds]


__all__ = ["INPUT_ERROR_KINDS", "JOB", "Threshold", "ThresholdError", "Verdict", "evaluate",
           "is_input_error", "measure", "parse_threshold", "report_error_rate"]
