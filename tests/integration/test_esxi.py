"""Importing straight to a standalone ESXi host: no vCenter, no clusters, no folders.

vcsim in ESX mode is one host with an ``ha-datacenter``; placement needs no
options at all, and the same pool, lease guard and uploads work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import BatchPlan, load_batch
from asyncovf.importer import Importer
from asyncovf.ovf.package import check_files
from asyncovf.ovf.source import open_package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from tests.factory import DiskSpec, build_package
from tests.integration.inspect import list_vms
from tests.integration.test_batch import check_invariants, run_plan
from tests.vcsim.harness import Vcsim, running_vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture(scope="module")
def esxi() -> Iterator[Vcsim]:
    with running_vcsim(esx=True) as simulator:
        yield simulator


@pytest.fixture
def connection(esxi: Vcsim) -> ConnectionSettings:
    esxi.reset_counters()
    return ConnectionSettings(server=esxi.url, username=esxi.username,
                              password=esxi.password, ca_file=str(esxi.ca_file))


async def test_a_single_import_needs_no_placement_on_a_host(
    esxi: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    built = build_package(tmp_path, "host", disks=(DiskSpec(8, 100_000),))
    package = await open_package(built.path)
    check_files(package)
    async with Importer(connection) as importer:
        placement = await importer.resolve(PlacementRequest())
        assert (placement.datacenter.name, placement.datastore.name) == ("ha-datacenter",
                                                                         "LocalDS_0")
        state = await importer.import_package(package, "on-esxi", placement)
    assert state.vm and state.bytes_done == state.bytes_total
    assert [vm.disks for vm in await list_vms(connection) if vm.name == "on-esxi"] == [1]
    await anyio.to_thread.run_sync(check_invariants, esxi)


async def host_batch(directory: Path, vms: str, defaults: str = "") -> BatchPlan:
    """A batch of a small package with no placement at all (a host needs none)."""
    def write() -> BatchPlan:
        build_package(directory, "photon", disks=(DiskSpec(8, 64_000),))
        batch = directory / "esxi.yaml"
        batch.write_text(f"defaults:\n  source: ./photon.ova\n{defaults}vms:\n{vms}")
        return load_batch(batch)
    return await anyio.to_thread.run_sync(write)


async def test_a_batch_runs_against_a_host(
    esxi: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await host_batch(tmp_path, '  - name: "esx-{index}"\n    count: 6\n')
    runner = await run_plan(connection, plan, RunSettings(concurrency=3))
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 6
    names = {vm.name for vm in await list_vms(connection)}
    assert {f"esx-{i}" for i in range(1, 7)} <= names
    await anyio.to_thread.run_sync(check_invariants, esxi, runner)


async def test_a_clone_batch_against_a_host_fails_each_vm_with_one_line_and_uploads_nothing(
    esxi: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await host_batch(tmp_path, '  - name: "esx-clone-{index}"\n    count: 3\n',
                            defaults="  strategy: clone\n")
    runner = await run_plan(connection, plan, RunSettings(concurrency=2))

    assert [r.status for r in runner.results] == [JobStatus.FAILED] * 3
    assert {r.error for r in runner.results} == {
        f"seed {runner.seeds.seeds[0].name} failed: strategy clone needs vCenter: a "
        "standalone ESXi host has no CloneVM_Task; use strategy: import"}
    counters = await anyio.to_thread.run_sync(esxi.counters)
    assert counters.calls("ImportVApp") == 0 and counters.nfc_bytes == 0
    assert not any(vm.name.startswith("esx-clone") for vm in await list_vms(connection))
    await anyio.to_thread.run_sync(check_invariants, esxi, runner)
