"""The load-test statistics: pure functions of a run report, checked on hand-made runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncovf.engine.ramp import parse_ramp
from asyncovf.loadreport import analysis

ROOT = Path(__file__).resolve().parents[2]


def job(name: str, status: str, phases: list[tuple[str, float, float]], *, attempt: int = 1,
        size: int = 0, kind: str | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "bytes": size, "error_kind": kind,
            "start": phases[0][1], "end": phases[-1][2],
            "phases": [{"attempt": attempt, "phase": p, "start": s, "end": e}
                       for p, s, e in phases]}


def run(jobs: list[dict[str, Any]], seconds: float, series: Any = None) -> dict[str, Any]:
    return {"version": 1, "run": {"seconds": seconds, "concurrency": 2,
                                  "concurrency_series": series}, "jobs": jobs, "totals": {}}


@pytest.mark.parametrize(("values", "p", "expected"), [
    ([5.0], 99, 5.0), ([3.0, 1.0, 2.0], 50, 2.0), (list(map(float, range(1, 101))), 90, 90.0),
    (list(map(float, range(1, 101))), 99, 99.0), ([1.0, 2.0], 50, 1.0), ([1.0, 2.0], 51, 2.0),
])
def test_percentiles_are_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert analysis.percentile(values, p) == expected


def test_percentiles_describe_the_imported_jobs_and_every_attempt_of_them() -> None:
    report = run([job("a", "imported", [("spec", 0, 1), ("upload", 1, 3)]),
                  {**job("b", "imported", [("spec", 0, 2), ("upload", 2, 4)]),
                   "phases": [{"attempt": 1, "phase": "upload", "start": 0, "end": 0.5},
                              {"attempt": 2, "phase": "upload", "start": 0.5, "end": 4}]},
                  # failed after 0.5 s, aborted after 100 s: neither is a latency of success
                  job("c", "failed", [("spec", 0, 0.2), ("upload", 0.2, 0.5)]),
                  job("d", "aborted", [("spec", 0, 50), ("upload", 50, 100), ("abort", 100, 101)])],
                 101)
    stats = {s.phase: s for s in analysis.phase_stats(report)}
    assert list(stats) == ["end-to-end", "spec", "upload"]
    assert (stats["end-to-end"].count, stats["end-to-end"].p50,
            stats["end-to-end"].max) == (2, 3, 4)
    assert (stats["spec"].count, stats["spec"].max) == (1, 1)
    assert (stats["upload"].count, stats["upload"].p50, stats["upload"].max) == (3, 2, 3.5)
    others = {s.phase: s for s in analysis.outcome_latencies(report)}
    assert (others["failed"].count, others["failed"].max) == (1, 0.5)
    assert (others["aborted"].count, others["aborted"].max) == (1, 101)


def test_p95_is_nearest_rank_too() -> None:
    stats = analysis.latency_stats("x", [float(v) for v in range(1, 21)])
    assert (stats.p50, stats.p90, stats.p95, stats.p99, stats.max) == (10, 18, 19, 20, 20)


def test_in_flight_counts_a_handover_as_one_job_not_two() -> None:
    report = run([job("a", "imported", [("spec", 0, 1)]), job("b", "imported", [("spec", 1, 2)]),
                  job("c", "imported", [("spec", 0.5, 1.5)])], 2)
    assert analysis.in_flight_series(report) == [(0.0, 1), (0.5, 2), (1.0, 2), (1.5, 1),
                                                 (2.0, 0)]
    assert analysis.max_in_flight(report) == 2


def test_throughput_bins_add_up_to_the_bytes_uploaded() -> None:
    mib = 2**20
    report = run([job("a", "imported", [("upload", 0.0, 1.0)], size=3 * mib),
                  job("b", "imported", [("upload", 0.3, 0.7)], size=mib),
                  # a retried job: only its last attempt's upload carried its bytes
                  {**job("c", "imported", [("upload", 0.0, 0.2)], size=mib),
                   "phases": [{"attempt": 1, "phase": "upload", "start": 0.0, "end": 0.9},
                              {"attempt": 2, "phase": "upload", "start": 0.9, "end": 1.0}]}],
                 1.0)
    width, bins = analysis.throughput_bins(report, 0.1)
    assert width == 0.1 and len(bins) == 10
    assert sum(bins) * width == pytest.approx(5.0)
    assert bins[0] == pytest.approx(3.0)  # only 'a' (3 MiB over 1 s) in [0, 0.1)
    assert bins[4] == pytest.approx(3.0 + 2.5)  # and 'b' (1 MiB over 0.4 s)
    assert bins[9] == pytest.approx(3.0 + 10.0)  # and 'c's last attempt (1 MiB in 0.1 s)


def test_steps_group_jobs_by_the_limit_in_force_when_they_started() -> None:
    series = [[0, 2], [10, 4], [20, 8]]
    report = run([job("a", "imported", [("upload", 1, 2)]), job("b", "imported",
                                                                [("upload", 11, 14)]),
                  job("c", "imported", [("upload", 12, 13)]), job("d", "imported",
                                                                  [("upload", 21, 30)])],
                 30, series)
    assert analysis.limit_at(analysis.concurrency_series(report), 10) == 4
    steps = analysis.step_stats(report)
    assert [(s.limit, s.start, s.jobs, s.median["upload"]) for s in steps] == \
        [(2, 0, 1, 1), (4, 10, 2, 1), (8, 20, 1, 9)]


def test_errors_by_kind_count_failed_jobs_only() -> None:
    report = run([job("a", "failed", [("upload", 0, 1)], kind="upload"),
                  job("b", "failed", [("spec", 0, 1)], kind="InvalidState"),
                  job("c", "failed", [("upload", 0, 1)], kind="upload"),
                  job("d", "aborted", [("upload", 0, 1)], kind="upload")], 1)
    assert analysis.errors_by_kind(report) == {"upload": 2, "InvalidState": 1}


@pytest.mark.parametrize(("text", "steps"), [
    ("4:64", (4, 8, 16, 32, 64)), ("3:20", (3, 6, 12, 20)), ("4:64:20", (4, 24, 44, 64)),
    ("2,4,8,24", (2, 4, 8, 24)), ("5:5", (5,)),
])
def test_ramp_schedules(text: str, steps: tuple[int, ...]) -> None:
    assert parse_ramp(text) == steps


@pytest.mark.parametrize(("text", "message"), [
    ("8:4", "expected FROM:TO"), ("0:4", "expected FROM:TO"), ("4", "expected FROM:TO"),
    ("a:b", "expected FROM:TO"), ("4,2", "above the one before"), ("0,2", "at least 1"),
])
def test_bad_ramp_schedules_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ramp(text)


@pytest.mark.parametrize(("content", "message"), [
    (None, ": No such file or directory"),
    ("{", ":1: not JSON (Expecting property name"),
    ("[]", ": not an asyncovf run report (expected a JSON object with 'jobs'"),
    ('{"jobs": []}', ": report version None; this asyncovf reads version 1"),
    ('{"version": 9, "run": {}, "jobs": [], "totals": {}}',
     ": report version 9; this asyncovf reads version 1"),
    ('{"version": 1, "run": {}, "jobs": {}, "totals": {}}', ": 'jobs' is dict, expected a list"),
    ('{"version": 1, "jobs": []}', ": not a whole run report: 'run' and 'totals' missing"),
], ids=["missing", "not-json", "not-an-object", "no-version", "newer-version", "jobs-not-a-list",
        "cleanup-would-read-it"])
def test_the_report_command_refuses_what_is_not_a_run_report(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    html = tmp_path / "out.html"
    done = subprocess.run([sys.executable, "-m", "asyncovf", "report", str(path), "--html",
                           str(html)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    # Worded as 'asyncovf cleanup' words them: one reader of the schema (report.py).
    assert done.stderr.startswith(f"asyncovf: error: {path}{message}"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert not html.exists()


def test_the_report_command_prints_a_text_summary_without_any_file_option(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(run([job("a", "imported", [("spec", 0, 1)])], 1)))
    done = subprocess.run([sys.executable, "-m", "asyncovf", "report", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "How fast:       1 of 1 jobs imported in 1 s: 1.00 imports/s" in done.stdout
    assert "Where it bends: no knee: no ramp (a fixed 2 workers)" in done.stdout
    assert "{" not in done.stdout  # words and rounded numbers, not the JSON
    stats_file = tmp_path / "stats.json"
    done = subprocess.run([sys.executable, "-m", "asyncovf", "report", str(path), "--json",
                           str(stats_file)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    stats = json.loads(stats_file.read_text())
    assert stats["phases"][1] == {"phase": "spec", "count": 1, "p50": 1, "p90": 1, "p95": 1,
                                  "p99": 1, "max": 1}
