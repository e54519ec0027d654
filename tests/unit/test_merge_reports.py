"""``asyncovf report r-1.json r-2.json``: the shards of one batch read as one run."""

from __future__ import annotations

from typing import Any

import pytest

from asyncovf.errors import InputError
from asyncovf.loadreport.merge import MergeError, merge_reports
from asyncovf.loadreport.thresholds import evaluate, parse_threshold


def shard(number: int, names: list[str], *, started_at: str, seconds: float,
          total: int = 2, batch: str = "/srv/fleet.yaml", failed: int = 0,
          concurrency: int = 2) -> dict[str, Any]:
    jobs = [{"name": name, "status": "failed" if i < failed else "imported", "worker": i % 2 + 1,
             "start": float(i), "end": float(i) + 1.0, "bytes": 100,
             "phases": [{"attempt": 1, "phase": "upload", "start": float(i),
                         "end": float(i) + 0.5}],
             "error_kind": "upload" if i < failed else None}
            for i, name in enumerate(names)]
    imported = len(names) - failed
    return {
        "version": 1,
        "run": {"batch": batch, "started_at": started_at, "seconds": seconds,
                "concurrency": concurrency, "shard": f"{number}/{total}", "interrupted": None,
                "dry_run": False, "ramp": None, "concurrency_series": [[0.0, concurrency]]},
        "jobs": jobs,
        "totals": {"jobs": len(names), "imported": imported, "skipped": 0, "failed": failed,
                   "aborted": 0, "bytes": 100 * imported, "attempts": len(names),
                   "seconds": seconds, "imports_per_second": imported / seconds,
                   "sessions_opened": concurrency, "sessions_closed": concurrency,
                   "soap_calls": {"Login": concurrency, "ImportVApp": len(names)},
                   "soap_calls_per_import": 1.0,
                   "errors_by_kind": {"upload": failed} if failed else {}},
    }


FIRST = shard(1, ["vm-a", "vm-c"], started_at="2026-12-01T10:00:00+00:00", seconds=4.0)
SECOND = shard(2, ["vm-b", "vm-d"], started_at="2026-12-01T10:00:03+00:00", seconds=5.0,
               failed=1, batch="/mnt/other/fleet.yaml")


def test_merged_shards_sum_their_totals_and_recompute_the_rates_over_the_whole_run() -> None:
    merged = merge_reports([SECOND, FIRST], ["r-2.json", "r-1.json"])
    totals = merged["totals"]
    assert {key: totals[key] for key in ("jobs", "imported", "skipped", "failed", "aborted",
                                         "bytes", "attempts", "sessions_opened")} == {
        "jobs": 4, "imported": 3, "skipped": 0, "failed": 1, "aborted": 0, "bytes": 300,
        "attempts": 4, "sessions_opened": 4}
    assert totals["soap_calls"] == {"ImportVApp": 4, "Login": 4}
    assert totals["errors_by_kind"] == {"upload": 1}
    # The second shard started 3 s after the first and ran 5 s: 8 s in all.
    assert merged["run"]["seconds"] == totals["seconds"] == 8.0
    assert totals["imports_per_second"] == round(3 / 8, 3)
    assert totals["soap_calls_per_import"] == round(8 / 3, 2)


def test_merged_shards_are_on_the_earliest_shards_clock() -> None:
    merged = merge_reports([SECOND, FIRST])
    run = merged["run"]
    assert run["started_at"] == "2026-12-01T10:00:00.000+00:00"
    assert run["shard"] is None and run["shards"] == ["1/2", "2/2"]
    assert run["concurrency"] == 4
    assert run["concurrency_series"] == [[0.0, 2], [3.0, 4]]
    jobs = {job["name"]: job for job in merged["jobs"]}
    assert [job["name"] for job in merged["jobs"]] == ["vm-a", "vm-c", "vm-b", "vm-d"]
    assert (jobs["vm-b"]["start"], jobs["vm-b"]["end"]) == (3.0, 4.0)
    assert jobs["vm-d"]["phases"] == [{"attempt": 1, "phase": "upload", "start": 4.0,
                                       "end": 4.5}]
    assert (jobs["vm-a"]["start"], jobs["vm-c"]["start"]) == (0.0, 1.0)
    # No two shards share a worker number: a timeline by worker does not overlap them.
    assert {jobs["vm-a"]["worker"], jobs["vm-c"]["worker"]} == {1, 2}
    assert {jobs["vm-b"]["worker"], jobs["vm-d"]["worker"]} == {3, 4}
    # The inputs are left as they were.
    assert SECOND["jobs"][0]["start"] == 0.0 and SECOND["jobs"][0]["worker"] == 1


