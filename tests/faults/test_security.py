"""Security: where disks may go, which certificate an upload trusts, and secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from tests.faults.support import FaultRun, make_package, run_batch
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.faults, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.anyio
async def test_a_device_url_naming_a_foreign_host_is_refused(fault_run: FaultRun) -> None:
    await fault_run.set_faults(lease={"times": 1, "device_host": "disks.attacker.example"})
    runner = await run_batch(fault_run, count=2, settings=RunSettings(concurrency=1))
    first, second = runner.results
    assert (first.status, first.attempts) == (JobStatus.FAILED, 1)
    assert first.error == ("refusing to upload to 'disks.attacker.example': the device URL "
                           "names neither vCenter nor an ESXi host of its inventory")
    assert first.bytes == 0
    assert second.status is JobStatus.IMPORTED  # the next lease is a normal one
    counters = await fault_run.counters()
    assert counters.nfc_requests.get("POST") == 1  # only the second job uploaded
    await fault_run.check_invariants(runner)


@pytest.mark.anyio
async def test_an_upload_is_pinned_to_the_leases_thumbprint(fault_run: FaultRun) -> None:
    await fault_run.set_faults(lease={"times": 1, "thumbprint": "match"})
    runner = await run_batch(fault_run, count=1)
    assert runner.results[0].status is JobStatus.IMPORTED
    await fault_run.check_invariants(runner)


@pytest.mark.anyio
async def test_a_thumbprint_mismatch_stops_the_upload_before_any_byte(
    fault_run: FaultRun,
) -> None:
    """The run trusts the simulator through its CA (``--ca-file``), so without the pin
    the upload would go through: this fails if uploads stop pinning the lease's
    thumbprint (checked by turning the pin off: the job then imports)."""
    await fault_run.set_faults(lease={"times": 2, "thumbprint": "mismatch"})
    runner = await run_batch(fault_run, count=1)
    (result,) = runner.results
    assert result.status is JobStatus.FAILED and result.bytes == 0
    assert "does not match the lease's sslThumbprint (expected AB:AB:" in (result.error or "")
    counters = await fault_run.counters()
    assert counters.nfc_requests == {}
    await fault_run.check_invariants(runner)


def test_passwords_never_reach_logs_reports_or_errors(vcsim: Vcsim, tmp_path: Path) -> None:
    package = make_package(tmp_path)
    batch = tmp_path / "batch.yaml"
    batch.write_text(f"defaults:\n  source: {package}\n  cluster: DC0_C0\n"
                     "vms:\n  - name: secret-1\n  - name: secret-2\n    datastore: NoSuchDS\n")
    report = tmp_path / "report.json"
    secrets = {"good": vcsim.password, "wrong": "Wr0ng-S3cret-Value"}
    outputs = []
    for password in secrets.values():
        env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
        env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
                   VSPHERE_PASSWORD=password)
        result = subprocess.run(
            [sys.executable, "-m", "asyncovf", "--debug", "run", str(batch), "--report",
             str(report), "--ca-file", str(vcsim.ca_file), "--progress", "plain"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        outputs.append(result.stdout + result.stderr + report.read_text())
        assert result.returncode in (1, 2)
    assert "InvalidLogin" in outputs[1]  # the wrong password was really tried
    for text, password in zip(outputs, secrets.values(), strict=True):
        assert password not in text
    assert "password" not in json.loads(report.read_text())["run"]
