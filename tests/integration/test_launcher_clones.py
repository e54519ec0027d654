"""The launcher's clone tasks, CancelTask, total NFC cap and CreateImportSpec's vApp options
(tests/vcsim/launcher/clones.go, vapp.go, intake.go, importspec.go), driven with plain
vSphere calls through VCenterSession.

Each test makes its own seed VM (CreateVM_Task with vApp options, a disk and a
network card), so vcsim's default VMs stay as they are, and removes every VM
it made. Nothing here times anything: a task is seen running because it runs
for a minute unless cancelled, and the NFC cap is seen through the launcher's
counters of the bytes and waits of its bucket.
"""

from __future__ import annotations

import ssl
import urllib.error
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
import pytest
from pyVmomi import vim, vmodl

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.import_specs import property_key
from asyncovf.engine.options import ImportOptions, RunSettings
from asyncovf.errors import AsyncOvfError, TaskError, VCenterError
from asyncovf.importer import Importer
from asyncovf.ovf.source import open_package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from asyncovf.vsphere.session import VCenterSession
from tests.factory import (
    APPLIANCE_PRODUCT_SECTION,
    DEPLOYMENT_OPTION_SECTION,
    DiskSpec,
    build_package,
    ovf_descriptor,
)
from tests.integration.inspect import list_vms, vms_named
from tests.integration.test_batch import check_invariants, make_batch, run_plan
from tests.vcsim.harness import Counters, Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

T = TypeVar("T")
LONG = 60.0  # clone_seconds for a task that must still run when the test looks at it
PROPERTIES = (  # key, id, default value, value
    (1, "ip", "0.0.0.0", "10.0.0.1"),
    (2, "hostname", "seed", "seed-host"),
    (3, "dns", "", "10.0.0.53"),
)


async def in_thread(call: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(call)


async def counters(vcsim: Vcsim) -> Counters:
    return await in_thread(vcsim.counters)


async def counters_when(vcsim: Vcsim, holds: Callable[[Counters], bool],
                        bound: float = 30.0) -> Counters:
    """The launcher's counters once ``holds`` is true of them (polled, up to ``bound`` s)."""
    with anyio.fail_after(bound):
        while True:
            snapshot = await counters(vcsim)
            if holds(snapshot):
                return snapshot
            await anyio.sleep(0.05)


@dataclass
class World:
    """A session, the placement the VMs go to, and a seed VM to clone."""

    session: VCenterSession
    connection: ConnectionSettings
    folder: Any
    pool: Any
    datastore: Any
    seed: Any
    portgroup: Any
    portgroup_key: str
    switch_uuid: str

    def clone_spec(self, config: vim.vm.ConfigSpec | None = None) -> vim.vm.CloneSpec:
        return vim.vm.CloneSpec(
            location=vim.vm.RelocateSpec(pool=self.pool, datastore=self.datastore),
            template=False, powerOn=False, config=config)

    async def clone(self, name: str, config: vim.vm.ConfigSpec | None = None) -> Any:
        """CloneVM_Task of the seed; returns the task."""
        return await self.session.invoke(self.seed, "Clone", folder=self.folder, name=name,
                                         spec=self.clone_spec(config))

    async def task_info(self, task: Any) -> Any:
        return (await self.session.retrieve(task, ["info"]))["info"]

    async def vm_named(self, name: str) -> str | None:
        found = await vms_named(self.connection, name)
        assert len(found) <= 1
        return found[0].moid if found else None


def property_spec(operation: str, key: int, **fields: Any) -> vim.vApp.PropertySpec:
    return vim.vApp.PropertySpec(operation=operation,
                                 info=vim.vApp.PropertyInfo(key=key, **fields))


def seed_config(name: str) -> vim.vm.ConfigSpec:
    """A small VM with vApp options, a disk, a network card and an extraConfig entry."""
    controller = vim.vm.device.VirtualLsiLogicController(
        key=-100, busNumber=0, sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing)
    disk = vim.vm.device.VirtualDisk(
        key=-1, controllerKey=-100, unitNumber=0, capacityInKB=1024,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent",
                                                              fileName="[LocalDS_0]"))
    nic = vim.vm.device.VirtualVmxnet3(
        key=-2, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName="VM Network"))
    return vim.vm.ConfigSpec(
        name=name, guestId="otherGuest", numCPUs=1, memoryMB=64,
        files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
        annotation="the seed",
        extraConfig=[vim.option.OptionValue(key="seed.marker", value="kept")],
        deviceChange=[
            vim.vm.device.VirtualDeviceSpec(operation="add", device=controller),
            vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create",
                                            device=disk),
            vim.vm.device.VirtualDeviceSpec(operation="add", device=nic),
        ],
        vAppConfig=vim.vApp.VmConfigSpec(
            product=[vim.vApp.ProductSpec(operation="add", info=vim.vApp.ProductInfo(
                key=0, name="appliance", version="1.0"))],
            property=[property_spec("add", key, id=id_, type="string", defaultValue=default,
                                    value=value, userConfigurable=True)
                      for key, id_, default, value in PROPERTIES],
            ovfEnvironmentTransport=["com.vmware.guestInfo"]))


