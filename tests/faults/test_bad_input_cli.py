"""Bad input through the whole command line: ``asyncovf run BATCH`` as a user runs it.

A broken batch file is rejected before anything happens on vCenter (no
Login at all), with an error that names the file, the line and the field. A
broken job — a datastore that does not exist, a source that is missing, an
OVA cut short or not a tar at all — fails alone with an error that says
what is wrong and where; the jobs around it are imported. Either way the
invariants hold: every session logged out, every lease ended, and only the
VMs the report calls imported are in the inventory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.factory import DiskSpec, build_package
from tests.faults.support import FaultRun, run_cli

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the batch file itself --------------------------------------------------------------------

async def test_a_yaml_syntax_error_names_the_file_and_line_and_opens_no_session(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    batch = write(tmp_path / "fleet.yaml",
                  "defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\nvms:\n"
                  f'  - name: "{fault_run.prefix}-{{index}}"\n\tcount: 3\n')
    report = tmp_path / "report.json"
    status, stdout, stderr = await run_cli(fault_run, batch, "--report", str(report))
    assert status == 2
    assert stderr.strip() == (f"asyncovf: error: {batch}:6: YAML: found character '\\t' that "
                              "cannot start any token")
    assert stdout == "" and not report.exists()
    counters = await fault_run.counters()
    assert counters.total_calls() == 0  # not even a Login: the file was rejected first
    await fault_run.check_invariants(imported=set())


UNKNOWN_KEYS = {
    "top-level": ("default:\n  source: ./appliance.ova\nvms:\n  - name: a\n", 1,
                  "default: unknown key; did you mean 'defaults'?"),
    "in-defaults": ("defaults:\n  source: ./appliance.ova\n  clutser: DC0_C0\nvms:\n"
                    "  - name: a\n", 3,
                    "defaults.clutser: unknown key; did you mean 'cluster'?"),
    "in-a-vm-entry": ("defaults:\n  source: ./appliance.ova\nvms:\n  - name: a\n"
                      "  - name: b\n    datastor: LocalDS_0\n", 6,
                      "vms[1].datastor: unknown key; did you mean 'datastore'?"),
    "not-near-any": ("defaults:\n  source: ./appliance.ova\nvms:\n  - name: a\n"
                     "    colour: red\n", 5,
                     "vms[0].colour: unknown key; expected one of: annotation, cluster, "),
}


@pytest.mark.parametrize("case", UNKNOWN_KEYS, ids=list(UNKNOWN_KEYS))
async def test_an_unknown_key_is_named_with_its_line_and_the_keys_expected(
    fault_run: FaultRun, tmp_path: Path, case: str
) -> None:
    text, line, message = UNKNOWN_KEYS[case]
    batch = write(tmp_path / "fleet.yaml", text)
    status, _, stderr = await run_cli(fault_run, batch)
    assert status == 2
    assert stderr.startswith(f"asyncovf: error: {batch}:{line}: {message}"), stderr
    assert len(stderr.strip().splitlines()) == 1  # one line, no traceback
    counters = await fault_run.counters()
    assert counters.total_calls() == 0
    await fault_run.check_invariants(imported=set())


HOSTILE = {
    # a billion laughs: 10^9 strings once the aliases expand (6 GB before the limit)
    "alias-bomb": ("    properties:\n      l0: &l0 lol\n"
                   + "".join(f"      l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n"
                             for n in range(1, 10)),
                   7, "YAML: anchor &l0: anchors and aliases are not allowed in a batch "
                      "file; repeat the value or put it in defaults"),
    # 100 million jobs (7.7 GB before the limit)
    "huge-count": ("    count: 100000000\n", 6,
                   "vms[0].count: 100000000 is over the limit of 10000 VMs per entry; split "
                   "it into several entries"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
async def test_a_hostile_batch_file_is_one_line_and_exit_2_with_nothing_created(
    fault_run: FaultRun, tmp_path: Path, case: str
) -> None:
    keys, line, message = HOSTILE[case]
    batch = write(tmp_path / "fleet.yaml",
                  "defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\nvms:\n"
                  f'  - name: "{fault_run.prefix}-{{index}}"\n{keys}')
    report = tmp_path / "report.json"
    status, stdout, stderr = await run_cli(fault_run, batch, "--report", str(report))
    assert status == 2
    assert stderr == f"asyncovf: error: {batch}:{line}: {message}\n"  # one line, no traceback
    assert stdout == "" and not report.exists()
    counters = await fault_run.counters()
    assert counters.total_calls() == 0  # not even a Login: the file was rejected first
    await fault_run.check_invariants(imported=set())


# -- one bad job among good ones ---------------------------------------------------------------

def make_sources(directory: Path) -> None:
    good = build_package(directory, "appliance", disks=(DiskSpec(16, 64 * 1024),)).path
    data = good.read_bytes()
    # Cut in the middle of the disk: the tar's headers are intact, its data is not.
    (directory / "truncated.ova").write_bytes(data[: len(data) // 2])
    (directory / "garbage.ova").write_bytes(b"this is not a tar archive\n" * 40)


BAD_JOBS: dict[str, tuple[str, str]] = {
    # entry keys for the bad job, the start of its error in the report
    "unknown-datastore": ("datastore: NoSuchDS",
                          "datastore 'NoSuchDS' not found; choices: /DC0/datastore/LocalDS_0"),
    "missing-source": ("source: ./nope.ova", "{dir}/nope.ova: no such file or directory"),
    "truncated-ova": ("source: ./truncated.ova",
                      "{dir}/truncated.ova: truncated: member 'appliance-disk1.vmdk' needs"),
    "not-a-tar": ("source: ./garbage.ova",
                  "{dir}/garbage.ova: not a readable OVA (tar): bad header at offset 0"),
}


@pytest.mark.parametrize("case", BAD_JOBS, ids=list(BAD_JOBS))
async def test_one_bad_job_in_the_middle_of_a_batch_fails_alone(
    fault_run: FaultRun, tmp_path: Path, case: str
) -> None:
    entry, error = BAD_JOBS[case]
    await anyio.to_thread.run_sync(make_sources, tmp_path)
    prefix = fault_run.prefix
    batch = write(tmp_path / "fleet.yaml",
                  "defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\n"
                  "  datastore: LocalDS_0\nvms:\n"
                  f'  - name: "{prefix}-a{{index}}"\n    count: 2\n'
                  f"  - name: {prefix}-bad\n    {entry}\n"
                  f'  - name: "{prefix}-b{{index}}"\n    count: 2\n')
    report_path = tmp_path / "report.json"
    status, stdout, stderr = await run_cli(fault_run, batch, "--concurrency", "2",
                                           "--report", str(report_path))
    assert status == 1, stderr  # a job failed, the others were imported
    report: dict[str, Any] = json.loads(report_path.read_text())
    jobs = {job["name"]: job for job in report["jobs"]}
    bad = jobs.pop(f"{prefix}-bad")
    assert bad["status"] == "failed" and bad["vm"] is None and bad["bytes"] == 0
    assert bad["error"].startswith(error.format(dir=tmp_path)), bad["error"]
    assert bad["attempts"] <= 1  # bad input is never retried
    assert [(job["status"], job["attempts"]) for job in jobs.values()] == [("imported", 1)] * 4
    assert report["totals"]["failed"] == 1 and report["totals"]["imported"] == 4
    # The summary puts the failure first, with its error.
    first_row = stdout.splitlines()[1]
    assert first_row.startswith(f"{prefix}-bad") and " failed " in first_row
    assert error.format(dir=tmp_path)[:40] in first_row
    counters = await fault_run.counters()
    assert counters.ok("ImportVApp") == 4  # nothing was created for the bad job
    await fault_run.check_invariants(imported=set(jobs))


async def test_a_batch_whose_every_source_is_broken_creates_nothing_and_exits_2(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    await anyio.to_thread.run_sync(make_sources, tmp_path)
    prefix = fault_run.prefix
    batch = write(tmp_path / "fleet.yaml",
                  "defaults:\n  cluster: DC0_C0\nvms:\n"
                  f"  - name: {prefix}-1\n    source: ./truncated.ova\n"
                  f"  - name: {prefix}-2\n    source: ./garbage.ova\n"
                  f"  - name: {prefix}-3\n    source: ./nope.ova\n")
    report_path = tmp_path / "report.json"
    status, _, stderr = await run_cli(fault_run, batch, "--report", str(report_path))
    assert status == 2, stderr  # every job rejected before anything was created
    report = json.loads(report_path.read_text())
    assert [job["status"] for job in report["jobs"]] == ["failed"] * 3
    assert all(job["error"].startswith(str(tmp_path)) for job in report["jobs"])
    counters = await fault_run.counters()
    assert counters.calls("CreateImportSpec") == 0 and counters.calls("ImportVApp") == 0
    await fault_run.check_invariants(imported=set())


def corrupt_disk_bytes(directory: Path) -> None:
    """An OVA whose tar is intact but whose disk no longer matches its manifest."""
    good = build_package(directory, "appliance", disks=(DiskSpec(16, 64 * 1024),)).path
    data = bytearray(good.read_bytes())
    at = data.index(b"appliance-disk1.vmdk") + 512 + 40_000  # well inside the disk's data
    data[at] ^= 0xFF
    (directory / "corrupt.ova").write_bytes(bytes(data))


async def test_a_disk_that_fails_its_digest_mid_upload_fails_its_job_alone(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    # Found only while streaming: the lease is taken, then aborted, and the VM removed.
    await anyio.to_thread.run_sync(corrupt_disk_bytes, tmp_path)
    prefix = fault_run.prefix
    batch = write(tmp_path / "fleet.yaml",
                  "defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\nvms:\n"
                  f'  - name: "{prefix}-a{{index}}"\n    count: 2\n'
                  f"  - name: {prefix}-bad\n    source: ./corrupt.ova\n"
                  f'  - name: "{prefix}-b{{index}}"\n    count: 2\n')
    report_path = tmp_path / "report.json"
    status, _, stderr = await run_cli(fault_run, batch, "--concurrency", "2",
                                      "--report", str(report_path))
    assert status == 1, stderr
    jobs = {job["name"]: job for job in json.loads(report_path.read_text())["jobs"]}
    bad = jobs.pop(f"{prefix}-bad")
    assert (bad["status"], bad["attempts"], bad["error_kind"]) == ("failed", 1, "manifest"), bad
    assert "sha256 digest mismatch for appliance-disk1.vmdk" in bad["error"], bad["error"]
    assert [(job["status"], job["attempts"]) for job in jobs.values()] == [("imported", 1)] * 4
    counters = await fault_run.counters()
    assert counters.ok("ImportVApp") == 5 and counters.ok("HttpNfcLeaseAbort") == 1
    await fault_run.check_invariants(imported=set(jobs))


async def test_job_timeout_from_the_command_line_ends_one_slow_upload_only(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    # One job's upload crawls (10 KB/s) past --job-timeout; its lease is aborted
    # and its VM removed, the jobs around it import within the limit.
    await anyio.to_thread.run_sync(make_sources, tmp_path)
    prefix = fault_run.prefix
    await fault_run.set_faults(nfc=[{"vm": f"{prefix}-slow", "throttle_bps": 10_000}])
    batch = write(tmp_path / "fleet.yaml",
                  "defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\nvms:\n"
                  f'  - name: "{prefix}-a{{index}}"\n    count: 2\n'
                  f"  - name: {prefix}-slow\n"
                  f'  - name: "{prefix}-b{{index}}"\n    count: 2\n')
    report_path = tmp_path / "report.json"
    status, _, stderr = await run_cli(fault_run, batch, "--concurrency", "2", "--job-timeout",
                                      "2", "--report", str(report_path))
    assert status == 1, stderr
    jobs = {job["name"]: job for job in json.loads(report_path.read_text())["jobs"]}
    slow = jobs.pop(f"{prefix}-slow")
    assert (slow["status"], slow["error_kind"]) == ("failed", "job timeout"), slow
    assert slow["error"].startswith("job timeout: not finished after 2 s"), slow["error"]
    assert [job["status"] for job in jobs.values()] == ["imported"] * 4
    assert [phase["phase"] for phase in slow["phases"]][-2:] == ["upload", "abort"]
    counters = await fault_run.counters()
    assert counters.ok("HttpNfcLeaseAbort") == 1
    await fault_run.check_invariants(imported=set(jobs))