def test_thresholds_judge_the_merged_run_as_one() -> None:
    merged = merge_reports([FIRST, SECOND])
    [rate, speed] = evaluate(merged, [parse_threshold("error_rate<30%"),
                                      parse_threshold("imports_per_s>0.3")])
    assert rate.passed and rate.value == 0.25
    assert speed.passed and speed.value == 3 / 8


def test_some_of_the_shards_merge_and_say_which() -> None:
    third = shard(3, ["vm-e"], started_at="2026-12-01T09:59:59+00:00", seconds=1.0, total=3)
    first = shard(1, ["vm-a"], started_at="2026-12-01T10:00:00+00:00", seconds=1.0, total=3)
    run = merge_reports([first, third])["run"]
    assert run["shard"] == "1+3/3" and run["started_at"] == "2026-12-01T09:59:59.000+00:00"


def test_one_report_merges_into_itself() -> None:
    assert merge_reports([FIRST]) == FIRST


@pytest.mark.parametrize(("reports", "message"), [
    ([FIRST, shard(2, ["vm-b"], started_at="2026-12-01T10:00:00+00:00", seconds=1.0,
                   batch="other.yaml")],
     "not the shards of one batch: r-1.json ran '/srv/fleet.yaml', r-2.json ran 'other.yaml'"),
    ([FIRST, shard(2, ["vm-b"], started_at="2026-12-01T10:00:00+00:00", seconds=1.0,
                   total=3)],
     "not the shards of one batch: r-1.json is shard 1/2, r-2.json is shard 2/3"),
    ([FIRST, shard(1, ["vm-b"], started_at="2026-12-01T10:00:00+00:00", seconds=1.0)],
     "r-2.json and r-1.json are both shard 1/2"),
    ([FIRST, shard(2, ["vm-c"], started_at="2026-12-01T10:00:00+00:00", seconds=1.0)],
     "r-2.json and r-1.json both have a job 'vm-c'"),
    ([FIRST, {**SECOND, "run": {**SECOND["run"], "shard": None}}],
     "r-2.json: not a shard (run.shard is None)"),
    ([FIRST, {**SECOND, "run": {**SECOND["run"], "started_at": "yesterday"}}],
     "r-2.json: run.started_at 'yesterday' is not a time"),
    ([], "no run reports to merge"),
])
def test_reports_that_are_not_one_batchs_shards_are_refused_with_one_error(
    reports: list[dict[str, Any]], message: str,
) -> None:
    with pytest.raises(MergeError) as caught:
        merge_reports(reports, ["r-1.json", "r-2.json"][:len(reports)])
    assert isinstance(caught.value, InputError)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_shards_line_up_to_the_millisecond() -> None:
    later = shard(2, ["vm-b"], started_at="2026-12-01T10:00:00.250+00:00", seconds=1.0)
    merged = merge_reports([FIRST, later])
    assert merged["run"]["started_at"] == "2026-12-01T10:00:00.000+00:00"
    jobs = {job["name"]: job for job in merged["jobs"]}
    assert jobs["vm-b"]["start"] == 0.25


def test_merged_shards_keep_every_shard_s_seeds_for_the_cleanup_to_find() -> None:
    from asyncovf.report import parse_report

    first = {**FIRST, "seeds": [{"name": "vm-a-seed-1", "vm": "vm-10", "status": "kept"}]}
    second = {**SECOND, "seeds": [{"name": "vm-b-seed-2", "vm": "vm-20", "status": "kept"}]}
    merged = merge_reports([first, second], ["r-1.json", "r-2.json"])
    assert [seed["name"] for seed in merged["seeds"]] == ["vm-a-seed-1", "vm-b-seed-2"]
    targets = parse_report({**merged, "jobs": []}, file="merged.json").targets
    assert [target.vm for target in targets] == ["vm-10", "vm-20"]