@asynccontextmanager
async def world(connection: ConnectionSettings, name: str) -> AsyncIterator[World]:
    """A seed VM named ``name``-seed; every VM named ``name``… is removed at the end."""
    async with VCenterSession(connection) as session:
        index = session.content.searchIndex

        async def find(path: str) -> Any:
            return await session.invoke(index, "FindByInventoryPath", inventoryPath=path)

        folder = await find("DC0/vm")
        cluster = await find("DC0/host/DC0_C0")
        pool = (await session.retrieve(cluster, ["resourcePool"]))["resourcePool"]
        datastore = await find("DC0/datastore/LocalDS_0")
        portgroup = await find("DC0/network/DC0_DVPG0")
        facts = await session.retrieve(portgroup, ["key", "config.distributedVirtualSwitch"])
        switch = facts["config.distributedVirtualSwitch"]
        switch_uuid = (await session.retrieve(switch, ["uuid"]))["uuid"]
        try:
            task = await session.invoke(folder, "CreateVm", config=seed_config(f"{name}-seed"),
                                        pool=pool)
            seed = await session.wait_for_task(task)
            yield World(session=session, connection=connection, folder=folder, pool=pool,
                        datastore=datastore, seed=seed, portgroup=portgroup,
                        portgroup_key=facts["key"], switch_uuid=switch_uuid)
        finally:
            for vm in await list_vms(connection):
                if vm.name.startswith(name):
                    await session.wait_for_task(
                        await session.invoke(vim.VirtualMachine(vm.moid), "Destroy"))


def backings(devices: list[Any], kind: type[Any]) -> list[Any]:
    """The backings of the devices of that kind."""
    matching: list[Any] = [device for device in devices if isinstance(device, kind)]
    return [device.backing for device in matching]


def properties_of(vapp: Any) -> dict[str, tuple[int, str, str]]:
    return {p.id: (p.key, p.defaultValue or "", p.value or "") for p in vapp.property or ()}


# -- the clone's configuration --------------------------------------------------------


