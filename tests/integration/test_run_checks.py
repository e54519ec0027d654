"""``asyncovf run`` checks every source and every placement before its first import.

A missing source or an unknown datastore is one error line per distinct
cause, printed once before the run, naming the VMs it affects; those VMs fail
without an attempt (exit 2 when nothing else ran, 1 beside VMs that were
imported), and the others still run. Sources need no session; placements
need one — one login, one inventory load, one logout, however many VMs — and
nothing is created for a refused VM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.factory import DiskSpec, build_package
from tests.faults.support import ROOT, FaultRun, run_cli
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration]

DEFAULTS = ("defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\n"
            "  datastore: LocalDS_0\n")
NO_DATASTORE = "datastore 'nope' not found; choices: "


def make_appliance(directory: Path) -> None:
    build_package(directory, "appliance", disks=(DiskSpec(16, 64 * 1024),))


async def write_batch(directory: Path, vms: str) -> Path:
    await anyio.to_thread.run_sync(make_appliance, directory)
    batch = directory / "fleet.yaml"
    await anyio.Path(batch).write_text(DEFAULTS + "vms:\n" + vms)
    return batch


def jobs_of(report: Path) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in json.loads(report.read_text())["jobs"]}


@pytest.mark.anyio
async def test_each_broken_source_or_placement_is_one_line_naming_its_vms(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    batch = await write_batch(tmp_path, f'  - name: "{prefix}-s{{index}}"\n    count: 5\n'
                                        "    source: ./nope.ova\n"
                                        f'  - name: "{prefix}-d{{index}}"\n    count: 5\n'
                                        "    datastore: nope\n")
    report = tmp_path / "report.json"
    status, stdout, stderr = await run_cli(fault_run, batch, "--concurrency", "4",
                                           "--report", str(report))
    assert status == 2, stderr  # every VM refused as input, nothing created
    source_line, placement_line = stderr.splitlines()  # once each: no line per VM
    assert source_line == (f"asyncovf: error: {tmp_path}/nope.ova: no such file or directory "
                           f"(affects {prefix}-s1 … {prefix}-s5, 5 VMs)")
    assert placement_line.startswith(f"asyncovf: error: {NO_DATASTORE}/DC0/datastore/")
    assert placement_line.endswith(f" (affects {prefix}-d1 … {prefix}-d5, 5 VMs)")
    # The summary and the report still list every VM, without an attempt.
    assert stdout.splitlines()[-1].startswith("10 jobs: 0 imported, 0 skipped, 10 failed")
    jobs = jobs_of(report)
    assert {(job["status"], job["attempts"], job["error_kind"]) for job in jobs.values()} == {
        ("failed", 0, "package"), ("failed", 0, "input")}
    assert jobs[f"{prefix}-d3"]["error"] == placement_line.removeprefix(
        "asyncovf: error: ").rsplit(" (affects ", 1)[0]
    counters = await fault_run.settled()
    # The placements took one session (one inventory load); the sources none.
    assert counters.ok("Login") == 1 == counters.ok("Logout")
    assert counters.calls("CreateImportSpec") == counters.calls("ImportVApp") == 0
    assert counters.calls("FindChild") == 0 and counters.leases_created == 0
    await fault_run.check_invariants(imported=set())


@pytest.mark.anyio
async def test_a_batch_of_broken_sources_alone_never_logs_in(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    batch = await write_batch(tmp_path, f'  - name: "{prefix}-{{index}}"\n    count: 3\n'
                                        "    source: ./nope.ova\n")
    status, _, stderr = await run_cli(fault_run, batch)
    assert status == 2, stderr
    assert stderr.splitlines() == [f"asyncovf: error: {tmp_path}/nope.ova: no such file or "
                                   f"directory (affects {prefix}-1, {prefix}-2, {prefix}-3)"]
    assert (await fault_run.counters()).total_calls() == 0  # not even a Login
    await fault_run.check_invariants(imported=set())


@pytest.mark.anyio
async def test_the_good_vms_still_import_beside_the_refused_ones(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    batch = await write_batch(tmp_path, f'  - name: "{prefix}-a{{index}}"\n    count: 2\n'
                                        f"  - name: {prefix}-nosource\n    source: ./nope.ova\n"
                                        f'  - name: "{prefix}-d{{index}}"\n    count: 2\n'
                                        "    datastore: nope\n"
                                        f'  - name: "{prefix}-b{{index}}"\n    count: 2\n')
    report = tmp_path / "report.json"
    status, _, stderr = await run_cli(fault_run, batch, "--concurrency", "2",
                                      "--report", str(report))
    assert status == 1, stderr  # others were imported
    lines = stderr.splitlines()
    assert lines[0] == (f"asyncovf: error: {prefix}-nosource: {tmp_path}/nope.ova: no such "
                        "file or directory")
    assert lines[1].startswith(f"asyncovf: error: {NO_DATASTORE}")
    assert lines[1].endswith(f" (affects {prefix}-d1, {prefix}-d2)")
    # Then the run's progress: one line per VM it imports, none for a refused one.
    progress = lines[2:]
    assert len(progress) == 4 and all(line.startswith("[") for line in progress), progress
    assert not any("nosource" in line or f"{prefix}-d" in line for line in progress)
    jobs = jobs_of(report)
    good = {f"{prefix}-{vm}" for vm in ("a1", "a2", "b1", "b2")}
    assert {name for name, job in jobs.items() if job["status"] == "imported"} == good
    # Refused before the run: failed without an attempt, never resolved again.
    assert {(jobs[name]["status"], jobs[name]["vm"], jobs[name]["attempts"])
            for name in jobs if name not in good} == {("failed", None, 0)}
    counters = await fault_run.settled()
    assert counters.ok("ImportVApp") == 4 == counters.ok("HttpNfcLeaseComplete")
    # Only the good VMs reached vCenter: no refused one sent anything, faults included.
    assert counters.calls("ImportVApp") == 4 and counters.calls("FindChild") == 0
    assert counters.ok("Login") == 1 + 2  # the placement check, then one per worker
    await fault_run.check_invariants(imported=good)


@pytest.mark.anyio
async def test_a_folder_create_folders_will_make_is_not_a_broken_placement(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    batch = await write_batch(tmp_path, f"  - name: {prefix}-1\n    folder: {prefix}/new\n")
    status, _, stderr = await run_cli(fault_run, batch, "--create-folders")
    assert status == 0, stderr
    counters = await fault_run.settled()
    assert counters.ok("CreateFolder") == 2 and counters.ok("ImportVApp") == 1
    await fault_run.check_invariants(imported={f"{prefix}-1"})


@pytest.mark.anyio
async def test_a_wrong_password_is_tried_once_not_once_per_worker(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    prefix = fault_run.prefix
    batch = await write_batch(tmp_path, f'  - name: "{prefix}-{{index}}"\n    count: 4\n')
    report = tmp_path / "report.json"
    status, stdout, stderr = await run_cli(fault_run, batch, "--concurrency", "4",
                                           "--password", f"not-{fault_run.vcsim.password}",
                                           "--report", str(report))
    assert status == 2, stderr  # our input: the credentials
    line = stderr.splitlines()[-1]
    assert line.startswith("asyncovf: error: ") and "InvalidLogin" in line
    assert prefix not in stderr  # said once for the run, not once per VM or per worker
    assert [job["error"] for job in jobs_of(report).values()] == [
        f"not started: {line.removeprefix('asyncovf: error: ')}"] * 4
    assert "4 jobs: 0 imported, 0 skipped, 4 failed" in stdout
    counters = await fault_run.counters()
    assert counters.calls("Login") == 1 == counters.faults("Login")
    await fault_run.check_invariants(imported=set())


def test_sigint_while_placements_are_checked_aborts_every_job_and_logs_out(
    vcsim: Vcsim, tmp_path: Path
) -> None:
    make_appliance(tmp_path)
    batch = tmp_path / "fleet.yaml"
    batch.write_text(DEFAULTS + 'vms:\n  - name: "chk-{index}"\n    count: 3\n')
    # The inventory load answers late: the signal comes while it is in flight.
    vcsim.set_faults(soap=[{"method": "RetrievePropertiesEx", "nth": 1, "delay_ms": 3000}])
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password)
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncovf", "run", str(batch), "--ca-file", str(vcsim.ca_file),
         "--report", str(report), "--progress", "plain"],
        env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (vcsim.counters().delayed("RetrievePropertiesEx") >= 1
                   and vcsim.counters().started("RetrievePropertiesEx")
                   > vcsim.counters().calls("RetrievePropertiesEx")):
            assert process.poll() is None and time.monotonic() < deadline, \
                process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "interrupted (SIGINT)" in stderr and "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["run"]["interrupted"] == "SIGINT"
    assert [(job["status"], job["error"]) for job in data["jobs"]] == [
        ("aborted", "interrupted before it started")] * 3
    assert "3 jobs: 0 imported, 0 skipped, 0 failed, 3 aborted" in stdout
    deadline = time.monotonic() + 10
    while (counters := vcsim.counters()).started("RetrievePropertiesEx") > counters.calls(
            "RetrievePropertiesEx") and time.monotonic() < deadline:
        time.sleep(0.02)  # the held call ends late in the simulator
    assert counters.ok("Login") == 1 == counters.ok("Logout")
    assert counters.calls("FindChild") == counters.calls("ImportVApp") == 0
