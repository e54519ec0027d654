"""The circuit breaker against the simulator: a vCenter that fails every ImportVApp stops
the run after its window, with nothing left behind and every session logged out."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.faults.support import FaultRun, run_cli, run_cli_report, write_batch

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]


async def test_a_vcenter_failing_every_import_trips_the_breaker_and_the_run_exits_4(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    await fault_run.set_faults(soap=[{"method": "ImportVApp",
                                      "fault": "InsufficientResourcesFault"}])
    batch = await write_batch(fault_run, tmp_path,
                              f'  - name: "{fault_run.prefix}-{{index}}"\n    count: 40\n')
    status, _, stderr, data = await run_cli_report(fault_run, batch, "--concurrency", "2",
                                                   "--job-retries", "0", "--error-window", "5")
    assert status == 4, stderr
    (line,) = [line for line in stderr.splitlines() if "circuit breaker" in line]
    assert line.startswith("asyncovf: circuit breaker: 5 of the last 5 finished jobs failed "
                           "(error rate 100%, over --max-error-rate 50%); took no new job (")
    assert data["run"]["breaker"].startswith("5 of the last 5 finished jobs failed")
    failed = [job for job in data["jobs"] if job["status"] == "failed"]
    untried = [job for job in data["jobs"] if job["error_kind"] == "not started"]
    # The window, and at most what the other worker had in hand (one fed, one taken).
    assert 5 <= len(failed) <= 5 + 2 and len(failed) + len(untried) == 40
    assert all(job["status"] == "aborted" and job["error"].startswith(
        "not started: the circuit breaker stopped the run: 5 of the last 5") for job in untried)
    counters = await fault_run.settled()
    assert counters.calls("ImportVApp") == len(failed)
    await fault_run.check_invariants(imported=set())


async def test_below_its_rate_the_breaker_lets_the_run_finish(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    # One import in ten fails: 10 % of any window, under the default 50 %.
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "nth": n,
                                      "fault": "InsufficientResourcesFault"}
                                     for n in (3, 13, 23)])
    batch = await write_batch(fault_run, tmp_path,
                              f'  - name: "{fault_run.prefix}-{{index}}"\n    count: 30\n')
    report = tmp_path / "report.json"
    status, _, stderr = await run_cli(fault_run, batch, "--concurrency", "2",
                                      "--job-retries", "0", "--error-window", "10",
                                      "--report", str(report))
    assert status == 1, stderr  # jobs failed, the run went on
    assert "circuit breaker" not in stderr
    data = json.loads(await anyio.Path(report).read_text())
    statuses = [job["status"] for job in data["jobs"]]
    assert (statuses.count("imported"), statuses.count("failed")) == (27, 3)
    assert data["run"]["breaker"] is None
    counters = await fault_run.settled()
    assert counters.calls("ImportVApp") == 30 and counters.faults("ImportVApp") == 3
    await fault_run.check_invariants(imported={job["name"] for job in data["jobs"]
                                               if job["status"] == "imported"})