async def test_a_clone_keeps_its_source_config_with_the_spec_on_top(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    async with world(connection, "lc-config") as w:
        nic_key = next(d.key for d in (await w.session.retrieve(
            w.seed, ["config.hardware.device"]))["config.hardware.device"]
            if isinstance(d, vim.vm.device.VirtualEthernetCard))
        port = vim.dvs.PortConnection(switchUuid=w.switch_uuid, portgroupKey=w.portgroup_key)
        nic = vim.vm.device.VirtualVmxnet3(
            key=nic_key,
            backing=vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port))
        config = vim.vm.ConfigSpec(
            annotation="clone one",
            extraConfig=[vim.option.OptionValue(key="clone.marker", value="mine")],
            deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)],
            vAppConfig=vim.vApp.VmConfigSpec(property=[
                property_spec("edit", 1, value="10.1.2.3"),
                property_spec("edit", 2, value=""),  # an edit to empty is an edit
                property_spec("add", 4, id="gateway", type="string", value="10.1.2.254"),
            ]))
        clone = await w.session.wait_for_task(await w.clone("lc-config-1", config))
        plain = await w.session.wait_for_task(await w.clone("lc-config-2"))

        read = await w.session.retrieve(clone, [
            "config.annotation", "config.vAppConfig", "config.extraConfig",
            "config.hardware.device", "summary.config.annotation"])
        assert read["config.annotation"] == read["summary.config.annotation"] == "clone one"
        vapp = read["config.vAppConfig"]
        assert properties_of(vapp) == {
            "ip": (1, "0.0.0.0", "10.1.2.3"), "hostname": (2, "seed", ""),
            "dns": (3, "", "10.0.0.53"), "gateway": (4, "", "10.1.2.254")}
        assert [(p.name, p.version) for p in vapp.product] == [("appliance", "1.0")]
        assert list(vapp.ovfEnvironmentTransport) == ["com.vmware.guestInfo"]
        extra = {o.key: o.value for o in read["config.extraConfig"]}
        assert extra["seed.marker"] == "kept" and extra["clone.marker"] == "mine"
        (card,) = backings(read["config.hardware.device"], vim.vm.device.VirtualEthernetCard)
        assert card.port.portgroupKey == w.portgroup_key

        plain_read = await w.session.retrieve(plain, ["config.annotation", "config.vAppConfig"])
        assert plain_read["config.annotation"] == "the seed"
        assert properties_of(plain_read["config.vAppConfig"]) == {
            id_: (key, default, value) for key, id_, default, value in PROPERTIES}

        # The seed kept its own: its disk names its own file, its options are unedited.
        seed = await w.session.retrieve(w.seed, ["config.hardware.device", "config.vAppConfig"])
        (disk,) = backings(seed["config.hardware.device"], vim.vm.device.VirtualDisk)
        assert disk.fileName.startswith("[LocalDS_0] lc-config-seed/"), disk.fileName
        assert properties_of(seed["config.vAppConfig"])["ip"] == (1, "0.0.0.0", "10.0.0.1")
        (disk,) = backings(read["config.hardware.device"], vim.vm.device.VirtualDisk)
        assert disk.fileName.startswith("[LocalDS_0] lc-config-1/"), disk.fileName

        info = await w.task_info(await w.clone("lc-config-3"))
        assert (info.name.info.wsdlName, info.descriptionId, info.entity._moId,
                info.cancelable) == ("CloneVM_Task", "VirtualMachine.clone", w.seed._moId, True)
    snapshot = await counters(vcsim)
    assert (snapshot.clones_started, snapshot.clones_succeeded, snapshot.clones_failed) == (3, 3, 0)


