"""Numbers a load tester reads off a run report, with no plotting dependency.

Everything here is a pure function of the JSON that ``asyncovf run --report``
writes (times in seconds from the start of the run), so ``asyncovf report
--json`` works without matplotlib and the charts draw exactly these numbers.

Percentiles use the nearest-rank method: p-th percentile of n sorted values
is the value at rank ⌈p/100·n⌉. It always returns a latency that happened,
never an interpolation between two, which is what an operator comparing a
p99 with a log line expects.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asyncovf.errors import ReportFileError
from asyncovf.report import PHASE_ORDER
from asyncovf.report import load_run_report as read_run_report

#: Phases in lifecycle order (the report's own order); unknown phases follow.
PHASES = PHASE_ORDER


@dataclass(frozen=True)
class PhaseStats:
    """Latency of one phase over every attempt that entered it (seconds)."""

    phase: str
    count: int
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True)
class StepStats:
    """Median phase latencies of the jobs that started under one concurrency limit."""

    limit: int
    start: float
    jobs: int
    median: dict[str, float]


def load_run_report(path: str | Path) -> dict[str, Any]:
    """A run report with what the statistics read: :func:`asyncovf.report.load_run_report`'s
    checks, then its ``run`` and ``totals``; a :class:`ReportFileError` otherwise."""
    report = read_run_report(path)
    missing = [key for key in ("run", "totals") if not isinstance(report.get(key), dict)]
    if missing:
        raise ReportFileError(f"{path}: not a whole run report: {' and '.join(map(repr, missing))}"
                              " missing (expected the JSON 'asyncovf run --report' writes)")
    return report


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (which need not be sorted)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _intervals(job: Mapping[str, Any]) -> Iterable[tuple[int, str, float, float]]:
    for entry in job.get("phases") or ():
        start, end = entry.get("start"), entry.get("end")
        if start is not None and end is not None and end >= start:
            yield int(entry.get("attempt", 1)), str(entry["phase"]), float(start), float(end)


def phase_order(names: Iterable[str]) -> list[str]:
    known = [p for p in PHASES if p in set(names)]
    return known + sorted(set(names) - set(PHASES))


def phase_latencies(report: Mapping[str, Any]) -> dict[str, list[float]]:
    """Every phase's durations, one per attempt that entered it."""
    latencies: dict[str, list[float]] = {}
    for job in report["jobs"]:
        for _, phase, start, end in _intervals(job):
            latencies.setdefault(phase, []).append(end - start)
    return {phase: latencies[phase] for phase in phase_order(latencies)}


def phase_stats(report: Mapping[str, Any]) -> list[PhaseStats]:
    """p50/p90/p99/max per phase, in lifecycle order."""
    return [PhaseStats(phase, len(values), p50=percentile(values, 50),
                       p90=percentile(values, 90), p99=percentile(values, 99), max=max(values))
            for phase, values in phase_latencies(report).items()]


def in_flight_series(report: Mapping[str, Any]) -> list[tuple[float, int]]:
    """(time, jobs running from then on) at every start or end of a job.

    A job ending at the moment another starts is counted out first: a worker
    that moves on does not run two jobs at once.
    """
    events: list[tuple[float, int]] = []
    for job in report["jobs"]:
        start, end = job.get("start"), job.get("end")
        if start is None:
            continue
        events.append((float(start), +1))
        if end is not None:
            events.append((float(end), -1))
    events.sort()
    series: list[tuple[float, int]] = [(0.0, 0)]
    running = 0
    for moment, change in events:
        running += change
        if series[-1][0] == moment:
            series[-1] = (moment, running)
        else:
            series.append((moment, running))
    return series


def max_in_flight(report: Mapping[str, Any]) -> int:
    return max(count for _, count in in_flight_series(report))


