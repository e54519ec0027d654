"""Pictures of a run report: matplotlib, an optional extra (``asyncovf[report]``).

Imported only when a chart is asked for, so the tool and ``report --json``
work without it. The charts draw the numbers of :mod:`.analysis` and nothing
else; a chart never computes a statistic of its own.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asyncovf.errors import ChartsUnavailable
from asyncovf.loadreport import analysis

INSTALL_HINT = "install the report extra: pip install 'asyncovf[report]'"
COLOURS = {"spec": "#9ecae1", "import": "#3182bd", "lease_wait": "#fdae6b",
           "upload": "#31a354", "complete": "#756bb1", "extra_config": "#bcbddc",
           "inject_ovf_env": "#dadaeb", "upgrade_hardware": "#9e9ac8",
           "mark_as_template": "#636363", "power_on": "#e6550d", "wait_for_ip": "#fd8d3c",
           "abort": "#de2d26"}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChartsUnavailable(INSTALL_HINT) from None
    return plt


def _gantt(ax: Any, report: Mapping[str, Any]) -> None:
    jobs = sorted(report["jobs"], key=lambda j: (j.get("start") is None, j.get("start") or 0))
    rows: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for row, job in enumerate(jobs):
        for _, phase, start, end in analysis._intervals(job):
            ys, lefts, widths = rows.setdefault(phase, ([], [], []))
            ys.append(row)
            lefts.append(start)
            widths.append(max(end - start, 1e-4))
    height = 0.9 if len(jobs) < 200 else 1.0
    for phase in analysis.phase_order(rows):
        ys, lefts, widths = rows[phase]
        ax.barh(ys, widths, left=lefts, height=height, color=COLOURS.get(phase, "#969696"),
                label=phase, linewidth=0)
    bad = [(row, job) for row, job in enumerate(jobs) if job.get("status") in ("failed",
                                                                                "aborted")]
    if bad:
        ax.scatter([job.get("end") or job.get("start") or 0 for _, job in bad],
                   [row for row, _ in bad], marker="x", color="black", s=12, zorder=3,
                   label="failed/aborted")
    ax.set_ylim(len(jobs), -1)
    ax.set_ylabel(f"jobs ({len(jobs)}, by start)")
    ax.set_xlabel("seconds since the start of the run")
    ax.set_title("Timeline: every job, its phases")
    ax.legend(loc="upper right", fontsize="small", ncol=4)
    if len(jobs) > 40:
        ax.set_yticks([])


def _in_flight(ax: Any, report: Mapping[str, Any]) -> None:
    series = analysis.in_flight_series(report)
    end = float(report["run"].get("seconds") or series[-1][0])
    ax.step([t for t, _ in series] + [end], [n for _, n in series] + [series[-1][1]],
            where="post", label="in flight")
    limits = analysis.concurrency_series(report)
    ax.step([t for t, _ in limits] + [end], [n for _, n in limits] + [limits[-1][1]],
            where="post", linestyle="--", color="grey", label="concurrency limit")
    ax.set_title("Imports in flight")
    ax.set_xlabel("seconds")
    ax.legend(fontsize="small")


def _throughput(ax: Any, report: Mapping[str, Any]) -> None:
    width, bins = analysis.throughput_bins(report)
    ax.bar([i * width for i in range(len(bins))], bins, width=width, align="edge",
           color=COLOURS["upload"])
    ax.set_title(f"Upload throughput (MiB/s, {width:.2g} s bins)")
    ax.set_xlabel("seconds")


def _percentiles(ax: Any, report: Mapping[str, Any]) -> None:
    stats = analysis.phase_stats(report)
    names = [s.phase for s in stats]
    for offset, (label, values) in enumerate((
            ("p50", [s.p50 for s in stats]), ("p90", [s.p90 for s in stats]),
            ("p99", [s.p99 for s in stats]), ("max", [s.max for s in stats]))):
        ax.bar([i + offset * 0.2 - 0.3 for i in range(len(names))], values, width=0.2,
               label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("seconds")
    ax.set_title("Latency per phase")
    ax.legend(fontsize="small")


def _errors(ax: Any, report: Mapping[str, Any]) -> None:
    errors = analysis.errors_by_kind(report)
    if errors:
        ax.barh(list(errors), list(errors.values()), color="#de2d26")
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no failed jobs", ha="center", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("Failed jobs by error kind")


def _steps(ax: Any, report: Mapping[str, Any]) -> None:
    steps = analysis.step_stats(report)
    phases = analysis.phase_order({p for s in steps for p in s.median})
    for phase in phases:
        points = [(s.limit, s.median[phase]) for s in steps if phase in s.median]
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=phase,
                color=COLOURS.get(phase))
    ax.set_xlabel("concurrency limit when the job started")
    ax.set_ylabel("median seconds")
    ax.set_title("Where latency bends: median phase latency per concurrency step")
    ax.legend(fontsize="small")


CHARTS = {"timeline": (_gantt, (12, 6)), "in_flight": (_in_flight, (6, 3.5)),
          "throughput": (_throughput, (6, 3.5)), "latency": (_percentiles, (6, 3.5)),
          "errors": (_errors, (6, 3.5)), "steps": (_steps, (6, 3.5))}


def _wanted(report: Mapping[str, Any]) -> list[str]:
    names = list(CHARTS)
    if len(analysis.concurrency_series(report)) < 2:
        names.remove("steps")
    return names


def chart_pngs(report: Mapping[str, Any]) -> dict[str, bytes]:
    """Each chart as PNG bytes, by name."""
    plt = _pyplot()
    images = {}
    for name in _wanted(report):
        draw, size = CHARTS[name]
        figure, ax = plt.subplots(figsize=size, dpi=100)
        try:
            draw(ax, report)
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            images[name] = buffer.getvalue()
        finally:
            plt.close(figure)
    return images


def write_png(report: Mapping[str, Any], path: str | Path) -> None:
    """All charts in one figure: the timeline across the top, the others below."""
    plt = _pyplot()
    names = _wanted(report)[1:]
    rows = 1 + (len(names) + 1) // 2
    figure = plt.figure(figsize=(14, 5 + 4 * (rows - 1)), dpi=100)
    grid = figure.add_gridspec(rows, 2)
    try:
        _gantt(figure.add_subplot(grid[0, :]), report)
        for index, name in enumerate(names):
            CHARTS[name][0](figure.add_subplot(grid[1 + index // 2, index % 2]), report)
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page: run facts, the charts inline, the tables."""
    images = chart_pngs(report)
    stats = analysis.statistics(report)
    run = report["run"]
    totals = report["totals"]
    esc = html.escape
    facts = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in (
        ("batch", run.get("batch")), ("started at", run.get("started_at")),
        ("seconds", run.get("seconds")), ("concurrency", run.get("ramp") or
                                          run.get("concurrency")),
        ("jobs", stats["jobs"]), ("statuses", ", ".join(
            f"{n} {s}" for s, n in stats["statuses"].items())),
        ("imports/s", totals.get("imports_per_second")),
        ("SOAP calls per import", totals.get("soap_calls_per_import")),
        ("max in flight", stats["max_in_flight"])))
    phase_rows = "".join(
        f"<tr><td>{esc(p['phase'])}</td><td>{p['count']}</td>"
        + "".join(f"<td>{p[k]:.3f}</td>" for k in ("p50", "p90", "p99", "max")) + "</tr>"
        for p in stats["phases"])
    error_rows = "".join(f"<tr><td>{esc(kind)}</td><td>{count}</td></tr>"
                         for kind, count in stats["errors_by_kind"].items()) \
        or "<tr><td colspan=2>no failed jobs</td></tr>"
    step_phases = analysis.phase_order({p for step in stats["steps"] for p in step["median"]})
    step_rows = "".join(
        f"<tr><td>{step['limit']}</td><td>{step['start']:.1f}</td><td>{step['jobs']}</td>"
        + "".join(f"<td>{step['median'][p]:.3f}</td>" if p in step["median"] else "<td></td>"
                  for p in step_phases) + "</tr>"
        for step in stats["steps"]) if len(stats["steps"]) > 1 else ""
    steps_table = (
        "<h2>Median latency per concurrency step (seconds)</h2><table id=\"steps\"><tr>"
        "<th>limit</th><th>from s</th><th>jobs</th>"
        + "".join(f"<th>{esc(p)}</th>" for p in step_phases) + f"</tr>{step_rows}</table>"
        if step_rows else "")
    pictures = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"></figure>' for name, data in images.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>asyncovf run report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}img{{max-width:100%}}
figure{{display:inline-block;margin:0.5em}}</style></head><body>
<h1>asyncovf run report</h1>
<table>{facts}</table>
<h2>Latency per phase (seconds, nearest-rank percentiles)</h2>
<table id="phases"><tr><th>phase</th><th>count</th><th>p50</th><th>p90</th><th>p99</th>
<th>max</th></tr>{phase_rows}</table>
<h2>Failed jobs by error kind</h2>
<table id="errors"><tr><th>kind</th><th>jobs</th></tr>{error_rows}</table>
{steps_table}
<h2>Charts</h2>
{pictures}
</body></html>
"""


__all__ = ["INSTALL_HINT", "chart_pngs", "render_html", "write_png"]
