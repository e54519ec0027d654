"""Pictures of a run report: matplotlib, an optional extra (``asyncovf[report]``).

Imported only when a chart is asked for, so the tool and ``report --json``
work without it. The charts draw the numbers of :mod:`.analysis` and nothing
else; a chart never computes a statistic of its own.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asyncovf.errors import ChartsUnavailable
from asyncovf.loadreport import analysis, summary
from asyncovf.loadreport.knee import find_knee

INSTALL_HINT = "install the report extra: pip install 'asyncovf[report]'"
COLOURS = {"seed": "#c7e9c0", "clone": "#74c476", "spec": "#9ecae1", "import": "#3182bd",
           "lease_wait": "#fdae6b",
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


#: Up to this many jobs the timeline names each VM on its axis; up to
#: :data:`TIMELINE_BARS`, one bar row per job; beyond, a heat map of jobs per phase.
TIMELINE_NAMES = 40
TIMELINE_BARS = 300


def _gantt(ax: Any, report: Mapping[str, Any]) -> None:
    jobs = sorted(report["jobs"], key=lambda j: (j.get("start") is None, j.get("start") or 0))
    if len(jobs) > TIMELINE_BARS:
        _phase_heatmap(ax, report)
        return
    rows: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for row, job in enumerate(jobs):
        for _, phase, start, end in analysis._intervals(job):
            ys, lefts, widths = rows.setdefault(phase, ([], [], []))
            ys.append(row)
            lefts.append(start)
            widths.append(max(end - start, 1e-4))
    for phase in analysis.phase_order(rows):
        ys, lefts, widths = rows[phase]
        ax.barh(ys, widths, left=lefts, height=0.9 if len(jobs) < 100 else 1.0,
                color=COLOURS.get(phase, "#969696"), label=phase, linewidth=0)
    bad = [(row, job) for row, job in enumerate(jobs) if job.get("status") in ("failed",
                                                                                "aborted")]
    if bad:
        ax.scatter([job.get("end") or job.get("start") or 0 for _, job in bad],
                   [row for row, _ in bad], marker="x", color="black", s=16, zorder=3,
                   label="failed/aborted")
    ax.set_ylim(len(jobs), -1)
    if len(jobs) <= TIMELINE_NAMES:
        ax.set_yticks(range(len(jobs)), [str(job.get("name")) for job in jobs],
                      fontsize="small")
    else:
        ax.set_yticks([])
        ax.set_ylabel(f"{len(jobs)} jobs, in the order they started")
    ax.set_xlabel("seconds since the start of the run")
    ax.set_title("Timeline: every job and its phases")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")


def _phase_heatmap(ax: Any, report: Mapping[str, Any]) -> None:
    """Many jobs: how many were in each phase over time (a bar per job would be a smear)."""
    seconds = float(report["run"].get("seconds") or 0.0) or 1.0
    width = max(seconds / 200, 0.01)
    phases = analysis.phase_order({phase for job in report["jobs"]
                                   for _, phase, _, _ in analysis._intervals(job)})
    grid = [[0.0] * max(1, math.ceil(seconds / width)) for _ in phases]
    for job in report["jobs"]:
        for _, phase, start, end in analysis._intervals(job):
            # job-seconds in the bin / bin width = jobs in that phase, on average
            analysis._spread(grid[phases.index(phase)], width, start, end,
                             (end - start) / width)
    columns = max(len(row) for row in grid)
    grid = [row + [0.0] * (columns - len(row)) for row in grid]
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis",
                      extent=(0, columns * width, len(phases) - 0.5, -0.5))
    ax.set_yticks(range(len(phases)), phases, fontsize="small")
    ax.set_xlabel("seconds since the start of the run")
    ax.set_title(f"Timeline of {len(report['jobs'])} jobs: how many are in each phase")
    ax.figure.colorbar(image, ax=ax, label="jobs in the phase", pad=0.01)


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
           color=COLOURS["upload"], label="uploaded")
    bandwidth = (report["run"].get("settings") or {}).get("bandwidth")
    if bandwidth:
        ax.axhline(bandwidth / 2**20, color="black", linestyle="--", linewidth=1,
                   label="--bandwidth")
        ax.legend(fontsize="small")
    ax.set_title(f"Upload throughput (MiB/s, {width:.2g} s bins)")
    # The report keeps each job's bytes, not when each chunk left: a bin can read
    # above --bandwidth where uploads of different speeds overlap.
    ax.set_xlabel("seconds (each job's bytes spread evenly over its upload)")


def _step_lines(ax: Any, report: Mapping[str, Any]) -> None:
    series = analysis.concurrency_series(report)
    if len(series) < 2:
        return
    for start, limit in series[1:]:
        ax.axvline(start, color="grey", linewidth=0.8, linestyle=":")
        ax.annotate(f"{limit}", (start, 1), xycoords=("data", "axes fraction"),
                    fontsize="x-small", color="grey", xytext=(2, -10),
                    textcoords="offset points")


def _rates(ax: Any, report: Mapping[str, Any]) -> None:
    width, imports, errors = analysis.rate_bins(report)
    moments = [i * width for i in range(len(imports))]
    ax.bar(moments, imports, width=width, align="edge", color="#3182bd", label="imports/s")
    ax.bar(moments, errors, width=width, align="edge", bottom=imports, color="#de2d26",
           label="failed or aborted/s")
    _step_lines(ax, report)
    ax.set_title(f"Imports and errors per second ({width:.2g} s bins)")
    ax.set_xlabel("seconds (dotted: a ramp step, its workers)")
    ax.legend(fontsize="small")


def _percentiles(ax: Any, report: Mapping[str, Any]) -> None:
    stats = analysis.phase_stats(report)
    names = [s.phase for s in stats]
    keys = ("p50", "p90", "p95", "p99", "max")
    for offset, key in enumerate(keys):
        ax.bar([i + (offset - 2) * 0.16 for i in range(len(names))],
               [max(getattr(s, key), 1e-4) for s in stats], width=0.16, label=key)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("seconds (log scale)")
    ax.set_title("Latency of the imported jobs")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _errors(ax: Any, report: Mapping[str, Any]) -> None:
    errors = analysis.error_table(report)
    if errors:
        ax.barh([e.kind for e in errors], [e.count for e in errors], color="#de2d26")
        ax.invert_yaxis()
        ax.set_xlabel("jobs")
    else:
        ax.text(0.5, 0.5, "no failed jobs", ha="center", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title("Failed and aborted jobs by kind")


def _steps(ax: Any, report: Mapping[str, Any]) -> None:
    steps = analysis.step_stats(report)
    knee = find_knee(steps)
    labels = [str(s.limit) for s in steps]
    colours = ["#e6550d" if s.limit == knee.limit else "#3182bd" for s in steps]
    ax.bar(labels, [s.imports_per_second for s in steps], color=colours)
    ax.set_xlabel("workers (orange: the knee)")
    ax.set_ylabel("imports/s")
    twin = ax.twinx()
    p90 = [s.p90 if s.p90 is not None else float("nan") for s in steps]
    twin.plot(labels, p90, marker="o", color="black", label="p90 end-to-end")
    twin.set_ylabel("p90 end-to-end, seconds")
    twin.set_ylim(0, max([v for v in p90 if v == v], default=1.0) * 1.3)
    twin.legend(fontsize="small", loc="upper left")
    ax.set_title("Per ramp step: imports/s and p90 latency")


CHARTS = {"timeline": (_gantt, (12, 5)), "rates": (_rates, (6, 3.6)),
          "steps": (_steps, (6, 3.6)), "latency": (_percentiles, (6, 3.6)),
          "in_flight": (_in_flight, (6, 3.6)), "throughput": (_throughput, (6, 3.6)),
          "errors": (_errors, (6, 3.6))}


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
        figure, ax = plt.subplots(figsize=size, dpi=100, layout="constrained")
        try:
            draw(ax, report)
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
    figure = plt.figure(figsize=(14, 5 + 4 * (rows - 1)), dpi=100, layout="constrained")
    grid = figure.add_gridspec(rows, 2)
    try:
        _gantt(figure.add_subplot(grid[0, :]), report)
        for index, name in enumerate(names):
            CHARTS[name][0](figure.add_subplot(grid[1 + index // 2, index % 2]), report)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)


def _html_table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = html.escape
    head = ("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>") if header else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table id="{table_id}">{head}{body}</table>'


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page: the three answers, the metadata, the tables, the charts.

    Static PNGs inline (data URIs): the page opens offline, from a mail or a CI
    artifact, with no script and no CDN.
    """
    images = chart_pngs(report)
    esc = html.escape
    errors = summary.error_rows(report)
    error_part = (_html_table("errors", summary.ERROR_HEADER, errors) if errors
                  else '<p id="errors">No job failed or was aborted.</p>')
    others = analysis.outcome_latencies(report)
    steps = summary.step_rows(report)
    figures = "".join(
        f'<figure class="{"wide" if name == "timeline" else ""}"><img alt="{name}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode()}"></figure>'
        for name, data in images.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>asyncovf load report</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1250px}}
