"""The shards of one batch as one run: ``asyncovf report r-1.json r-2.json …``.

``asyncovf run --shard K/N`` runs every N-th job of a batch, so N machines
share one batch; each writes its own run report, with times in seconds from
its own start and its wall-clock start in ``run.started_at``. Merging puts
every shard on the clock of the earliest one (each shard's times shifted by
how much later it started), unions the jobs and sums the totals, so that
the statistics and thresholds judge the whole batch as if one run had
imported it.

``started_at`` is written to the millisecond, so shards line up as closely
as their machines' clocks agree (NTP keeps them within milliseconds); the
totals, which is what a merged report is mostly read for, do not depend on
that. Reports written before it had milliseconds still merge, to the second.

Reports that are not shards of one batch are refused with one error naming
the files: a different batch file (by its name; the shards may have read it
from different directories), different shard counts, the same shard twice,
or a VM name in two reports.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import PurePath
from typing import Any

from asyncovf.errors import InputError


class MergeError(InputError):
    """Run reports that are not the shards of one batch."""


def _origin(report: Mapping[str, Any], file: str) -> datetime:
    text = report["run"].get("started_at")
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        raise MergeError(f"{file}: run.started_at {text!r} is not a time; cannot line its "
                         "jobs up with the other shards'") from None


def _shard(report: Mapping[str, Any], file: str) -> tuple[int, int]:
    shard = report["run"].get("shard")
    number, _, total = str(shard).partition("/")
    if not (number.isdigit() and total.isdigit()):
        raise MergeError(f"{file}: not a shard (run.shard is {shard!r}); only the reports of "
                         "'asyncovf run --shard K/N' are merged")
    return int(number), int(total)


def _check_one_batch(reports: Sequence[Mapping[str, Any]], files: Sequence[str]) -> None:
    batches = {PurePath(str(r["run"].get("batch"))).name for r in reports}
    if len(batches) > 1:
        raise MergeError("not the shards of one batch: " + ", ".join(
            f"{file} ran {r['run'].get('batch')!r}" for file, r in zip(files, reports,
                                                                        strict=True)))
    shards = [_shard(report, file) for report, file in zip(reports, files, strict=True)]
    if len({total for _, total in shards}) > 1:
        raise MergeError("not the shards of one batch: " + ", ".join(
            f"{file} is shard {k}/{n}" for file, (k, n) in zip(files, shards, strict=True)))
    seen: dict[object, str] = {}
    for file, shard, report in zip(files, shards, reports, strict=True):
        if shard in seen:
            raise MergeError(f"{file} and {seen[shard]} are both shard {shard[0]}/{shard[1]}")
        seen[shard] = file
        for job in report["jobs"]:
            key = ("job", job.get("name"))
            if key in seen:
                raise MergeError(f"{file} and {seen[key]} both have a job "
                                 f"{job.get('name')!r}; a shard's jobs are its own")
            seen[key] = file


def _shifted(job: Mapping[str, Any], by: float, worker_base: int) -> dict[str, Any]:
    def later(moment: Any) -> Any:
        return round(float(moment) + by, 6) if moment is not None else None

    moved = copy.deepcopy(dict(job))
    moved["start"], moved["end"] = later(job.get("start")), later(job.get("end"))
    moved["phases"] = [{**phase, "start": later(phase.get("start")),
                        "end": later(phase.get("end"))} for phase in job.get("phases") or ()]
    if isinstance(job.get("worker"), int):
        moved["worker"] = job["worker"] + worker_base
    return moved


def _limit_series(report: Mapping[str, Any]) -> list[tuple[float, int]]:
    recorded = report["run"].get("concurrency_series")
    if recorded:
        return [(float(t), int(limit)) for t, limit in recorded]
    return [(0.0, int(report["run"].get("concurrency") or 0))]


def _summed_limits(series: Sequence[tuple[float, list[tuple[float, int]]]]
                   ) -> list[list[float | int]]:
    """The shards' concurrency limits added up over time: (shift, a shard's series) each."""
    def limit_at(steps: list[tuple[float, int]], moment: float) -> int:
        current = 0
        for start, limit in steps:
            if start > moment:
                break
            current = limit
        return current

    moments = sorted({round(shift + t, 6) for shift, steps in series for t, _ in steps})
    merged: list[list[float | int]] = []
    for moment in moments:
        total = sum(limit_at(steps, moment - shift) if moment >= shift else 0
                    for shift, steps in series)
        if not merged or merged[-1][1] != total:
            merged.append([moment, total])
    return merged


def _summed_totals(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every count summed (nested counts too); the rates are recomputed by the caller."""
    summed: dict[str, Any] = {}
    for report in reports:
        for key, value in report.get("totals", {}).items():
            if isinstance(value, bool) or value is None:
                summed.setdefault(key, value)
            elif isinstance(value, int | float):
                summed[key] = summed.get(key, 0) + value
            elif isinstance(value, dict):
                counts = summed.setdefault(key, Counter())
                counts.update(value)
    return {key: dict(value.most_common()) if isinstance(value, Counter) else value
            for key, value in summed.items()}


