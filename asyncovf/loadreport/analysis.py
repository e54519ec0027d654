"""Numbers a load tester reads off a run report, with no plotting dependency.

Everything here is a pure function of the JSON that ``asyncovf run --report``
writes (times in seconds from the start of the run), so ``asyncovf report
--json`` works without matplotlib and the charts draw exactly these numbers.

Percentiles use the nearest-rank method: p-th percentile of n sorted values
is the value at rank ⌈p/100·n⌉. It always returns a latency that happened,
never an interpolation between two, which is what an operator comparing a
p99 with a log line expects.

Latency percentiles describe the jobs that succeeded (``imported``): a job
aborted after 0.2 s or failed after a 300 s timeout would drag them either way.
Failed and aborted jobs get their own numbers (:func:`outcome_latencies`) and
the error table (:func:`error_table`).
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
#: The percentiles every latency table shows.
PERCENTILES = (50, 90, 95, 99)
#: How many distinct messages the error table quotes per kind.
ERROR_SAMPLES = 3


@dataclass(frozen=True)
class PhaseStats:
    """Latency (seconds) of one phase, or of whole jobs (``phase`` "end-to-end")."""

    phase: str
    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class StepStats:
    """One concurrency limit of a ramp (or the one limit of a run without).

    ``median`` is per phase, of the jobs started under the limit. The rates are
    over the step's window, ``start`` to ``end``: until the next step, or until
    the last job was taken (the drain after it runs below the limit, so it would
    read as a bend that is not one). ``imports_per_second`` counts the imports
    that ended in the window; ``error_rate`` the failed or aborted share of the
    jobs that ended in it; ``p90`` is the end-to-end p90 of the jobs started
    under the limit that were imported (``None`` if none were).
    """

    limit: int
    start: float
    jobs: int
    median: dict[str, float]
    end: float = 0.0
    imported: int = 0
    failed: int = 0
    imports_per_second: float = 0.0
    error_rate: float = 0.0
    p90: float | None = None


@dataclass(frozen=True)
class ErrorKind:
    """The failed (or aborted) jobs of one kind, with a few of their messages."""

    kind: str
    count: int
    samples: tuple[str, ...]


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


def succeeded(jobs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The jobs that imported their VM: those latency percentiles describe."""
    return [job for job in jobs if job.get("status") == "imported"]


def phase_latencies(report: Mapping[str, Any]) -> dict[str, list[float]]:
    """Every phase's durations in the imported jobs, one per attempt that entered it."""
    latencies: dict[str, list[float]] = {}
    for job in succeeded(report["jobs"]):
        for _, phase, start, end in _intervals(job):
            latencies.setdefault(phase, []).append(end - start)
    return {phase: latencies[phase] for phase in phase_order(latencies)}


def latency_stats(name: str, values: Sequence[float]) -> PhaseStats:
    """p50/p90/p95/p99/max of ``values`` (not empty)."""
    p50, p90, p95, p99 = (percentile(values, p) for p in PERCENTILES)
    return PhaseStats(name, len(values), p50=p50, p90=p90, p95=p95, p99=p99, max=max(values))


def end_to_end(jobs: Iterable[Mapping[str, Any]]) -> list[float]:
    """Each job's time from its start to its end (jobs that have both)."""
    return [float(job["end"]) - float(job["start"]) for job in jobs
            if job.get("start") is not None and job.get("end") is not None]


def phase_stats(report: Mapping[str, Any]) -> list[PhaseStats]:
    """Percentiles of the imported jobs: end-to-end first, then per phase in lifecycle order."""
    whole = end_to_end(succeeded(report["jobs"]))
    return ([latency_stats("end-to-end", whole)] if whole else []) + [
        latency_stats(phase, values) for phase, values in phase_latencies(report).items()]


def outcome_latencies(report: Mapping[str, Any]) -> list[PhaseStats]:
    """End-to-end time of the failed and of the aborted jobs, each on its own."""
    stats = []
    for status in ("failed", "aborted"):
        values = end_to_end(job for job in report["jobs"] if job.get("status") == status)
        if values:
            stats.append(latency_stats(status, values))
    return stats


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


def _taken_until(report: Mapping[str, Any]) -> float:
    """When the last job started: from then on no worker had a job to take."""
    starts = [float(job["start"]) for job in report["jobs"] if job.get("start") is not None]
    return max(starts, default=float(report["run"].get("seconds") or 0.0))