table{{border-collapse:collapse;margin:0.5em 0 1em}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}}
td{{font-variant-numeric:tabular-nums}}img{{max-width:100%}}
.answers p{{font-size:1.1em;margin:0.3em 0;display:flex}}.answers b{{flex:0 0 9em}}
#knee{{background:#fff3e0;padding:0.3em}}
figure{{display:inline-block;margin:0.3em;width:600px;vertical-align:top}}
figure.wide{{width:1200px}}</style></head><body>
<h1>asyncovf load report</h1>
<div class="answers">
<p><b>How fast</b> <span id="how-fast">{esc(summary.how_fast(report))}</span></p>
<p><b>Where it bends</b> <span id="knee">{esc(summary.knee_sentence(report))}</span></p>
<p><b>What failed</b></p>{error_part}
</div>
<h2>Run</h2>
{_html_table("metadata", (), summary.metadata(report))}
<h2>Latency of the imported jobs (nearest-rank percentiles)</h2>
{_html_table("phases", summary.LATENCY_HEADER, summary.latency_rows(analysis.phase_stats(report)))}
{"<h2>Time to failure (kept out of the percentiles above)</h2>"
 + _html_table("failed-latency", summary.LATENCY_HEADER, summary.latency_rows(others))
 if others else ""}
<h2>Per concurrency step</h2>
{_html_table("steps", summary.STEP_HEADER, steps)}
<h2>Charts</h2>
{figures}
</body></html>
"""


__all__ = ["INSTALL_HINT", "chart_pngs", "render_html", "write_png"]
