"""What a load report says, in words and rounded numbers: the terminal's text and the
HTML page's headings and tables read from here.

Three questions first — how fast, where it bends, what failed — then the run's
metadata and the latency tables. Numbers are rounded for reading (``1.6 ms``,
``36.3 s``); ``asyncovf report --json`` keeps the exact ones. Pure: a function
of the run report, via :mod:`.analysis` and :mod:`.knee`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from asyncovf import quantity
from asyncovf.loadreport import analysis
from asyncovf.loadreport.knee import find_knee
from asyncovf.printable import printable


def seconds(value: float | None) -> str:
    """A duration for reading: milliseconds under 0.1 s, then 3 significant digits."""
    if value is None:
        return "-"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    if value < 100:
        return f"{value:.3g} s" if value >= 1 else f"{value:.2f} s"
    return f"{value:.0f} s"


def size(count: float | None) -> str:
    """:func:`asyncovf.quantity.size`, or ``-`` for a size the report does not have."""
    return "-" if count is None else quantity.size(count)


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


def settings_text(run: Mapping[str, Any]) -> str:
    """Concurrency, ramp and bandwidth in words (not the report's dict)."""
    settings = run.get("settings") or {}
    ramp = run.get("ramp")
    if ramp:
        text = (f"ramp {' → '.join(map(str, ramp['steps']))} workers, a step every "
                f"{ramp['interval']:g} s")
    else:
        text = quantity.quantity(int(run.get("concurrency") or 0), "worker")
    bandwidth = settings.get("bandwidth")
    text += f"; bandwidth {size(bandwidth)}/s" if bandwidth else "; bandwidth unlimited"
    for key, label in (("max_per_host", "per host"), ("max_per_datastore", "per datastore")):
        if settings.get(key):
            text += f"; at most {settings[key]} {label}"
    if settings.get("spec_per_vm"):
        # A load test of CreateImportSpec too: the reader must know which it was.
        text += "; one CreateImportSpec per VM"
    if settings.get("strategy") == "clone":
        # A load test of CloneVM_Task, not of the upload path, for the VMs that did not say.
        text += "; clones of one seed per group (--strategy clone)"
    return text


def started_text(started_at: object) -> str:
    """The wall-clock start to the second, as a reader wants it (the report keeps
    milliseconds, for lining shards up)."""
    if not started_at:
        return "not recorded"
    try:
        when = datetime.fromisoformat(str(started_at))
    except ValueError:
        return printable(str(started_at))
    zone = "UTC" if when.utcoffset() == timedelta(0) else when.strftime("%z")
    return f"{when:%Y-%m-%d %H:%M:%S} {zone}".rstrip()


def vcenter_text(about: Mapping[str, Any] | None) -> str:
    if not about:
        return "not recorded"
    return (f"{about.get('fullName') or 'vCenter'} (version {about.get('version')}, "
            f"build {about.get('build')}, API {about.get('apiVersion')})")


def metadata(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run's facts, labelled: tool, command, vCenter, packages, settings, start."""
    run = report["run"]
    tool = run.get("tool") or {}
    packages = run.get("packages") or []
    return [
        ("tool", f"{tool.get('name', 'asyncovf')} {tool.get('version', '(not recorded)')}"),
        ("command", printable(" ".join(run["command"])) if run.get("command")
         else "not recorded"),
        ("vCenter", printable(vcenter_text(run.get("vcenter")))),
        ("packages", "; ".join(f"{printable(p['source'])} ({size(p.get('bytes'))})"
                               for p in packages) or "not recorded"),
        ("settings", settings_text(run)),
        ("started at", started_text(run.get("started_at"))),
        ("duration", seconds(float(run.get("seconds") or 0.0))),
        ("batch", printable(str(run.get("batch") or "-"))),
    ]


def how_fast(report: Mapping[str, Any]) -> str:
    jobs = report["jobs"]
    duration = float(report["run"].get("seconds") or 0.0)
    imported = len(analysis.succeeded(jobs))
    bad = sum(job.get("status") in ("failed", "aborted") for job in jobs)
    ended = imported + bad
    rate = imported / duration if duration > 0 else 0.0
    text = (f"{imported} of {len(jobs)} jobs imported in {seconds(duration)}: "
            f"{rate:.2f} imports/s")
    stats = analysis.phase_stats(report)
    if stats and stats[0].phase == "end-to-end":
        text += f", p50 {seconds(stats[0].p50)}, p90 {seconds(stats[0].p90)} per import"
    return text + (f"; {bad} failed or aborted ({percent(bad / ended)})" if ended else "")


def statistics(report: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`.analysis.statistics` and the knee: ``asyncovf report --json``."""
    return {**analysis.statistics(report),
            "knee": asdict(find_knee(analysis.step_stats(report)))}


def knee_sentence(report: Mapping[str, Any]) -> str:
    return find_knee(analysis.step_stats(report)).sentence


LATENCY_HEADER = ("", "count", "p50", "p90", "p95", "p99", "max")


def latency_rows(stats: Sequence[analysis.PhaseStats]) -> list[tuple[str, ...]]:
    return [(s.phase, str(s.count), *(seconds(v) for v in (s.p50, s.p90, s.p95, s.p99, s.max)))
            for s in stats]


STEP_HEADER = ("workers", "from", "jobs", "imports/s", "errors", "p90 end-to-end")


def step_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    return [(str(s.limit), f"{s.start:.1f} s", str(s.jobs), f"{s.imports_per_second:.2f}",
             percent(s.error_rate), seconds(s.p90)) for s in analysis.step_stats(report)]


ERROR_HEADER = ("kind", "count", "sample messages")


def error_rows(report: Mapping[str, Any], width: int = 160) -> list[tuple[str, ...]]:
    return [(printable(e.kind), str(e.count),
             " | ".join(printable(m)[:width] for m in e.samples) or "-")
            for e in analysis.error_table(report)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
           text_last: bool = False) -> list[str]:
    """Columns: the first (and a text last one) left-aligned, numbers right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, len(header) - 1} if text_last else {0}
    return ["  " + "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                             ).rstrip() for row in [header, *rows]]


def text_summary(report: Mapping[str, Any]) -> str:
    """The terminal's report: the three answers, the metadata, then the tables."""
    lines = ["asyncovf load report", "",
             f"How fast:       {how_fast(report)}",
             f"Where it bends: {knee_sentence(report)}",
             "What failed:    " + (f"{sum(e.count for e in analysis.error_table(report))} "
                                   "jobs, by kind below" if analysis.error_table(report)
                                   else "nothing"), ""]
    lines += [f"{label + ':':<12} {value}" for label, value in metadata(report)]
    stats = analysis.phase_stats(report)
    if stats:
        lines += ["", "Latency of the imported jobs (nearest-rank percentiles):",
                  *_table(LATENCY_HEADER, latency_rows(stats))]
    others = analysis.outcome_latencies(report)
    if others:
        lines += ["", "Time to failure (kept out of the percentiles above):",
                  *_table(LATENCY_HEADER, latency_rows(others))]
    lines += ["", "Per concurrency step:", *_table(STEP_HEADER, step_rows(report))]
    errors = error_rows(report, width=100)
    if errors:
        lines += ["", "Errors:", *_table(ERROR_HEADER, errors, text_last=True)]
    return "\n".join(lines) + "\n"


__all__ = ["ERROR_HEADER", "LATENCY_HEADER", "STEP_HEADER", "error_rows", "how_fast",
           "knee_sentence", "latency_rows", "metadata", "percent", "seconds",
           "settings_text", "size", "statistics", "step_rows", "text_summary", "vcenter_text"]
