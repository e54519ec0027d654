"""A gzip bomb against the simulator: refused at its bound, never retried, nothing left.

Opening the package (as ``run``, ``import`` and ``--dry-run`` do) measures its
compressed disk and stops at the disk's bound, before any lease. An upload is
bounded by the same limit: given a package whose size was taken without the
bound, the upload stops there, the lease is aborted and the job is not retried.
"""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.options import RunSettings
from asyncovf.errors import PackageError
from asyncovf.ovf.source import open_package
from tests.factory import DiskSpec, build_package
from tests.faults.support import FaultRun, job_name, report_jobs, run_batch, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CAPACITY = 2 * 2**20
LIMIT = CAPACITY + 2**20 + CAPACITY // 64
EXPANDED = 12 * 2**20


def build_bomb(directory: Path) -> tuple[Path, str]:
    """A 2 MiB disk whose gzip-compressed file expands to 12 MiB (zero-padded to its
    ``ovf:size``, no manifest)."""
    built = build_package(directory, "bomb", disks=(DiskSpec(2, 256 * 1024),), ova=False,
                          manifest=False, compression="gzip")
    href = built.disk_names[0]
    stored = built.path / href
    data = gzip.compress(bytes(EXPANDED), compresslevel=9, mtime=0)
    stored.write_bytes(data + bytes(stored.stat().st_size - len(data)))
    return built.path, href


async def test_a_gzip_bomb_is_refused_at_its_bound_the_lease_aborted_and_never_retried(
    fault_run: FaultRun, tmp_path: Path
) -> None:
    path, href = build_bomb(tmp_path / "bomb")
    unmeasured = await open_package(path, measure_compressed=False)
    message = (f"{unmeasured.location}: {href} decompresses to more than {LIMIT} bytes, the "
               f"bound for its disk of {CAPACITY} bytes (capacity + 1/64 + 1 MiB)")
    with pytest.raises(PackageError) as refused:  # what run, import and --dry-run open
        await open_package(path)
    assert str(refused.value) == message

    # The upload, given the whole expansion as the disk's size, stops at the same bound.
    files = dict(unmeasured.files)
    files[href] = replace(files[href], content_size=EXPANDED)
    fault_run.package_path = path
    fault_run._package = replace(unmeasured, files=files)
    runner = await run_batch(fault_run, count=1, settings=RunSettings(
        concurrency=1, job_retries=1, upload_initial_wait=0.01))
    job = report_jobs(runner)[job_name(fault_run, 0)]
    assert (job["status"], job["attempts"], job["upload_retries"], job["error"]) == \
        ("failed", 1, 0, message), job
    counters = await fault_run.counters()
    assert counters.ok("ImportVApp") == 1 and counters.ok("HttpNfcLeaseAbort") == 1
    assert counters.ok("HttpNfcLeaseComplete") == 0
    await fault_run.check_invariants(runner)


async def test_a_dry_run_measures_with_the_same_bound(fault_run: FaultRun, tmp_path: Path
                                                       ) -> None:
    path, href = build_bomb(tmp_path / "bomb")
    location = (await open_package(path, measure_compressed=False)).location
    batch = tmp_path / "batch.yaml"
    await anyio.Path(batch).write_text(
        f"defaults:\n  source: {path}\n  cluster: DC0_C0\n  datastore: LocalDS_0\n"
        f"vms:\n  - name: {fault_run.prefix}-1\n")
    status, stdout, stderr = await run_cli(fault_run, batch, "--dry-run")
    assert status == 2, stderr
    assert (f"{location}: {href} decompresses to more than {LIMIT} bytes, the bound for its "
            f"disk of {CAPACITY} bytes (capacity + 1/64 + 1 MiB)") in stdout
    assert stdout.splitlines()[-1] == ("dry run: 1 VM in 1 group; 1 would fail; nothing was "
                                       "created")
    counters = await fault_run.counters()
    assert counters.calls("ImportVApp") == 0
    await fault_run.check_invariants(imported=set())