def step_stats(report: Mapping[str, Any]) -> list[StepStats]:
    """Each concurrency limit's jobs, rates and latency (see :class:`StepStats`).

    This is where a ramp shows vCenter bending: the step at which imports/s
    stop rising, or latency starts to climb, is the concurrency the import path
    stops absorbing (:mod:`.knee`).
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
    last_start = _taken_until(report)
    result = []
    for index, limit in enumerate(order):
        start, jobs = steps[limit]
        following = steps[order[index + 1]][0] if index + 1 < len(order) else math.inf
        end = max(start, min(following, last_start))
        ended = [job for job in report["jobs"] if job.get("end") is not None
                 and start <= float(job["end"]) < end]
        imported = sum(job.get("status") == "imported" for job in ended)
        failed = sum(job.get("status") in ("failed", "aborted") for job in ended)
        latencies = phase_latencies({"jobs": jobs})
        whole = end_to_end(succeeded(jobs))
        result.append(StepStats(
            limit, start, len(jobs),
            {phase: percentile(values, 50) for phase, values in latencies.items()},
            end=end, imported=imported, failed=failed,
            imports_per_second=imported / (end - start) if end > start else 0.0,
            error_rate=failed / len(ended) if ended else 0.0,
            p90=percentile(whole, 90) if whole else None))
    return result


def rate_bins(report: Mapping[str, Any], bin_seconds: float | None = None
              ) -> tuple[float, list[float], list[float]]:
    """Imports/s and errors/s over time: (bin width, imports per bin, errors per bin),
    each job counted in the bin where it ended."""
    seconds = float(report["run"].get("seconds") or 0.0)
    width = bin_seconds or max(seconds / 60, 0.05)
    count = max(1, math.ceil(seconds / width))
    imports, errors = [0.0] * count, [0.0] * count
    for job in report["jobs"]:
        if job.get("end") is None:
            continue
        index = min(count - 1, int(float(job["end"]) // width))
        if job.get("status") == "imported":
            imports[index] += 1 / width
        elif job.get("status") in ("failed", "aborted"):
            errors[index] += 1 / width
    return width, imports, errors


def error_table(report: Mapping[str, Any]) -> list[ErrorKind]:
    """Failed jobs by error kind, then the aborted ones; most frequent first."""
    groups: dict[str, list[str]] = {}
    for job in report["jobs"]:
        if job.get("status") == "failed":
            kind = str(job.get("error_kind") or "other")
        elif job.get("status") == "aborted":
            kind = "aborted"
        else:
            continue
        groups.setdefault(kind, []).append(str(job.get("error") or ""))
    table = []
    for kind, messages in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        samples = tuple(dict.fromkeys(m for m in messages if m))[:ERROR_SAMPLES]
        table.append(ErrorKind(kind, len(messages), samples))
    return table


def errors_by_kind(report: Mapping[str, Any]) -> dict[str, int]:
    """Failed jobs by error kind, most frequent first (recounted from the jobs)."""
    kinds = Counter(job.get("error_kind") or "other" for job in report["jobs"]
                    if job.get("status") == "failed")
    return dict(kinds.most_common())


def statistics(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything above as one JSON-ready document (``asyncovf report --json``)."""
    width, throughput = throughput_bins(report)
    rate_width, imports, errors = rate_bins(report)
    statuses = Counter(job.get("status") for job in report["jobs"])
    steps = step_stats(report)
    return {
        "run": report["run"],
        "jobs": len(report["jobs"]),
        "statuses": dict(statuses),
        "phases": [asdict(stats) for stats in phase_stats(report)],
        "max_in_flight": max_in_flight(report),
        "in_flight": in_flight_series(report),
        "concurrency": concurrency_series(report),
        "throughput": {"bin_seconds": width, "mib_per_second": throughput},
        "rates": {"bin_seconds": rate_width, "imports_per_second": imports,
                  "errors_per_second": errors},
        "steps": [asdict(step) for step in steps],
        "errors_by_kind": errors_by_kind(report),
        "errors": [asdict(kind) for kind in error_table(report)],
        "failed_latency": [asdict(stats) for stats in outcome_latencies(report)],
    }


__all__ = ["ErrorKind", "PhaseStats", "StepStats", "concurrency_series", "end_to_end",
           "error_table", "errors_by_kind", "in_flight_series", "latency_stats", "limit_at",
           "load_run_report", "max_in_flight", "outcome_latencies", "percentile",
           "phase_latencies", "phase_order", "phase_stats", "rate_bins", "statistics",
           "step_stats", "succeeded", "throughput_bins"]