def merge_reports(reports: Sequence[Mapping[str, Any]],
                  files: Sequence[str] | None = None) -> dict[str, Any]:
    """The run reports of one batch's shards (as JSON decodes them) as one run report.

    The result has the run report's schema, so every reader (statistics, charts,
    thresholds, ``cleanup``) takes it as it takes one run: the earliest shard's
    ``started_at``; times in seconds from it; ``seconds`` until the last shard
    ended; ``concurrency`` and its series summed over the shards; jobs from all
    shards ordered by start, workers renumbered so that no two shards share one;
    totals summed, with ``imports_per_second`` and ``soap_calls_per_import``
    recomputed over the merged run. ``shards`` lists the shards merged, and
    ``shard`` is None once all N are there.

    One report is returned as it is. ``files`` name the reports in errors (a
    :class:`MergeError`, an :class:`InputError`: exit 2).
    """
    if not reports:
        raise MergeError("no run reports to merge")
    names = list(files) if files is not None else [f"report {i + 1}" for i in
                                                    range(len(reports))]
    if len(reports) == 1:
        return copy.deepcopy(dict(reports[0]))
    _check_one_batch(reports, names)
    # In shard order: shard 1's workers keep their numbers, shard 2's follow them…
    ordered = sorted(zip(reports, names, strict=True), key=lambda pair: _shard(*pair))
    reports, names = [report for report, _ in ordered], [name for _, name in ordered]
    origins = [_origin(report, file) for report, file in zip(reports, names, strict=True)]
    start = min(origins)
    shifts = [(origin - start).total_seconds() for origin in origins]
    jobs: list[dict[str, Any]] = []
    worker_base = 0
    for report, shift in zip(reports, shifts, strict=True):
        jobs.extend(_shifted(job, shift, worker_base) for job in report["jobs"])
        workers = [job["worker"] for job in report["jobs"] if isinstance(job.get("worker"), int)]
        worker_base += max([int(report["run"].get("concurrency") or 0), *workers])
    jobs.sort(key=lambda job: (job["start"] is None, job["start"] or 0.0))
    seconds = round(max(shift + float(report["run"].get("seconds") or 0.0)
                        for report, shift in zip(reports, shifts, strict=True)), 6)
    shards = [_shard(report, file) for report, file in zip(reports, names, strict=True)]
    total = shards[0][1]
    ramps = [report["run"].get("ramp") for report in reports]
    first = reports[origins.index(start)]["run"]
    run = {
        **first,
        "started_at": start.isoformat(timespec="milliseconds"),
        "seconds": seconds,
        "concurrency": sum(int(report["run"].get("concurrency") or 0) for report in reports),
        "shard": None if len(shards) == total else
        "+".join(str(number) for number, _ in shards) + f"/{total}",
        "shards": [f"{number}/{total}" for number, _ in shards],
        "interrupted": next((r["run"]["interrupted"] for r in reports
                             if r["run"].get("interrupted")), None),
        "dry_run": any(report["run"].get("dry_run") for report in reports),
        "ramp": ramps[0] if all(ramp == ramps[0] for ramp in ramps) else None,
        "concurrency_series": _summed_limits(
            [(shift, _limit_series(report)) for report, shift in zip(reports, shifts,
                                                                     strict=True)]),
    }
    totals = _summed_totals(reports)
    imported = int(totals.get("imported", 0))
    calls = sum((totals.get("soap_calls") or {}).values())
    totals.update(seconds=seconds,
                  imports_per_second=round(imported / seconds, 3) if seconds > 0 else 0.0,
                  soap_calls_per_import=round(calls / imported, 2) if imported else None)
    if "soap_calls" in totals:
        totals["soap_calls"] = dict(sorted(totals["soap_calls"].items()))
    # Each shard imports the seeds of its own part of the batch (strategy: clone).
    seeds = [seed for report in reports for seed in report.get("seeds") or ()]
    return {**reports[0], "run": run, "jobs": jobs, "seeds": seeds, "totals": totals}


__all__ = ["MergeError", "merge_reports"]
