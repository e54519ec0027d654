"""Import options checked against the descriptor before vCenter is touched, and
networks left unmapped falling back to the datacenter's default network."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.importer import Importer
from asyncovf.vsphere.connection import ConnectionSettings
from tests.factory import DEPLOYMENT_OPTION_SECTION, DiskSpec, build_package
from tests.integration.inspect import list_vms, vms_named
from tests.integration.test_batch import check_invariants, make_batch, run_plan
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_bad_properties_and_network_names_fail_only_their_jobs_before_import(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, (
        "  - name: opt-good\n"
        "  - name: opt-badprop\n    properties: {vami.port.app: '8080'}\n"
        "  - name: opt-badnet\n    network_mapping: {Storage: VM Network}\n"))
    runner = await run_plan(connection, plan, RunSettings(concurrency=2))
    by_name = {r.name: r for r in runner.results}
    assert by_name["opt-good"].status is JobStatus.IMPORTED
    bad_prop, bad_net = by_name["opt-badprop"], by_name["opt-badnet"]
    assert bad_prop.status is bad_net.status is JobStatus.FAILED
    assert bad_prop.input_error and bad_net.input_error and bad_prop.attempts == 1
    assert bad_prop.error == ("opt-badprop: property 'vami.port.app' is not in the descriptor "
                              "(its properties: none)")
    assert bad_net.error == ("opt-badnet: network mapping names 'Storage', which the "
                             "descriptor does not have (its networks: VM Network)")
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.calls("CreateImportSpec") == counters.calls("ImportVApp") == 1
    assert await vms_named(connection, "opt-badprop") == []
    assert await vms_named(connection, "opt-badnet") == []
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_an_unmapped_network_falls_back_to_the_default_with_a_warning(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: opt-fallback\n")
    await anyio.to_thread.run_sync(lambda: build_package(
        tmp_path, "photon", disks=(DiskSpec(16, 64 * 1024),), network="Appliance Net"))
    runner = await run_plan(connection, plan, RunSettings(concurrency=1))
    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED, result.error
    assert result.warnings == ["network 'Appliance Net' is not mapped; using 'VM Network'"]
    (vm,) = await vms_named(connection, "opt-fallback")
    assert vm.networks == ("VM Network",)
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_mapped_network_is_used_as_given(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: opt-mapped\n"
                                      "    network_mapping: {VM Network: DC0_DVPG0}\n")
    runner = await run_plan(connection, plan, RunSettings(concurrency=1))
    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED, result.error
    assert result.warnings == []
    (vm,) = await vms_named(connection, "opt-mapped")
    assert vm.networks != ("VM Network",)
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_create_folders_makes_the_path_once_for_many_workers(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, '  - name: "fold-{index}"\n    count: 4\n'
                                      "    folder: vm/fleet/wave1\n")
    runner = await run_plan(connection, plan, RunSettings(concurrency=4, create_folders=True))
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 4, \
        [r.error for r in runner.results]
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.ok("CreateFolder") == 2  # fleet, then fleet/wave1: never twice
    async with Importer(connection) as importer:
        snapshot = await importer.inventory()
        folder = snapshot.find("vm-folder", "vm/fleet/wave1",
                               datacenter=snapshot.only("datacenter", None, what="dc",
                                                        option=""))
        children = await importer.session.retrieve(folder.ref, ["childEntity"])
    inside = {child._moId for child in children["childEntity"]}
    names = {vm.name for vm in await list_vms(connection) if vm.moid in inside}
    assert names == {f"fold-{i}" for i in range(1, 5)}
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_missing_folder_without_create_folders_fails_before_import(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, "  - name: nofold\n    folder: vm/nowhere\n")
    runner = await run_plan(connection, plan, RunSettings(concurrency=1))
    (result,) = runner.results
    assert result.status is JobStatus.FAILED and result.input_error
    assert (result.error or "").startswith("VM folder 'vm/nowhere' not found; choices: ")
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.calls("CreateFolder") == counters.calls("ImportVApp") == 0
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def folder_exists(connection: ConnectionSettings, path: str) -> bool:
    async with Importer(connection) as importer:
        snapshot = await importer.inventory()
    return any(item.path.endswith(f"/{path}") for item in snapshot.items("vm-folder"))


@pytest.mark.parametrize(("case", "run_flag", "defaults", "asks", "does_not_ask"), [
    (1, False, "", "    create_folders: true\n", ""),
    (2, True, "", "", "    create_folders: false\n"),
    (3, False, "  create_folders: true\n", "", "    create_folders: false\n"),
], ids=["entry-key", "entry-overrides-run-flag", "defaults-key"])
async def test_create_folders_as_a_batch_key_applies_to_the_entries_that_ask(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path, case: int, run_flag: bool,
    defaults: str, asks: str, does_not_ask: str,
) -> None:
    plan = await make_batch(
        tmp_path,
        f"  - name: keyfold-{case}\n    folder: vm/keyed{case}/wave\n{asks}"
        f"  - name: nokeyfold-{case}\n    folder: vm/unkeyed{case}\n{does_not_ask}",
        extra_defaults=defaults)
    runner = await run_plan(connection, plan,
                            RunSettings(concurrency=2, create_folders=run_flag))
    asked, refused = runner.results
    assert asked.status is JobStatus.IMPORTED, asked.error
    assert refused.status is JobStatus.FAILED and refused.input_error
    assert (refused.error or "").startswith(f"VM folder 'vm/unkeyed{case}' not found; choices: ")
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.ok("CreateFolder") == 2  # keyed, then keyed/wave: nothing for the other
    assert counters.calls("ImportVApp") == 1
    assert await vms_named(connection, f"nokeyfold-{case}") == []
    assert len(await vms_named(connection, f"keyfold-{case}")) == 1
    assert await folder_exists(connection, f"vm/keyed{case}/wave")
    assert not await folder_exists(connection, f"vm/unkeyed{case}")
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_deployment_the_descriptor_lacks_fails_its_job_before_vcenter(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, (
        "  - name: dep-default\n"
        "  - name: dep-huge\n    deployment: huge\n"
        "  - name: dep-large\n    deployment: large\n"))
    await anyio.to_thread.run_sync(lambda: build_package(
        tmp_path, "photon", disks=(DiskSpec(16, 64 * 1024),),
        envelope_sections=DEPLOYMENT_OPTION_SECTION))
    runner = await run_plan(connection, plan, RunSettings(concurrency=2, job_retries=2))
    by_name = {r.name: r for r in runner.results}
    for name in ("dep-default", "dep-large"):
        assert by_name[name].status is JobStatus.IMPORTED, by_name[name].error
    huge = by_name["dep-huge"]
    assert huge.status is JobStatus.FAILED and huge.input_error
    assert (huge.attempts, huge.error_kind) == (0, "input")
    assert huge.error == ("dep-huge: deployment option 'huge' not in the descriptor; "
                          "choices: small, large")
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.calls("CreateImportSpec") == counters.calls("ImportVApp") == 2
    assert await vms_named(connection, "dep-huge") == []
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


@pytest.mark.parametrize(("parallel", "by_key"), [(1, False), (3, False), (3, True)],
                         ids=["run-1", "run-3", "batch-key-3"])
async def test_parallel_disks_upload_a_vms_disks_at_once_within_the_bound(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path, parallel: int, by_key: bool
) -> None:
    disks = (DiskSpec(8, 200_000), DiskSpec(8, 200_000), DiskSpec(8, 200_000),
             DiskSpec(8, 200_000))
    name = f"par-{parallel}" + ("-key" if by_key else "")
    # The batch key overrides the run's setting (1 here).
    key = f"    parallel_disks: {parallel}\n" if by_key else ""
    plan = await make_batch(tmp_path, f"  - name: {name}\n{key}")
    await anyio.to_thread.run_sync(lambda: build_package(tmp_path, "photon", disks=disks))
    # Slow each upload down so that uploads which may overlap do overlap.
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
        nfc={"throttle_bps": 1_000_000, "times": 0}))
    runner = await run_plan(connection, plan, RunSettings(
        concurrency=1, parallel_disks=1 if by_key else parallel))
    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED, result.error
    (vm,) = await vms_named(connection, name)
    assert vm.disks == 4
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.nfc_max_in_flight == parallel
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)
