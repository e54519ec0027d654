"""Import-spec reuse against the simulator: a derived spec is the one CreateImportSpec
answers for that VM, a batch asks once per group, and a refused derived spec falls
back to the VM's own CreateImportSpec."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from pyVmomi import vim
from pyVmomi.SoapAdapter import Serialize

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.import_specs import create_import_spec, derive_import_spec, property_key
from asyncovf.engine.options import ImportOptions, RunSettings
from asyncovf.importer import Importer
from asyncovf.ovf.source import open_package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from asyncovf.vsphere.session import VCenterSession
from tests.factory import APPLIANCE_PRODUCT_SECTION, DiskSpec, build_package
from tests.faults.support import FaultRun, run_cli
from tests.integration.inspect import list_vms
from tests.integration.test_batch import check_invariants, make_batch, run_plan
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

HOSTNAME = "appliance.hostname.web"
PORT = "appliance.port.web"


def serialized(result: Any) -> str:
    """The spec as the wire carries it, temporary device keys made alike."""
    text = Serialize(result)
    text = text.decode() if isinstance(text, bytes) else text
    return re.sub(r"<(key|controllerKey)>-?\d+</\1>", r"<\1>KEY</\1>", text)


async def test_a_derived_spec_is_what_create_import_spec_answers_for_that_vm(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    built = await anyio.to_thread.run_sync(lambda: build_package(
        tmp_path, "appliance", disks=(DiskSpec(16, 64 * 1024), DiskSpec(8, 32 * 1024)),
        product_section=APPLIANCE_PRODUCT_SECTION))
    package = await open_package(built.path)
    first = {HOSTNAME: "reuse-a.example", PORT: "8081"}
    second = {HOSTNAME: "reuse-b.example", PORT: "8082"}
    async with Importer(connection) as importer:
        placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
        session = importer.session
        origin = await create_import_spec(session, package, placement, "reuse-a",
                                          ImportOptions(properties=first))
        asked = await create_import_spec(session, package, placement, "reuse-b",
                                         ImportOptions(properties=second))
    derived = derive_import_spec(origin, name="reuse-a", properties=first,
                                 new_name="reuse-b", new_properties=second)

    assert serialized(derived) == serialized(asked)
    # The two answers differ where a VM's spec must: the test compares something.
    assert serialized(origin) != serialized(asked)
    assert "reuse-a" not in serialized(derived) and "8081" not in serialized(derived)
    # Deriving copies: the origin is as vCenter answered it.
    assert origin.importSpec.configSpec.name == "reuse-a"
    await anyio.to_thread.run_sync(check_invariants, vcsim)


async def vm_layout(connection: ConnectionSettings, prefix: str) -> dict[str, Any]:
    """name → (disk file names, vApp property ``class.id.instance`` → value) of every VM
    named ``prefix…``."""
    vms = [vm for vm in await list_vms(connection) if vm.name.startswith(prefix)]
    layout = {}
    async with VCenterSession(connection) as session:
        for vm in vms:
            props = await session.retrieve(vim.VirtualMachine(vm.moid),
                                           ["config.hardware.device", "config.vAppConfig"])
            disks = sorted(d.backing.fileName for d in props["config.hardware.device"]
                           if isinstance(d, vim.vm.device.VirtualDisk))
            vapp = props.get("config.vAppConfig")
            values = {property_key(p): p.value or ""
                      for p in (vapp.property if vapp is not None else None) or ()}
            layout[vm.name] = (disks, values)
    return layout


async def test_a_batch_asks_once_per_group_and_each_vm_gets_its_own_paths_and_values(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, (
        '  - name: "spec-{index:02d}"\n    count: 12\n'
        f'    properties: {{{HOSTNAME}: "{{name}}.example", {PORT}: "80{{index:02d}}"}}\n'
        '  - name: "other-{index:02d}"\n    count: 3\n    disk_provisioning: thin\n'))
    await anyio.to_thread.run_sync(lambda: build_package(
        tmp_path, "photon", disks=(DiskSpec(16, 64 * 1024), DiskSpec(8, 32 * 1024)),
        product_section=APPLIANCE_PRODUCT_SECTION))
    runner = await run_plan(connection, plan, RunSettings(concurrency=4))

    assert [r.error for r in runner.results if r.status is not JobStatus.IMPORTED] == []
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    # Two groups (another provisioning is another call): one CreateImportSpec each.
    assert counters.calls("CreateImportSpec") == 2 and counters.ok("ImportVApp") == 15
    assert runner.import_specs is not None and runner.import_specs.derived == 13
    layout = await vm_layout(connection, "spec-")
    assert len(layout) == 12
    for index in range(1, 13):
        name = f"spec-{index:02d}"
        disks, values = layout[name]
        assert disks == [f"[LocalDS_0] {name}/disk-0.vmdk", f"[LocalDS_0] {name}/disk-1.vmdk"]
        assert values == {HOSTNAME: f"{name}.example", PORT: f"80{index:02d}",
                          "appliance.token.web": ""}  # not set: its default applies
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


async def test_a_refused_derived_spec_makes_that_vm_ask_for_its_own(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    plan = await make_batch(tmp_path, '  - name: "refused-{index}"\n    count: 4\n')
    # The second ImportVApp carries the first derived spec: vCenter says its
    # folder exists, as a vCenter choosing other paths would.
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(soap=[
        {"method": "ImportVApp", "fault": "FileAlreadyExists", "nth": 2, "times": 1}]))
    runner = await run_plan(connection, plan, RunSettings(concurrency=1))

    assert [(r.name, r.status, r.attempts) for r in runner.results] == [
        (f"refused-{i}", JobStatus.IMPORTED, 1) for i in range(1, 5)]
    counters = await anyio.to_thread.run_sync(vcsim.counters)
    assert counters.faults("ImportVApp") == 1
    # The group's call, and refused-2's own after the refusal; 3 and 4 derived again.
    assert counters.calls("CreateImportSpec") == 2 and counters.calls("ImportVApp") == 5
    assert runner.import_specs is not None and runner.import_specs.derived == 3
    assert counters.leases_created == 4
    await anyio.to_thread.run_sync(check_invariants, vcsim, runner)


@pytest.mark.parametrize(("flags", "asked"), [((), 1), (("--spec-per-vm",), 5)],
                         ids=["by-group", "spec-per-vm"])
async def test_spec_per_vm_asks_vcenter_for_every_vm_and_the_report_says_so(
    fault_run: FaultRun, tmp_path: Path, flags: tuple[str, ...], asked: int
) -> None:
    batch = tmp_path / "fleet.yaml"
    await anyio.Path(batch).write_text(
        f"defaults:\n  source: {fault_run.package_path}\n  cluster: DC0_C0\n"
        f'  datastore: LocalDS_0\nvms:\n  - name: "{fault_run.prefix}-{{index}}"\n'
        "    count: 5\n")
    report = tmp_path / "r.json"
    status, _, stderr = await run_cli(fault_run, batch, "--concurrency", "2",
                                      "--report", str(report), *flags)
    assert status == 0, stderr
    counters = await fault_run.counters()
    assert (counters.calls("CreateImportSpec"), counters.ok("ImportVApp")) == (asked, 5)
    run = json.loads(await anyio.Path(report).read_text())["run"]
    assert run["settings"]["spec_per_vm"] is bool(flags)
    await fault_run.check_invariants(imported={f"{fault_run.prefix}-{i}" for i in range(1, 6)})