def throughput_bins(report: Mapping[str, Any], bin_seconds: float | None = None
                    ) -> tuple[float, list[float]]:
    """Upload throughput (MiB/s) in consecutive bins of ``bin_seconds``.

    A job's ``bytes`` are those of its last attempt; they are spread evenly
    over that attempt's upload phase(s) — the report keeps no finer record,
    and an even spread is exact for the sum over the bin.
    Returns (bin width, [MiB/s for bin 0, 1, …]).
    """
    seconds = float(report["run"].get("seconds") or 0.0)
    width = bin_seconds or max(seconds / 100, 0.05)
    bins = [0.0] * max(1, math.ceil(seconds / width))
    for job in report["jobs"]:
        uploads = [(attempt, start, end) for attempt, phase, start, end in _intervals(job)
                   if phase == "upload"]
        if not uploads or not job.get("bytes"):
            continue
        last = max(attempt for attempt, _, _ in uploads)
        spans = [(start, end) for attempt, start, end in uploads if attempt == last]
        total = sum(end - start for start, end in spans)
        for start, end in spans:
            share = job["bytes"] * ((end - start) / total if total else 1 / len(spans))
            _spread(bins, width, start, end, share)
    return width, [b / 2**20 / width for b in bins]


def _spread(bins: list[float], width: float, start: float, end: float, amount: float) -> None:
    """Add ``amount`` to the bins over [start, end], in proportion to the overlap.

    Walks bin indices, not float positions: a position that lands on a bin's
    edge by rounding would never move on.
    """
    first = int(start // width)
    if end <= start:
        bins[min(first, len(bins) - 1)] += amount
        return
    last = int(end // width)
    if last >= len(bins):
        bins.extend([0.0] * (last + 1 - len(bins)))
    rate = amount / (end - start)
    for index in range(first, last + 1):
        overlap = min(end, (index + 1) * width) - max(start, index * width)
        if overlap > 0:
            bins[index] += rate * overlap


def concurrency_series(report: Mapping[str, Any]) -> list[tuple[float, int]]:
    """The concurrency limit over time: the ramp's record, or the fixed limit."""
    recorded = report["run"].get("concurrency_series")
    if recorded:
        return [(float(t), int(limit)) for t, limit in recorded]
    return [(0.0, int(report["run"].get("concurrency") or 0))]


def limit_at(series: Sequence[tuple[float, int]], moment: float) -> int:
    """The limit in force at ``moment`` (the last change at or before it)."""
    current = series[0][1]
    for start, limit in series:
        if start > moment:
            break
        current = limit
    return current


def step_stats(report: Mapping[str, Any]) -> list[StepStats]:
    """Median phase latency of the jobs started under each concurrency limit.

    This is where a ramp shows vCenter bending: the step at which a phase's
    median starts to climb is the concurrency the import path stops absorbing.
    """
    series = concurrency_series(report)
    steps: dict[int, tuple[float, list[Mapping[str, Any]]]] = {}
    order: list[int] = []
    for start, limit in series:
        if limit not in steps:
            steps[limit] = (start, [])
            order.append(limit)
    for job in report["jobs"]:
        if job.get("start") is None:
            continue
        steps[limit_at(series, float(job["start"]))][1].append(job)
    result = []
    for limit in order:
        start, jobs = steps[limit]
        latencies = phase_latencies({"jobs": jobs})
        result.append(StepStats(limit, start, len(jobs),
                                {phase: percentile(values, 50)
                                 for phase, values in latencies.items()}))
    return result


def errors_by_kind(report: Mapping[str, Any]) -> dict[str, int]:
    """Failed jobs by error kind, most frequent first (recounted from the jobs)."""
    kinds = Counter(job.get("error_kind") or "other" for job in report["jobs"]
                    if job.get("status") == "failed")
    return dict(kinds.most_common())


def statistics(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything above as one JSON-ready document (``asyncovf report --json``)."""
    width, throughput = throughput_bins(report)
    statuses = Counter(job.get("status") for job in report["jobs"])
    return {
        "run": report["run"],
        "jobs": len(report["jobs"]),
        "statuses": dict(statuses),
        "phases": [asdict(stats) for stats in phase_stats(report)],
        "max_in_flight": max_in_flight(report),
        "in_flight": in_flight_series(report),
        "concurrency": concurrency_series(report),
        "throughput": {"bin_seconds": width, "mib_per_second": throughput},
        "steps": [asdict(step) for step in step_stats(report)],
        "errors_by_kind": errors_by_kind(report),
    }


__all__ = ["PhaseStats", "StepStats", "concurrency_series",
           "errors_by_kind", "in_flight_series", "limit_at", "load_run_report", "max_in_flight",
           "percentile", "phase_latencies", "phase_order", "phase_stats", "statistics",
           "step_stats", "throughput_bins"]
