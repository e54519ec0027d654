"""``--threshold``: expressions parsed strictly, judged on hand-made run reports, and the
one error rate (failed over finished, input errors excluded) the engine shares."""

from __future__ import annotations

from typing import Any

import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.error_rate import error_rate
from asyncovf.errors import UsageError
from asyncovf.loadreport.thresholds import (
    ThresholdError,
    evaluate,
    parse_threshold,
    report_error_rate,
)


@pytest.mark.parametrize(("text", "metric", "op", "limit", "phase", "rank"), [
    ("p95(upload)<30s", "latency", "<", 30.0, "upload", 95.0),
    ("p50(lease_wait) <= 250ms", "latency", "<=", 0.25, "lease_wait", 50.0),
    ("max(job)>=2", "latency", ">=", 2.0, "job", 100.0),
    ("p99.9(complete)<.5s", "latency", "<", 0.5, "complete", 99.9),
    ("error_rate<1%", "error_rate", "<", 0.01, None, None),
    ("error_rate<=0.05", "error_rate", "<=", 0.05, None, None),
    ("imports_per_s>5", "imports_per_s", ">", 5.0, None, None),
])
def test_a_threshold_parses_into_its_metric_operator_and_limit_in_base_units(
    text: str, metric: str, op: str, limit: float, phase: str | None, rank: float | None,
) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.op, threshold.phase, threshold.rank) == (
        metric, op, phase, rank)
    assert threshold.limit == pytest.approx(limit)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "expected METRIC OP VALUE"),
    ("p95(upload)", "expected METRIC OP VALUE"),
    ("p95(upload)=3s", "expected METRIC OP VALUE"),
    ("p95(upload)<fast", "expected METRIC OP VALUE"),
    ("p95(uplod)<30s", "unknown phase 'uplod'"),
    ("p95<30s", "p95 of what?"),
    ("p0(upload)<1s", "above p0"),
    ("p101(upload)<1s", "at most p100"),
    ("median(upload)<1s", "unknown metric 'median'"),
    ("p95(upload)<30min", "unit 'min' does not fit p95"),
    ("error_rate<1s", "unit 's' does not fit error_rate"),
    ("error_rate(upload)<1%", "error_rate takes no phase"),
    ("imports_per_s>5%", "unit '%' does not fit imports_per_s"),
])
def test_a_malformed_threshold_is_a_usage_error_naming_the_flag_and_the_fault(
    text: str, reason: str,
) -> None:
    with pytest.raises(ThresholdError) as caught:
        parse_threshold(text)
    assert isinstance(caught.value, UsageError)
    assert str(caught.value).startswith(f"--threshold {text!r}: ")
    assert reason in caught.value.reason
    assert "\n" not in str(caught.value)


def job(name: str, status: str, *, start: float = 0.0, end: float = 1.0,
        upload: float | None = None, error_kind: str | None = None,
        **extra: Any) -> dict[str, Any]:
    phases = [] if upload is None else [{"attempt": 1, "phase": "upload", "start": start,
                                         "end": start + upload}]
    return {"name": name, "status": status, "start": start, "end": end, "phases": phases,
            "error_kind": error_kind, **extra}


def report(*jobs: dict[str, Any], seconds: float = 10.0) -> dict[str, Any]:
    return {"version": 1, "run": {"seconds": seconds}, "jobs": list(jobs), "totals": {}}


def verdicts(data: dict[str, Any], *texts: str) -> list[tuple[bool, float | None]]:
    return [(v.passed, v.value) for v in evaluate(data, [parse_threshold(t) for t in texts])]


def test_error_rate_counts_failed_over_finished_and_leaves_input_errors_and_aborts_out() -> None:
    data = report(job("a", "imported"), job("b", "imported"), job("c", "skipped"),
                  job("d", "failed", error_kind="upload"),
                  job("e", "failed", error_kind="input"),    # refused: its placement
                  job("f", "failed", error_kind="package"),  # refused: its source
                  job("g", "failed", error_kind="manifest", input_error=True),
                  job("h", "aborted", error_kind="not started"))
    rate = report_error_rate(data)
    assert (rate.failed, rate.finished) == (1, 4)
    assert verdicts(data, "error_rate<30%", "error_rate<25%", "error_rate<=0.25") == [
        (True, 0.25), (False, 0.25), (True, 0.25)]


def test_a_recorded_input_error_flag_wins_over_the_error_kind() -> None:
    # An InputError raised after vCenter was touched is vCenter's failure.
    data = report(job("a", "failed", error_kind="input", input_error=False),
                  job("b", "imported"))
    assert report_error_rate(data).ratio == 0.5


def test_the_engine_and_the_report_reader_share_one_error_rate() -> None:
    outcomes = [(JobStatus.IMPORTED, False), (JobStatus.FAILED, False),
                (JobStatus.FAILED, True), (JobStatus.ABORTED, False), ("skipped", False)]
    assert (error_rate(outcomes).failed, error_rate(outcomes).finished) == (1, 3)
    assert error_rate([]).ratio is None
    assert str(error_rate(outcomes)) == "33.33% (1 failed of 3 finished)"


def test_latency_thresholds_read_nearest_rank_percentiles_of_a_phase_and_of_whole_jobs() -> None:
    data = report(*(job(f"vm{i}", "imported", start=0.0, end=float(i + 1), upload=i / 10)
                    for i in range(10)),
                  job("refused", "failed", error_kind="input", start=5.0, end=5.0))
    assert verdicts(data, "p50(upload)<0.5s", "p90(upload)<800ms", "max(upload)<=0.9",
                    "p95(job)<10s", "max(job)<10s", "p50(job)>4.9") == [
        (True, 0.4), (False, pytest.approx(0.8)), (True, 0.9), (False, 10.0), (False, 10.0),
        (True, 5.0)]


def test_imports_per_second_are_the_imported_jobs_over_the_runs_seconds() -> None:
    data = report(job("a", "imported"), job("b", "imported"), job("c", "failed"),
                  seconds=4.0)
    assert verdicts(data, "imports_per_s>=0.5", "imports_per_s>0.5") == [
        (True, 0.5), (False, 0.5)]


def test_a_threshold_with_nothing_to_measure_fails_and_says_so() -> None:
    data = report(job("a", "failed", error_kind="input"))
    [upload, rate] = evaluate(data, [parse_threshold("p95(upload)<30s"),
                                     parse_threshold("error_rate<1%")])
    assert not upload.passed and upload.value is None
    assert upload.describe() == ("threshold p95(upload)<30s failed: nothing to measure "
                                 "(no upload in the report)")
    assert not rate.passed and "0 failed of 0 finished" in rate.describe()


def test_a_verdict_shows_the_value_in_the_unit_the_threshold_was_written_in() -> None:
    data = report(job("a", "imported", upload=1.5), job("b", "failed", error_kind="upload"))
    [ms, percent] = evaluate(data, [parse_threshold("max(upload)<1000ms"),
                                    parse_threshold("error_rate<1%")])
    assert ms.describe() == "threshold max(upload)<1000ms failed: 1500ms (1 samples)"
    assert percent.describe() == "threshold error_rate<1% failed: 50% (1 failed of 2 finished)"


def test_a_jobs_latency_threshold_reads_the_imported_jobs_as_the_report_does() -> None:
    # The report's end-to-end percentiles leave failed jobs out; so does p95(job): the
    # failed job's 100 s would otherwise fail a bound that every import met.
    data = report(job("a", "imported", end=10.0), job("b", "imported", end=20.0),
                  job("c", "failed", end=100.0))
    assert verdicts(data, "max(job)<50s") == [(True, 20.0)]
