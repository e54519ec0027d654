"""A load test as a platform team runs it: ``asyncovf run --ramp`` then ``asyncovf report``.

The ramp adds workers step by step; the report records the concurrency limit
over time, and no more jobs ever run at once than the limit in force allowed.
``asyncovf report`` turns the run's JSON into statistics, an HTML page and a
PNG drawn from exactly those statistics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.options import RunSettings
from asyncovf.loadreport import analysis
from tests.faults.support import ROOT, FaultRun, job_name, run_batch, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_ramp_adds_workers_step_by_step_and_never_runs_more_than_the_limit(
    fault_run: FaultRun,
) -> None:
    # Each upload crawls (~0.5 s), so jobs overlap the steps.
    await fault_run.set_faults(nfc=[{"throttle_bps": 600_000}])
    runner = await run_batch(fault_run, count=12, settings=RunSettings(
        ramp=(1, 2, 4), ramp_interval=0.8))
    assert runner.settings.concurrency == 4
    assert all(r.status.value == "imported" for r in runner.results)
    series = runner.concurrency_series
    assert [limit for _, limit in series] == [1, 2, 4]
    # Each step comes no sooner than the interval after the one before (no upper
    # bound: how late it comes is the machine's, not the ramp's).
    assert all(later - earlier >= 0.8 * 0.999
               for (earlier, _), (later, _) in zip(series, series[1:], strict=False))
    # A worker logs in when its step comes: one session per worker, all closed.
    assert runner.sessions_opened == runner.sessions_closed == 4
    assert {r.worker for r in runner.results if r.started is not None
            and r.started - runner.started < series[1][0]} == {1}
    report = json.loads(json.dumps(_report(runner)))
    for moment, running in analysis.in_flight_series(report):
        assert running <= analysis.limit_at(analysis.concurrency_series(report), moment)
    assert analysis.max_in_flight(report) == 4
    steps = analysis.step_stats(report)
    assert [s.limit for s in steps] == [1, 2, 4] and sum(s.jobs for s in steps) == 12
    await fault_run.check_invariants(runner)


async def test_a_ramp_stops_once_every_job_is_taken(fault_run: FaultRun) -> None:
    # Two jobs of about a second each: the second worker takes the second job at
    # the first step; the steps to 4 and 8 workers would only log in and out.
    await fault_run.set_faults(nfc=[{"throttle_bps": 300_000}])
    runner = await run_batch(fault_run, count=2, settings=RunSettings(
        ramp=(1, 2, 4, 8), ramp_interval=0.3))
    assert all(r.status.value == "imported" for r in runner.results)
    assert [limit for _, limit in runner.concurrency_series] == [1, 2]
    assert runner.sessions_opened == runner.sessions_closed == 2
    counters = await fault_run.counters()
    assert counters.ok("Login") == 2
    await fault_run.check_invariants(runner)


def _report(runner: object) -> dict[str, object]:
    from asyncovf.report import RunInfo, build_report

    assert hasattr(runner, "settings")
    return build_report(runner, RunInfo(batch=None,  # type: ignore[arg-type]
                                        concurrency=runner.settings.concurrency))


async def test_run_with_a_ramp_then_report_draws_html_png_and_statistics(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    # The first NFC rule that matches applies: job 004 fails, the others crawl.
    await fault_run.set_faults(nfc=[{"vm": job_name(fault_run, 4), "status": 500,
                                     "after_bytes": 1000},
                                    {"throttle_bps": 1_500_000}])
    batch = tmp_path / "fleet.yaml"
    batch.write_text(f"defaults:\n  source: {fault_run.package_path}\n  cluster: DC0_C0\n"
                     f'vms:\n  - name: "{fault_run.prefix}-{{index:03d}}"\n    count: 8\n')
    results = tmp_path / "results.json"
    status, _, stderr = await run_cli(fault_run, batch, "--ramp", "2:4", "--ramp-interval",
                                      "0.5", "--job-retries", "0", "--upload-retries", "0",
                                      "--report", str(results))
    assert status == 1, stderr  # the one job whose upload failed
    data = json.loads(results.read_text())
    assert data["run"]["ramp"] == {"steps": [2, 4], "interval": 0.5}
    assert data["run"]["concurrency"] == 4
    assert [limit for _, limit in data["run"]["concurrency_series"]] == [2, 4]

    html, png, stats = tmp_path / "r.html", tmp_path / "r.png", tmp_path / "stats.json"
    done = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "report", str(results), "--html", str(html),
         "--png", str(png), "--json", str(stats)], cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()
    statistics = json.loads(stats.read_text())
    assert statistics["statuses"] == {"imported": 7, "failed": 1}
    assert statistics["errors_by_kind"] == {"upload": 1}
    phases = {p["phase"]: p for p in statistics["phases"]}
    assert {"end-to-end", "spec", "import", "lease_wait", "upload", "complete"} <= set(phases)
    # The failed job is kept out of the percentiles, and shown on its own.
    assert phases["end-to-end"]["count"] == phases["upload"]["count"] == 7
    assert "abort" not in phases
    assert [(p["phase"], p["count"]) for p in statistics["failed_latency"]] == [("failed", 1)]
    assert all(p["p50"] <= p["p90"] <= p["p95"] <= p["p99"] <= p["max"]
               for p in phases.values())
    assert [step["limit"] for step in statistics["steps"]] == [2, 4]
    assert statistics["knee"]["sentence"].startswith(("knee at ", "no knee: "))
    assert [(e["kind"], e["count"]) for e in statistics["errors"]] == [("upload", 1)]
    run_facts = data["run"]
    assert run_facts["tool"]["name"] == "asyncovf" and run_facts["packages"][0]["bytes"] > 0
    assert run_facts["settings"]["ramp"] == [2, 4]
    page = html.read_text()
    for chart in ("timeline", "rates", "in_flight", "throughput", "latency", "errors",
                  "steps"):
        assert f'<img alt="{chart}" src="data:image/png;base64,' in page
    assert f'<span id="knee">{statistics["knee"]["sentence"]}</span>' in page
    assert '<table id="errors">' in page and "<td>upload</td><td>1</td>" in page
    assert '<table id="metadata">' in page and "ramp 2 → 4 workers" in page
    assert '<table id="phases">' in page and "<td>end-to-end</td><td>7</td>" in page
    assert '<table id="steps">' in page and "<tr><td>4</td>" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    await fault_run.check_invariants(imported={
        job["name"] for job in data["jobs"] if job["status"] == "imported"})
