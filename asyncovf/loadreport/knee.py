"""The knee of a ramp: the concurrency at which vCenter stops absorbing more imports.

A ramp adds workers step by step (``asyncovf run --ramp``). The knee is the
first step that either

- gains less than :data:`GAIN_TOLERANCE` imports/s over the step before it
  (more workers, hardly more imports: the import path is saturated), or
- has a p90 end-to-end latency over :data:`LATENCY_TOLERANCE` times that of
  the first step (imports still complete, but each waits longer),

whichever comes first. Both tolerances live here and nowhere else. A run
without a ramp, or a ramp that never bends, has no knee, and the sentence says
why. Pure: a function of :class:`~.analysis.StepStats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from asyncovf.loadreport.analysis import StepStats

#: A step whose imports/s rose less than this fraction over the previous step bends.
GAIN_TOLERANCE: Final = 0.10
#: A step whose p90 end-to-end latency exceeds this multiple of the first step's bends.
LATENCY_TOLERANCE: Final = 1.5


@dataclass(frozen=True)
class Knee:
    """Where the ramp bent (``limit``, ``None`` for no knee), why, and the sentence."""

    limit: int | None
    reason: str | None  # "gain", "latency" or "gain and latency"
    sentence: str


def _workers(limit: int) -> str:
    return f"{limit} worker" + ("" if limit == 1 else "s")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"


def _gain(previous: StepStats, step: StepStats) -> float:
    if previous.imports_per_second <= 0:
        return 0.0 if step.imports_per_second <= 0 else float("inf")
    return step.imports_per_second / previous.imports_per_second - 1


def find_knee(steps: Sequence[StepStats]) -> Knee:
    """The first step that bends by gain or by latency (see the module's rule)."""
    if len(steps) < 2:
        only = f" (a fixed {_workers(steps[0].limit)})" if steps else ""
        return Knee(None, None, f"no knee: no ramp{only}; run with --ramp to find one")
    first = steps[0]
    for previous, step in zip(steps, steps[1:], strict=False):
        gain = _gain(previous, step)
        by_gain = gain < GAIN_TOLERANCE
        by_latency = (first.p90 is not None and step.p90 is not None
                      and step.p90 > LATENCY_TOLERANCE * first.p90)
        if not (by_gain or by_latency):
            continue
        parts = []
        if by_gain:
            change = ("did not rise" if round(gain * 100) == 0
                      else f"rose only {_percent(gain)}" if gain > 0
                      else f"fell {_percent(-gain)}")
            parts.append(f"imports/s {change} over {_workers(previous.limit)} "
                         f"({previous.imports_per_second:.2f} → {step.imports_per_second:.2f}/s,"
                         f" under the {_percent(GAIN_TOLERANCE)} gain tolerance)")
        if by_latency:
            assert first.p90 is not None and step.p90 is not None
            parts.append(f"p90 end-to-end latency reached {step.p90:.2f} s, "
                         f"{step.p90 / first.p90:.1f}× the first step's {first.p90:.2f} s "
                         f"(over the {LATENCY_TOLERANCE:g}× tolerance)")
        reason = " and ".join(name for name, hit in (("gain", by_gain),
                                                      ("latency", by_latency)) if hit)
        return Knee(step.limit, reason,
                    f"knee at {_workers(step.limit)}: " + "; ".join(parts))
    last, before = steps[-1], steps[-2]
    gain = _gain(before, last)
    rise = "rose from none" if gain == float("inf") else f"still rose {_percent(gain)}"
    return Knee(None, None, f"no knee: throughput {rise} at the last step "
                            f"({_workers(last.limit)})")


__all__ = ["GAIN_TOLERANCE", "LATENCY_TOLERANCE", "Knee", "find_knee"]
