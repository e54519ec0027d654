"""The run report: one JSON object with every job and the totals, and the summary table.

Times in the report are seconds from the start of the run, so reports from
different machines (shards) line up; ``started_at`` gives the wall clock.
The report is written atomically: a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncovf.engine.batch import JobResult, JobStatus, totals
from asyncovf.engine.pool import BatchRunner

REPORT_VERSION = 1
PHASE_ORDER = ("spec", "import", "lease_wait", "upload", "complete", "extra_config",
               "inject_ovf_env", "upgrade_hardware", "mark_as_template", "power_on",
               "wait_for_ip", "abort")


@dataclass(frozen=True)
class RunInfo:
    """What the report says about the run itself."""

    batch: str | None
    concurrency: int
    shard: str | None = None
    interrupted: str | None = None  # the signal's name
    dry_run: bool = False


def job_record(result: JobResult, origin: float) -> dict[str, Any]:
    def offset(moment: float | None) -> float | None:
        return round(moment - origin, 6) if moment is not None else None

    phases: list[dict[str, Any]] = []
    for index, (attempt, phase, started) in enumerate(result.phases):
        following = result.phases[index + 1] if index + 1 < len(result.phases) else None
        ended = following[2] if following is not None and following[0] == attempt else None
        if phase in ("imported", "failed", "aborted"):
            continue
        phases.append({"attempt": attempt, "phase": phase, "start": offset(started),
                       "end": offset(ended if ended is not None else result.finished)})
    return {
        "name": result.name,
        "status": result.status.value,
        "vm": result.vm,
        "ip_address": result.ip_address,
        "source": result.spec.source,
        "attempts": result.attempts,
        "upload_retries": result.upload_retries,
        "bytes": result.bytes,
        "worker": result.worker,
        "start": offset(result.started),
        "end": offset(result.finished),
        "timings": {phase: round(result.timings[phase], 6)
                    for phase in PHASE_ORDER if phase in result.timings},
        "phases": phases,
        "error": result.error,
        "error_kind": result.error_kind,
        "warnings": list(result.warnings),
        "cleanup_errors": list(result.cleanup_errors),
    }


def build_report(runner: BatchRunner, info: RunInfo) -> dict[str, Any]:
    origin = runner.started
    finished = runner.finished if runner.finished is not None else time.monotonic()
    elapsed = max(finished - origin, 1e-9)
    summary = totals(runner.results)
    imported = summary["imported"]
    calls = dict(sorted(runner.soap_calls.items()))
    return {
        "version": REPORT_VERSION,
        "run": {
            "batch": info.batch,
            "started_at": datetime.fromtimestamp(time.time() - (time.monotonic() - origin),
                                                 UTC).isoformat(timespec="seconds"),
            "seconds": round(elapsed, 6),
            "concurrency": info.concurrency,
            "shard": info.shard,
            "interrupted": info.interrupted,
            "dry_run": info.dry_run,
            "ramp": ({"steps": list(runner.settings.ramp),
                      "interval": runner.settings.ramp_interval}
                     if runner.settings.ramp else None),
            "concurrency_series": [[t, limit] for t, limit in runner.concurrency_series],
        },
        "jobs": [job_record(result, origin) for result in runner.results],
        "totals": {
            **summary,
            "seconds": round(elapsed, 6),
            "imports_per_second": round(imported / elapsed, 3),
            "sessions_opened": runner.sessions_opened,
            "sessions_closed": runner.sessions_closed,
            "relogins": runner.relogins,
            "sessions_renewed": runner.sessions_renewed,
            "soap_retries": runner.soap_retries,
            "soap_calls": calls,
            "soap_calls_per_import": round(sum(calls.values()) / imported, 2) if imported else None,
            "errors_by_kind": dict(Counter(r.error_kind or "other" for r in runner.results
                                           if r.status is JobStatus.FAILED).most_common()),
        },
    }


def write_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Write ``report`` as JSON atomically (temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def summary_table(results: Sequence[JobResult], *, limit: int = 50) -> str:
    """A plain-text table for stdout: failures first, then up to ``limit`` other jobs."""
    rows = sorted(results, key=lambda r: (r.status is not JobStatus.FAILED,
                                          r.status is not JobStatus.ABORTED, r.spec.index))
    shown = rows[:limit]
    width = max([len(r.name) for r in shown] + [4])
    lines = [f"{'VM':<{width}}  {'status':<8}  {'vm':<10}  {'tries':>5}  {'MiB':>8}  "
             f"{'seconds':>8}  error"]
    for r in shown:
        seconds = (r.finished - r.started) if r.finished and r.started else 0.0
        lines.append(f"{r.name:<{width}}  {r.status.value:<8}  {r.vm or '-':<10}  "
                     f"{r.attempts:>5}  {r.bytes / 2**20:>8.1f}  {seconds:>8.2f}  "
                     f"{(r.error or '')[:120]}")
    if len(rows) > limit:
        lines.append(f"… and {len(rows) - limit} more (see --report)")
    return "\n".join(lines)


def totals_line(report: Mapping[str, Any]) -> str:
    t = report["totals"]
    parts = [f"{t['imported']} imported", f"{t['skipped']} skipped", f"{t['failed']} failed",
             f"{t['aborted']} aborted"]
    rate = t["imports_per_second"]
    return (f"{t['jobs']} jobs: " + ", ".join(parts)
            + f" in {t['seconds']:.1f} s ({rate:.1f} imports/s, "
            + f"{t['bytes'] / 2**20:.1f} MiB uploaded)")


__all__ = ["RunInfo", "build_report", "job_record", "summary_table", "totals_line",
           "write_report"]
