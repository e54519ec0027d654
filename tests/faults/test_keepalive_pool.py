"""The lease keep-alive never waits for a connection behind the uploads.

vSphere reference, HttpNfcLease: the lease times out unless the client reports
progress within ``info.leaseTimeout``. An upload holds its HTTP connection for
as long as its file takes; when uploads and SOAP calls shared one pool of four
connections, four disks in flight left HttpNfcLeaseProgress queued until an
upload finished, and a lease with a short timeout went to error ("lease:
Timedout") in the middle of a healthy import.

The simulator's lease rule ``expire_after_seconds`` moves a lease to error
after that long without progress, as vCenter does; the throttled disks keep
each upload far longer than that.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.engine.pool import BatchRunner
from tests.factory import DiskSpec, build_package
from tests.faults.support import FaultRun, run_batch
from tests.vcsim.harness import Counters

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

DISKS = 8
DISK_BYTES = 60_000
THROTTLE_BPS = 30_000  # each upload takes about twice the lease timeout
LEASE_TIMEOUT = 1.0


@pytest.mark.parametrize("parallel_disks", [4, 8])
async def test_progress_reaches_vcenter_while_every_upload_slot_is_busy(
    fault_run: FaultRun, tmp_path: Path, parallel_disks: int
) -> None:
    path = await anyio.to_thread.run_sync(lambda: build_package(
        tmp_path / "eight", "eight-disks", disks=(DiskSpec(8, DISK_BYTES),) * DISKS).path)
    run = dataclasses.replace(fault_run, package_path=path)
    package = await run.package()
    total = sum(package.content_size(href) for href in package.files)
    await run.set_faults(lease={"expire_after_seconds": LEASE_TIMEOUT},
                         nfc={"throttle_bps": THROTTLE_BPS})

    # What the simulator saw while the disks were going up: (bytes received,
    # progress reports answered), sampled until the run ends.
    samples: list[tuple[int, int]] = []
    done = anyio.Event()
    runner: BatchRunner | None = None

    async def sample() -> None:
        while not done.is_set():
            counters = await run.counters()
            samples.append((counters.nfc_bytes, counters.ok("HttpNfcLeaseProgress")))
            with anyio.move_on_after(0.05):
                await done.wait()

    async def import_all() -> None:
        nonlocal runner
        try:
            runner = await run_batch(run, count=1, settings=RunSettings(
                concurrency=1, parallel_disks=parallel_disks, job_retries=0,
                upload_attempts=1))
        finally:
            done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(sample)
        group.start_soon(import_all)
    assert runner is not None

    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED, f"{result.error_kind}: {result.error}"
    assert result.attempts == 1
    counters: Counters = await run.settled()
    assert counters.leases_in_error == 0
    assert counters.nfc_max_in_flight == parallel_disks  # no pool limit below the setting
    # Progress answered between two samples taken while disks were still going up.
    uploading = [progress for sent, progress in samples if 0 < sent < total]
    assert uploading and uploading[-1] > uploading[0], samples
    await run.check_invariants(runner)  # no lease open, Login = Logout, ...