async def test_a_vapp_edit_of_a_key_the_source_lacks_fails_the_task_and_creates_nothing(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    async with world(connection, "lc-badkey") as w:
        config = vim.vm.ConfigSpec(vAppConfig=vim.vApp.VmConfigSpec(
            property=[property_spec("edit", 99, value="x")]))
        with pytest.raises(TaskError) as caught:
            await w.session.wait_for_task(await w.clone("lc-badkey-1", config))
        assert isinstance(caught.value.fault, vmodl.fault.InvalidArgument)
        assert await w.vm_named("lc-badkey-1") is None
    snapshot = await counters(vcsim)
    assert (snapshot.clones_started, snapshot.clones_failed, snapshot.clone_vms_left) == (1, 1, 0)


async def test_reconfigure_carries_vapp_options_as_vcenter_does(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    async with world(connection, "lc-reconf") as w:
        spec = vim.vm.ConfigSpec(vAppConfig=vim.vApp.VmConfigSpec(
            property=[property_spec("edit", 3, value="10.9.9.9"),
                      vim.vApp.PropertySpec(operation="remove", removeKey=2)]))
        await w.session.wait_for_task(await w.session.invoke(w.seed, "Reconfigure", spec=spec))
        vapp = (await w.session.retrieve(w.seed, ["config.vAppConfig"]))["config.vAppConfig"]
        assert properties_of(vapp) == {"ip": (1, "0.0.0.0", "10.0.0.1"),
                                       "dns": (3, "", "10.9.9.9")}
        bad = vim.vm.ConfigSpec(vAppConfig=vim.vApp.VmConfigSpec(
            property=[property_spec("add", 1, id="again")]))
        with pytest.raises(TaskError) as caught:
            await w.session.wait_for_task(await w.session.invoke(w.seed, "Reconfigure", spec=bad))
        assert isinstance(caught.value.fault, vmodl.fault.InvalidArgument)


async def test_import_vapp_carries_vapp_options_as_vcenter_does(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    # the Abort below is answered once the launcher deleted the VM, as vCenter does
    await in_thread(lambda: vcsim.behave(delete_before_answer=True))
    async with world(connection, "lc-import") as w:
        descriptor = ovf_descriptor("lc-import", [("lc-import-disk1.vmdk", 1024, 16)])
        result = await w.session.invoke(
            w.session.content.ovfManager, "CreateImportSpec", ovfDescriptor=descriptor,
            resourcePool=w.pool, datastore=w.datastore,
            cisp=vim.OvfManager.CreateImportSpecParams(entityName="lc-import-1"))
        result.importSpec.configSpec.vAppConfig = vim.vApp.VmConfigSpec(
            property=[property_spec("add", 7, id="role", type="string", value="db")])
        lease = await w.session.invoke(w.pool, "ImportVApp", spec=result.importSpec,
                                       folder=w.folder)
        vm = (await w.session.retrieve(lease, ["info"]))["info"].entity
        vapp = (await w.session.retrieve(vm, ["config.vAppConfig"]))["config.vAppConfig"]
        await w.session.invoke(lease, "Abort")
        assert properties_of(vapp) == {"role": (7, "", "db")}
        assert await w.vm_named("lc-import-1") is None


# -- CreateImportSpec's vApp options, as vCenter answers them -------------------------

#: A second ProductSection with what the appliance's lacks: no instance, categories,
#: labels, descriptions, qualifiers, a password and a value per deployment option.
NETWORK_PRODUCT_SECTION = """\
    <ProductSection ovf:class="net">
      <Info>Network settings</Info>
      <Product>Networking</Product>
      <Category>Addresses</Category>
      <Property ovf:key="ip" ovf:type="string" ovf:qualifiers="MinLen(7) MaxLen(15)"
                ovf:userConfigurable="true" ovf:value="0.0.0.0">
        <Label>IP address</Label>
        <Description>The address of eth0</Description>
      </Property>
      <Property ovf:key="mode" ovf:type="string" ovf:qualifiers='ValueMap{"dhcp","static"}'
                ovf:userConfigurable="true" ovf:value="dhcp"/>
      <Category>Sizing</Category>
      <Property ovf:key="workers" ovf:type="uint8" ovf:userConfigurable="true" ovf:value="2">
        <Value ovf:value="8" ovf:configuration="large"/>
      </Property>
      <Property ovf:key="secret" ovf:type="string" ovf:password="true"
                ovf:userConfigurable="true"/>
    </ProductSection>
"""
APPLIANCE_KEYS = {"appliance.hostname.web": 0, "appliance.port.web": 1, "appliance.token.web": 2}


def property_infos(vapp: Any) -> list[Any]:
    """The property infos of a VM's vApp options, or of a spec's (its specs' infos)."""
    return [getattr(p, "info", p) for p in (vapp.property if vapp is not None else None) or ()]


def property_rows(vapp: Any) -> list[tuple[Any, ...]]:
    """Each property info's fields, in order; unset strings read as empty."""
    return [(p.key, p.classId or "", p.id, p.instanceId or "", p.category or "",
             p.label or "", p.type, p.userConfigurable, p.defaultValue or "", p.value or "",
             p.description or "") for p in property_infos(vapp)]


def values_of(vapp: Any) -> dict[str, tuple[int, str]]:
    """``class.id.instance`` → (key, value) of each property."""
    return {property_key(p): (p.key, p.value or "") for p in property_infos(vapp)}


async def test_create_import_spec_answers_vapp_options_as_vcenter_does(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    descriptor = ovf_descriptor(
        "lc-spec", [("lc-spec-disk1.vmdk", 1024, 16)],
        product_section=APPLIANCE_PRODUCT_SECTION + NETWORK_PRODUCT_SECTION,
        envelope_sections=DEPLOYMENT_OPTION_SECTION,
    ).replace("<VirtualHardwareSection>",
              '<VirtualHardwareSection ovf:transport="com.vmware.guestInfo iso">')
    mapping = {"appliance.hostname.web": "web-01.example", "net.ip": "10.0.0.7"}
    async with VCenterSession(connection) as session:
        index = session.content.searchIndex
        cluster = await session.invoke(index, "FindByInventoryPath",
                                       inventoryPath="DC0/host/DC0_C0")
        pool = (await session.retrieve(cluster, ["resourcePool"]))["resourcePool"]
        datastore = await session.invoke(index, "FindByInventoryPath",
                                         inventoryPath="DC0/datastore/LocalDS_0")

        async def spec(text: str, deployment: str = "", **values: str) -> Any:
            params = vim.OvfManager.CreateImportSpecParams(
                entityName="lc-spec-1", deploymentOption=deployment,
                propertyMapping=[vim.KeyValue(key=k, value=v) for k, v in values.items()])
            result = await session.invoke(session.content.ovfManager, "CreateImportSpec",
                                          ovfDescriptor=text, resourcePool=pool,
                                          datastore=datastore, cisp=params)
            assert not result.error
            return result.importSpec.configSpec

        config = await spec(descriptor, "large", **mapping)
        default = await spec(descriptor)
        plain = await spec(ovf_descriptor("lc-spec", [("lc-spec-disk1.vmdk", 1024, 16)]))

    vapp = config.vAppConfig
    assert isinstance(vapp, vim.vApp.VmConfigSpec)
    assert {p.operation for p in vapp.property} == {p.operation for p in vapp.product} == {"add"}
    assert property_rows(vapp) == [
        (0, "appliance", "hostname", "web", "", "", "string", True, "appliance.local",
         "web-01.example", ""),
        (1, "appliance", "port", "web", "", "", "int", True, "8080", "", ""),
        (2, "appliance", "token", "web", "", "", "string", False, 'a&b<c"', "", ""),
        (3, "net", "ip", "", "Addresses", "IP address", "string(7..15)", True, "0.0.0.0",
         "10.0.0.7", "The address of eth0"),
        (4, "net", "mode", "", "Addresses", "", 'string["dhcp", "static"]', True, "dhcp", "",
         ""),
        (5, "net", "workers", "", "Sizing", "", "int", True, "8", "", ""),  # large's value
        (6, "net", "secret", "", "Sizing", "", "password", True, "", "", ""),
    ]
    products: list[Any] = [p.info for p in vapp.product]
    assert [(p.key, p.classId, p.instanceId, p.name, p.vendor, p.version)
            for p in products] == [
        (0, "appliance", "web", "Test appliance", "asyncovf tests", "1.0"),
        (1, "net", "", "Networking", "", "")]
    assert list(vapp.ovfEnvironmentTransport) == ["com.vmware.guestInfo", "iso"]
    # vCenter keeps no property in extraConfig (vcsim put the mapped ones there).
    assert not [o.key for o in config.extraConfig or ()]
    # No deployment option asked: the default one's (small) values, nothing mapped.
    assert [row[8:10] for row in property_rows(default.vAppConfig)][5] == ("2", "")
    assert all(value == "" for _, value in values_of(default.vAppConfig).values())
    # A descriptor without vApp options gets none.
    assert plain.vAppConfig is None and not plain.extraConfig


async def test_an_imported_vm_has_its_vapp_options_and_a_clone_has_its_edits(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    built = await in_thread(lambda: build_package(
        tmp_path, "lc-vapp", disks=(DiskSpec(16, 64 * 1024),),
        product_section=APPLIANCE_PRODUCT_SECTION))
    package = await open_package(built.path)
    async with world(connection, "lc-vapp") as w:
        async with Importer(connection) as importer:
            placement = await importer.resolve(PlacementRequest(cluster="DC0_C0",
                                                                datastore="LocalDS_0"))
            state = await importer.import_package(
                package, "lc-vapp-imported", placement,
                ImportOptions(properties={"appliance.hostname.web": "seed.example"}))
        assert state.vm is not None
        imported = vim.VirtualMachine(state.vm)
        read = await w.session.retrieve(imported, ["config.vAppConfig", "config.extraConfig"])
        vapp = read["config.vAppConfig"]
        assert property_rows(vapp) == [
            (0, "appliance", "hostname", "web", "", "", "string", True, "appliance.local",
             "seed.example", ""),
            (1, "appliance", "port", "web", "", "", "int", True, "8080", "", ""),
            (2, "appliance", "token", "web", "", "", "string", False, 'a&b<c"', "", ""),
        ]
        assert [(p.key, p.classId, p.instanceId, p.name, p.vendor, p.version)
                for p in vapp.product] == [
            (0, "appliance", "web", "Test appliance", "asyncovf tests", "1.0")]
        assert not {o.key for o in read["config.extraConfig"] or ()} & set(APPLIANCE_KEYS)

        # A clone edits values by the source's keys, with only key and value set.
        config = vim.vm.ConfigSpec(vAppConfig=vim.vApp.VmConfigSpec(property=[
            property_spec("edit", APPLIANCE_KEYS["appliance.port.web"], value="9090"),
            property_spec("edit", APPLIANCE_KEYS["appliance.hostname.web"],
                          value="clone.example")]))
        clone = await w.session.wait_for_task(await w.session.invoke(
            imported, "Clone", folder=w.folder, name="lc-vapp-clone",
            spec=w.clone_spec(config)))
        cloned = (await w.session.retrieve(clone, ["config.vAppConfig"]))["config.vAppConfig"]
        assert values_of(cloned) == {"appliance.hostname.web": (0, "clone.example"),
                                     "appliance.port.web": (1, "9090"),
                                     "appliance.token.web": (2, "")}
        # Everything but the values is the source's; the source is as it was.
        assert [row[:9] + row[10:] for row in property_rows(cloned)] == [
            row[:9] + row[10:] for row in property_rows(vapp)]
        assert [p.name for p in cloned.product] == ["Test appliance"]
        source = (await w.session.retrieve(imported, ["config.vAppConfig"]))["config.vAppConfig"]
        assert values_of(source)["appliance.hostname.web"] == (0, "seed.example")


async def test_the_clone_strategy_sets_each_clones_properties_on_the_seeds_keys(
        vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path) -> None:
    plan = await make_batch(tmp_path, (
        '  - name: "lc-fleet-{index}"\n    count: 3\n'
        '    properties: {appliance.hostname.web: "{name}.example", '
        'appliance.port.web: "80{index:02d}"}\n'))
    await in_thread(lambda: build_package(
        tmp_path, "photon", disks=(DiskSpec(16, 64 * 1024),),
        product_section=APPLIANCE_PRODUCT_SECTION))
    runner = await run_plan(connection, plan, RunSettings(concurrency=2, strategy="clone"))
    assert [(r.name, r.status) for r in runner.results] == [
        (f"lc-fleet-{i}", JobStatus.IMPORTED) for i in range(1, 4)]
    snapshot = await counters(vcsim)
    assert snapshot.ok("ImportVApp") == 1 and snapshot.ok("CloneVM_Task") == 3
    async with VCenterSession(connection) as session:
        for vm in await list_vms(connection):
            if not vm.name.startswith("lc-fleet-"):
                continue
            vapp = (await session.retrieve(vim.VirtualMachine(vm.moid),
                                           ["config.vAppConfig"]))["config.vAppConfig"]
            index = int(vm.name.rsplit("-", 1)[1])
            assert values_of(vapp) == {"appliance.hostname.web": (0, f"{vm.name}.example"),
                                       "appliance.port.web": (1, f"80{index:02d}"),
                                       "appliance.token.web": (2, "")}, vm.name
            await session.wait_for_task(await session.invoke(vim.VirtualMachine(vm.moid),
                                                             "Destroy"))
    await in_thread(lambda: check_invariants(vcsim, runner))


# -- clone tasks that run, are cancelled, or fail -------------------------------------


@pytest.mark.parametrize("leaves_vm", [True, False], ids=["vm-left", "vm-deleted"])
async def test_cancelling_a_running_clone_ends_it_in_request_canceled(
        vcsim: Vcsim, connection: ConnectionSettings, leaves_vm: bool) -> None:
    await in_thread(lambda: vcsim.behave(clone_seconds=LONG, clone_leaves_vm=leaves_vm))
    name = f"lc-cancel-{'left' if leaves_vm else 'gone'}"
    async with world(connection, name) as w:
        task = await w.clone(f"{name}-1")
        info = await w.task_info(task)
        assert (info.state, info.name.info.wsdlName) == ("running", "CloneVM_Task")
        assert await w.vm_named(f"{name}-1") is not None  # as in vCenter: there, partial
        running = await counters(vcsim)
        assert (running.clones_started, running.clones_running) == (1, 1)

        await w.session.invoke(task, "Cancel")
        info = await w.task_info(task)
        assert info.state == "error" and info.cancelled
        assert isinstance(info.error, vmodl.fault.RequestCanceled)
        with pytest.raises(VCenterError) as caught:
            await w.session.invoke(task, "Cancel")  # it has ended
        assert caught.value.fault_type == "InvalidState"
        assert (await w.vm_named(f"{name}-1") is not None) == leaves_vm

        snapshot = await counters(vcsim)
        assert (snapshot.clones_running, snapshot.clones_cancelled, snapshot.clones_failed) == (
            0, 1, 1)
        assert (snapshot.clone_vms_left, snapshot.clone_vms_deleted) == (
            (1, 0) if leaves_vm else (0, 1))
        assert snapshot.calls("CancelTask") == 2 and snapshot.faults("CancelTask") == 1


async def test_a_clone_task_that_is_not_cancelled_succeeds_after_its_time(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    await in_thread(lambda: vcsim.behave(clone_seconds=0.2))
    async with world(connection, "lc-wait") as w:
        vm = await w.session.wait_for_task(await w.clone("lc-wait-1"))
        assert vm._moId == await w.vm_named("lc-wait-1")
    snapshot = await counters(vcsim)
    assert (snapshot.clones_succeeded, snapshot.clones_running, snapshot.clones_failed) == (
        1, 0, 0)


@pytest.mark.parametrize("leaves_vm", [True, False], ids=["vm-left", "vm-deleted"])
async def test_a_task_fault_ends_the_clone_task_in_that_fault(
        vcsim: Vcsim, connection: ConnectionSettings, leaves_vm: bool) -> None:
    name = f"lc-fault-{'left' if leaves_vm else 'gone'}"
    await in_thread(lambda: vcsim.behave(clone_leaves_vm=leaves_vm))
    await in_thread(lambda: vcsim.set_faults(soap=[{
        "method": "CloneVM_Task", "vm": f"{name}-2", "task_fault": "InsufficientResourcesFault"}]))
    async with world(connection, name) as w:
        await w.session.wait_for_task(await w.clone(f"{name}-1"))  # another name: no fault
        with pytest.raises(TaskError) as caught:
            await w.session.wait_for_task(await w.clone(f"{name}-2"))
        assert isinstance(caught.value.fault, vim.fault.InsufficientResourcesFault)
        assert (await w.vm_named(f"{name}-2") is not None) == leaves_vm
    snapshot = await counters(vcsim)
    assert (snapshot.clones_started, snapshot.clones_succeeded, snapshot.clones_failed) == (
        2, 1, 1)
    assert (snapshot.clone_vms_left, snapshot.clone_vms_deleted) == (
        (1, 0) if leaves_vm else (0, 1))


async def test_an_unknown_task_fault_is_refused(vcsim: Vcsim) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        await in_thread(lambda: vcsim.set_faults(
            soap=[{"method": "CloneVM_Task", "task_fault": "NoSuchFault"}]))
    caught.value.close()
    assert caught.value.code == 400


async def test_a_lost_clone_answer_still_clones(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    await in_thread(lambda: vcsim.set_faults(soap=[{"method": "CloneVM_Task",
                                                    "drop_after_call": True}]))
    async with world(connection, "lc-lost") as w:
        with pytest.raises(AsyncOvfError):
            await w.clone("lc-lost-1")
        snapshot = await counters_when(vcsim, lambda c: c.clones_succeeded == 1)
        assert snapshot.dropped("CloneVM_Task") == 1 and snapshot.clones_started == 1
        assert await w.vm_named("lc-lost-1") is not None


async def test_cancel_task_on_a_task_the_launcher_did_not_make_goes_to_vcsim(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    async with world(connection, "lc-other") as w:
        task = await w.session.invoke(w.seed, "Reconfigure",
                                      spec=vim.vm.ConfigSpec(annotation="again"))
        with pytest.raises(VCenterError):
            await w.session.invoke(task, "Cancel")
    snapshot = await counters(vcsim)
    assert snapshot.calls("CancelTask") == snapshot.faults("CancelTask") == 1


# -- the total NFC cap -------------------------------------------------------------------


async def test_the_total_nfc_cap_throttles_concurrent_uploads_together(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    size, chunk = 256 * 1024, 32 * 1024
    await in_thread(lambda: vcsim.behave(nfc_total_mib_s=1.0))
    async with world(connection, "lc-cap") as w:
        descriptor = ovf_descriptor("lc-cap", [("lc-cap-disk1.vmdk", size, 16)])
        leases = []
        for number in (1, 2):
            result = await w.session.invoke(
                w.session.content.ovfManager, "CreateImportSpec", ovfDescriptor=descriptor,
                resourcePool=w.pool, datastore=w.datastore,
                cisp=vim.OvfManager.CreateImportSpecParams(entityName=f"lc-cap-{number}"))
            leases.append(await w.session.invoke(w.pool, "ImportVApp", spec=result.importSpec,
                                                 folder=w.folder))
        urls = []
        for lease in leases:
            info = (await w.session.retrieve(lease, ["info"]))["info"]
            parts = urlsplit(info.deviceUrl[0].url)
            urls.append(urlunsplit(parts._replace(netloc=vcsim.host)))

        started = [anyio.Event(), anyio.Event()]
        go = anyio.Event()

        async def body(number: int) -> AsyncIterator[bytes]:
            yield b"\0" * chunk
            started[number].set()
            await go.wait()  # both uploads are in the launcher before the rest is sent
            for _ in range(size // chunk - 1):
                yield b"\0" * chunk

        tls = ssl.create_default_context(cafile=str(vcsim.ca_file))
        statuses: list[int] = []
        async with aiohttp.ClientSession() as http:

            async def upload(number: int) -> None:
                async with http.post(urls[number], data=body(number), ssl=tls,
                                     headers={"Content-Length": str(size)}) as response:
                    statuses.append(response.status)

            async with anyio.create_task_group() as group:
                for number in (0, 1):
                    group.start_soon(upload, number)
                with anyio.fail_after(30):
                    for event in started:
                        await event.wait()
                await counters_when(vcsim, lambda c: c.nfc_max_in_flight == 2)
                go.set()
        for lease in leases:
            await w.session.invoke(lease, "Complete")
        assert statuses == [200, 200]
    snapshot = await counters(vcsim)
    assert snapshot.nfc_bytes == snapshot.nfc_cap_bytes == 2 * size
    assert snapshot.nfc_max_in_flight == 2 and snapshot.nfc_cap_waits > 0


async def test_clones_and_the_cap_are_as_vcsim_by_default(vcsim: Vcsim) -> None:
    behaviour = await in_thread(vcsim.behaviour)
    assert behaviour.nfc_total_mib_s == 0 and behaviour.clone_seconds == 0
    assert behaviour.clone_leaves_vm is True
    snapshot = await counters(vcsim)
    assert snapshot.nfc_cap_bytes == snapshot.nfc_cap_waits == 0
