"""The knee of a ramp, and the text summary that names it: pure, on synthetic ramps."""

from __future__ import annotations

from typing import Any

import pytest

from asyncovf.loadreport import analysis, summary
from asyncovf.loadreport.knee import GAIN_TOLERANCE, LATENCY_TOLERANCE, find_knee


def ramp(steps: list[tuple[int, int, float]], *, failed_at: float | None = None,
         step_seconds: float = 10.0) -> dict[str, Any]:
    """A ramp report: per step (workers, imports that end in it, each job's seconds).

    Jobs start and end within their step; one extra job starts at the very end so
    that the last step's window runs to its end.
    """
    jobs: list[dict[str, Any]] = []
    for index, (_, count, latency) in enumerate(steps):
        begin = index * step_seconds
        for n in range(count):
            start = begin + n * (step_seconds - latency) / max(count, 1)
            jobs.append({"name": f"vm-{len(jobs):04d}", "status": "imported", "start": start,
                         "end": start + latency, "error": None, "error_kind": None,
                         "bytes": 0, "phases": [{"attempt": 1, "phase": "upload",
                                                 "start": start, "end": start + latency}]})
    end = len(steps) * step_seconds
    jobs.append({"name": "late", "status": "failed" if failed_at is None else "imported",
                 "start": end, "end": end + 0.01, "error": "x", "error_kind": "spec",
                 "phases": []})
    return {"version": 1, "jobs": jobs, "totals": {},
            "run": {"seconds": end + 0.01, "concurrency": steps[-1][0],
                    "ramp": {"steps": [s[0] for s in steps], "interval": step_seconds},
                    "concurrency_series": [[i * step_seconds, s[0]]
                                           for i, s in enumerate(steps)]}}


def test_the_tolerances_are_ten_percent_gain_and_one_and_a_half_times_latency() -> None:
    assert (GAIN_TOLERANCE, LATENCY_TOLERANCE) == (0.10, 1.5)


def test_step_rates_count_the_imports_that_ended_in_each_step() -> None:
    steps = analysis.step_stats(ramp([(1, 10, 1.0), (2, 20, 1.0), (4, 30, 2.0)]))
    assert [(s.limit, s.imported, s.imports_per_second, s.p90) for s in steps] == [
        (1, 10, 1.0, 1.0), (2, 20, 2.0, 1.0), (4, 30, 3.0, 2.0)]


def test_a_ramp_bends_where_the_gain_drops_under_ten_percent() -> None:
    # 1.0 → 2.0 → 2.1 imports/s: +100 %, then +5 %; latency flat.
    knee = find_knee(analysis.step_stats(ramp([(1, 10, 1.0), (2, 20, 1.0), (4, 21, 1.0),
                                               (8, 40, 1.0)])))
    assert (knee.limit, knee.reason) == (4, "gain")
    assert knee.sentence == ("knee at 4 workers: imports/s rose only 5 % over 2 workers "
                             "(2.00 → 2.10/s, under the 10 % gain tolerance)")


def test_a_ramp_bends_where_p90_latency_passes_one_and_a_half_times_the_first_step() -> None:
    # Throughput still rises 50 %, but the p90 goes 1.0 → 1.4 → 1.6 s.
    knee = find_knee(analysis.step_stats(ramp([(1, 20, 1.0), (2, 30, 1.4), (4, 45, 1.6)])))
    assert (knee.limit, knee.reason) == (4, "latency")
    assert knee.sentence == ("knee at 4 workers: p90 end-to-end latency reached 1.60 s, "
                             "1.6× the first step's 1.00 s (over the 1.5× tolerance)")


def test_the_first_bend_wins_whichever_rule_finds_it() -> None:
    knee = find_knee(analysis.step_stats(ramp([(1, 10, 1.0), (2, 10, 2.0), (4, 40, 1.0)])))
    assert (knee.limit, knee.reason) == (2, "gain and latency")


def test_a_ramp_that_never_bends_says_how_much_the_last_step_still_gained() -> None:
    knee = find_knee(analysis.step_stats(ramp([(16, 20, 1.0), (32, 40, 1.0), (64, 54, 1.0)])))
    assert knee.limit is None
    assert knee.sentence == "no knee: throughput still rose 35 % at the last step (64 workers)"


def test_a_run_without_a_ramp_has_no_knee_and_says_why() -> None:
    report = ramp([(8, 10, 1.0)])
    assert summary.knee_sentence(report) == ("no knee: no ramp (a fixed 8 workers); "
                                             "run with --ramp to find one")


def test_the_text_summary_rounds_its_numbers_and_prints_no_python_values() -> None:
    report = ramp([(1, 10, 0.0016219999999997903), (2, 21, 1.0), (4, 23, 1.0)])
    report["run"].update({
        "started_at": "2026-12-01T10:00:00.123+00:00", "seconds": 36.299441,
        "tool": {"name": "asyncovf", "version": "9.9"},
        "command": ["asyncovf", "run", "b.yaml", "--password", "***"],
        "vcenter": {"fullName": "VMware vCenter Server 8.0.2 build-1", "version": "8.0.2",
                    "build": "1", "apiVersion": "8.0.2.0"},
        "packages": [{"source": "a.ova", "bytes": 3 * 2**20 + 5}],
        "settings": {"bandwidth": 80 * 2**20}})
    text = summary.text_summary(report)
    assert "0.0016219999" not in text and "36.299441" not in text and "{" not in text
    assert "1.6 ms" in text and "36.3 s" in text
    assert "ramp 1 → 2 → 4 workers, a step every 10 s; bandwidth 80.0 MiB/s" in text
    assert ("vCenter:     VMware vCenter Server 8.0.2 build-1 (version 8.0.2, build 1, "
            "API 8.0.2.0)") in text
    assert "packages:    a.ova (3.0 MiB)" in text and "tool:        asyncovf 9.9" in text
    assert "started at:  2026-12-01 10:00:00 UTC" in text and ".123" not in text
    assert "Where it bends: knee at 2 workers: p90 end-to-end latency reached 1.00 s" in text


def test_the_error_table_groups_by_kind_with_distinct_sample_messages() -> None:
    jobs = [{"status": "failed", "error_kind": "upload", "error": f"NFC answered {code}"}
            for code in (500, 500, 503, 502, 504)]
    jobs += [{"status": "aborted", "error": "interrupted"},
             {"status": "imported", "error": None}]
    table = analysis.error_table({"jobs": jobs})
    assert [(e.kind, e.count) for e in table] == [("upload", 5), ("aborted", 1)]
    assert table[0].samples == ("NFC answered 500", "NFC answered 503", "NFC answered 502")


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "b.yaml", "--password", "hunter2", "--user", "admin"],
     ["run", "b.yaml", "--password", "***", "--user", "admin"]),
    (["run", "--password=hunter2"], ["run", "--password=***"]),
    (["run", "--server", "https://admin:hunter2@vc.example/sdk"],
     ["run", "--server", "https://admin:***@vc.example/sdk"]),
])
def test_the_recorded_command_line_has_no_secrets(argv: list[str], expected: list[str]) -> None:
    from asyncovf.report import redact_argv

    assert redact_argv(argv) == expected
