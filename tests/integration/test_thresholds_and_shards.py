"""A load test's verdict and its shards, end to end against the simulator.

``asyncovf run --threshold`` exits 3 when a threshold fails and 0 when all
hold; the error rate leaves jobs refused for their input out. A batch run as
two shards, their reports merged, has the totals of the same batch run whole.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncovf.loadreport.merge import merge_reports
from tests.faults.support import ROOT, FaultRun, cli_environment, job_name, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: The totals that count jobs, not time: what a merge must reproduce exactly.
COUNTED = ("jobs", "imported", "skipped", "failed", "aborted", "bytes", "attempts")


def write_batch(run: FaultRun, directory: Path, *, count: int, broken: bool = False) -> Path:
    """``count`` VMs named as :func:`job_name` (1 to ``count``); with ``broken``, one more
    whose datastore does not exist (refused for its input, before vCenter is touched)."""
    text = (f"defaults:\n  source: {run.package_path}\n  cluster: DC0_C0\n"
            f"  datastore: LocalDS_0\nvms:\n"
            f'  - name: "{run.prefix}-{{index:03d}}"\n    count: {count}\n')
    if broken:
        text += f'  - name: "{run.prefix}-broken"\n    datastore: nope\n'
    batch = directory / "fleet.yaml"
    batch.write_text(text)
    return batch


def fail_upload_of(run: FaultRun, index: int) -> dict[str, Any]:
    """An NFC rule that fails every upload of job ``index``: the job fails on vCenter's side."""
    return {"vm": job_name(run, index), "status": 500, "after_bytes": 1000}


NO_RETRIES = ("--job-retries", "0", "--upload-retries", "0")


async def test_a_failing_threshold_exits_3_and_says_which_on_one_line(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    await fault_run.set_faults(nfc=[fail_upload_of(fault_run, 1)])
    batch = write_batch(fault_run, tmp_path, count=4)
    status, _, stderr = await run_cli(fault_run, batch, *NO_RETRIES,
                                      "--threshold", "error_rate<1%",
                                      "--threshold", "max(job)<3600s")
    assert status == 3, stderr  # a failed job alone is 1; the threshold comes first
    assert verdict_lines(stderr) == ["asyncovf: threshold error_rate<1% failed: 25% "
                       "(1 failed of 4 finished)"]
    await fault_run.check_invariants(imported={job_name(fault_run, i) for i in (2, 3, 4)})


async def test_thresholds_that_hold_exit_0_and_print_nothing(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    batch = write_batch(fault_run, tmp_path, count=3)
    status, _, stderr = await run_cli(fault_run, batch, "--threshold", "error_rate<1%",
                                      "--threshold", "p99(upload)<3600s",
                                      "--threshold", "imports_per_s>0")
    assert status == 0, stderr
    assert not verdict_lines(stderr)
    await fault_run.check_invariants(imported={job_name(fault_run, i) for i in (1, 2, 3)})


async def test_a_job_refused_for_its_input_is_not_in_the_error_rate(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    batch = write_batch(fault_run, tmp_path, count=2, broken=True)
    status, _, stderr = await run_cli(fault_run, batch, "--threshold", "error_rate<1%")
    assert status == 1, stderr  # the broken job failed; the threshold held
    assert not verdict_lines(stderr)
    await fault_run.check_invariants(imported={job_name(fault_run, i) for i in (1, 2)})


async def test_two_merged_shards_have_the_totals_of_the_same_batch_run_whole(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    # One job failing on vCenter's side, one refused for its input, the rest imported.
    await fault_run.set_faults(nfc=[fail_upload_of(fault_run, 3)])
    batch = write_batch(fault_run, tmp_path, count=5, broken=True)
    whole = tmp_path / "whole.json"
    status, _, stderr = await run_cli(fault_run, batch, *NO_RETRIES, "--report", str(whole))
    assert status == 1, stderr
    await remove_what_it_created(fault_run, whole)

    shards = [tmp_path / "r-1.json", tmp_path / "r-2.json"]
    for number, report in enumerate(shards, start=1):
        status, _, stderr = await run_cli(fault_run, batch, *NO_RETRIES, "--shard",
                                          f"{number}/2", "--report", str(report))
        assert status == 1, stderr  # shard 1 fails job 3 on vCenter, shard 2 refuses the broken one
    merged = merge_reports([json.loads(path.read_text()) for path in reversed(shards)],
                           [str(path) for path in reversed(shards)])

    one = json.loads(whole.read_text())
    assert {key: merged["totals"][key] for key in COUNTED} == {
        key: one["totals"][key] for key in COUNTED}
    assert merged["totals"]["errors_by_kind"] == one["totals"]["errors_by_kind"]
    assert outcomes(merged) == outcomes(one)
    assert merged["totals"]["imported"] == 4 and merged["totals"]["failed"] == 2
    assert merged["run"]["shard"] is None and merged["run"]["shards"] == ["1/2", "2/2"]
    # Every job is on the merged clock: none starts before the run or ends after it.
    assert all(0 <= job["start"] <= job["end"] <= merged["run"]["seconds"]
               for job in merged["jobs"])
    imported = {job["name"] for job in merged["jobs"] if job["status"] == "imported"}
    await fault_run.check_invariants(imported=imported)

    # The same from the command line: both shards given, one run judged (the job refused
    # for its input is not in the error rate: 1 of 5).
    done = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "report", *map(str, shards), "--json", "-",
         "--threshold", "error_rate<1%", "--threshold", "imports_per_s>0"],
        cwd=ROOT, check=False)
    assert done.returncode == 3, done.stderr.decode()
    assert verdict_lines(done.stderr.decode()) == [
        "asyncovf: threshold error_rate<1% failed: 20% (1 failed of 5 finished)"]
    statistics = json.loads(done.stdout)
    assert statistics["jobs"] == 6 and statistics["statuses"] == {"imported": 4, "failed": 2}


def verdict_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("asyncovf: threshold ")]


def outcomes(report: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {job["name"]: (job["status"], job["error_kind"]) for job in report["jobs"]}


async def remove_what_it_created(run: FaultRun, report: Path) -> None:
    """``asyncovf cleanup REPORT --yes``: the batch's names free for its next run."""
    done = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "cleanup", str(report), "--yes", "--ca-file",
         str(run.vcsim.ca_file)], env=cli_environment(run), cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()
