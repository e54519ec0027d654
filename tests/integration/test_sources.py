"""Importing from web servers, gzip-compressed and chunked packages, into vcsim.

Each test checks what vCenter received (the NFC byte count is the original,
uncompressed disks) and that nothing was left behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.options import ImportOptions
from asyncovf.engine.phases import JobState, Phase
from asyncovf.errors import SourceError
from asyncovf.importer import Importer
from asyncovf.ovf.package import check_files
from asyncovf.ovf.source import open_package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from tests.factory import DiskSpec, build_package
from tests.httpserver import serve_directory
from tests.integration.inspect import vms_named
from tests.integration.test_single_import import ROOT, assert_nothing_leaked
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DISKS = (DiskSpec(32, 1_500_000), DiskSpec(8, 20_000))


async def import_one(connection: ConnectionSettings, source: str, name: str,
                     options: ImportOptions | None = None) -> JobState:
    package = await open_package(source)
    check_files(package)
    state = JobState(name=name)
    async with Importer(connection) as importer:
        placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
        try:
            await importer.import_package(package, name, placement, options, state=state)
        except SourceError:
            pass  # the caller checks the state
    return state


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
async def test_a_gzipped_chunked_ova_on_a_web_server_imports_its_original_disks(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path, ranges: bool
) -> None:
    built = build_package(tmp_path, "packed", disks=DISKS, compression="gzip",
                          chunk_size=400_000)
    async with serve_directory(tmp_path, ranges=ranges) as served:
        state = await import_one(connection, served.url("packed.ova"), f"web-{ranges}")
    assert state.phase is Phase.IMPORTED, state.error
    original = sum(len(data) for data in built.contents.values())
    assert state.bytes_done == state.bytes_total == original
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.nfc_bytes == original  # vCenter got the gunzipped, joined bytes
    assert len(await vms_named(connection, state.name)) == 1
    await anyio.to_thread.run_sync(assert_nothing_leaked, vcsim)


async def test_a_mirror_dropping_the_connection_is_retried_from_a_reopened_source(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    build_package(tmp_path, "flaky", disks=DISKS[:1])
    async with serve_directory(tmp_path) as served:
        package = await open_package(served.url("flaky.ova"))
        served.cut["flaky.ova"] = (500_000, 1)  # the disk's first GET dies mid-way
        state = JobState(name="from-a-flaky-mirror")
        async with Importer(connection) as importer:
            placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
            await importer.import_package(package, state.name, placement,
                                          ImportOptions(upload_initial_wait=0.01), state=state)
    assert state.phase is Phase.IMPORTED and state.upload_retries == 1
    assert state.bytes_done == package.content_size(package.descriptor.files[0].href)
    await anyio.to_thread.run_sync(assert_nothing_leaked, vcsim)


async def test_a_source_gone_mid_import_fails_the_job_and_leaves_nothing(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    built = build_package(tmp_path, "vanishing", disks=DISKS[:1], ova=False)
    async with serve_directory(tmp_path) as served:
        package = await open_package(served.url("vanishing/vanishing.ovf"))
        (built.path / built.disk_names[0]).unlink()  # 404 from now on: not retried
        state = JobState(name="source-gone")
        async with Importer(connection) as importer:
            placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
            with pytest.raises(SourceError, match="HTTP 404"):
                await importer.import_package(package, state.name, placement,
                                              ImportOptions(upload_initial_wait=0.01),
                                              state=state)
        assert served.gets[f"vanishing/{built.disk_names[0]}"] == 1
    assert state.phase is Phase.FAILED and state.upload_retries == 0
    assert await vms_named(connection, state.name) == []
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.ok("HttpNfcLeaseAbort") == 1
    await anyio.to_thread.run_sync(assert_nothing_leaked, vcsim)


async def test_cli_imports_from_a_url(vcsim: Vcsim, tmp_path: Path) -> None:
    build_package(tmp_path, "cliweb", disks=DISKS[1:], compression="gzip")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password)
    async with serve_directory(tmp_path) as served:
        result = await anyio.run_process(
            [sys.executable, "-m", "asyncovf", "import", served.url("cliweb.ova"),
             "--name", "cli-from-url", "--cluster", "DC0_C0", "--ca-file", str(vcsim.ca_file)],
            env=env, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert len(await vms_named(ConnectionSettings(
        server=vcsim.url, username=vcsim.username, password=vcsim.password,
        ca_file=str(vcsim.ca_file)), "cli-from-url")) == 1
    await anyio.to_thread.run_sync(assert_nothing_leaked, vcsim)
