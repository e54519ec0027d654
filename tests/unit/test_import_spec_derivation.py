"""Deriving a VM's import spec from its group's, and the cache that asks once per group.

The shapes here are real vCenter's (vApp properties in ``vAppConfig``, a disk
with a parent backing); the simulator's are proved in
tests/integration/test_import_spec_reuse.py.
"""

from __future__ import annotations

import copy
from typing import Any

import anyio
import pytest
from pyVmomi import vim
from pyVmomi.SoapAdapter import Serialize

from asyncovf.engine.import_specs import (
    ImportSpecCache,
    copy_result,
    derivable,
    derive_import_spec,
    spec_key,
)
from asyncovf.engine.options import ImportOptions
from asyncovf.errors import VCenterError
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.ovf.package import Package
from tests.factory import ovf_descriptor

pytestmark = pytest.mark.anyio

Disk = vim.vm.device.VirtualDisk


def vcenter_answer(name: str, hostname: str) -> Any:
    """A CreateImportSpec result shaped as vCenter's: paths, a parent disk, vApp properties."""
    parent = Disk.FlatVer2BackingInfo(fileName=f"[ds1] {name}/base.vmdk", diskMode="persistent")
    disk = Disk(key=-100, backing=Disk.FlatVer2BackingInfo(
        fileName=f"[ds1] {name}/{name}.vmdk", diskMode="persistent", parent=parent))
    iso = vim.vm.device.VirtualCdrom(key=-101, backing=vim.vm.device.VirtualCdrom.IsoBackingInfo(
        fileName=f"[ds1] {name}/_deviceImage0.iso"))
    properties = [vim.vApp.PropertySpec(operation="edit", info=vim.vApp.PropertyInfo(
        key=key, classId="appliance", id=pid, instanceId="web", value=value))
        for key, (pid, value) in enumerate((("hostname", hostname), ("port", "8080")))]
    config = vim.vm.ConfigSpec(
        name=name, files=vim.vm.FileInfo(vmPathName="[ds1]"),
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", device=disk),
                      vim.vm.device.VirtualDeviceSpec(operation="add", device=iso)],
        vAppConfig=vim.vApp.VmConfigSpec(property=properties),
        extraConfig=[vim.option.OptionValue(key="guestinfo.role", value=hostname)])
    return vim.OvfManager.CreateImportSpecResult(
        importSpec=vim.vm.VmImportSpec(configSpec=config),
        fileItem=[vim.OvfManager.FileItem(deviceId=f"/{name}/VirtualLsiLogicController0:0",
                                          path="disk1.vmdk", size=10)])


KEY = "appliance.hostname.web"


def test_the_name_its_paths_and_the_property_values_change_and_nothing_else() -> None:
    origin = vcenter_answer("web-01", "web-01.example")
    derived = derive_import_spec(origin, name="web-01", properties={KEY: "web-01.example"},
                                 new_name="web-02", new_properties={KEY: "web-02.example"})
    config = derived.importSpec.configSpec
    disk, iso = (change.device for change in config.deviceChange)
    assert config.name == "web-02" and config.files.vmPathName == "[ds1]"
    assert (disk.backing.fileName, disk.backing.parent.fileName, iso.backing.fileName) == (
        "[ds1] web-02/web-02.vmdk", "[ds1] web-02/base.vmdk", "[ds1] web-02/_deviceImage0.iso")
    assert derived.fileItem[0].deviceId == "/web-02/VirtualLsiLogicController0:0"
    assert [p.info.value for p in config.vAppConfig.property] == ["web-02.example", "8080"]
    # An extraConfig entry is not a property: its equal value stays.
    assert config.extraConfig[0].value == "web-01.example"
    # The origin is untouched, and a spec for the same VM is the origin again.
    assert origin.importSpec.configSpec.name == "web-01"
    again = derive_import_spec(origin, name="web-01", properties={KEY: "web-01.example"},
                               new_name="web-01", new_properties={KEY: "web-01.example"})
    assert Serialize(again) == Serialize(origin)


def test_a_path_only_holding_the_name_elsewhere_is_left_alone() -> None:
    origin = vcenter_answer("web", "h")
    origin.importSpec.configSpec.deviceChange[0].device.backing.fileName = "[ds1] shared/web/x.vmdk"
    derived = derive_import_spec(origin, name="web", properties={}, new_name="db",
                                 new_properties={})
    assert derived.importSpec.configSpec.deviceChange[0].device.backing.fileName == (
        "[ds1] shared/web/x.vmdk")


def test_other_property_keys_or_a_vapp_spec_are_not_derived() -> None:
    with pytest.raises(ValueError, match="same properties"):
        derive_import_spec(vcenter_answer("a", "h"), name="a", properties={KEY: "h"},
                           new_name="b", new_properties={})
    vapp = vim.OvfManager.CreateImportSpecResult(importSpec=vim.ImportSpec())
    with pytest.raises(ValueError, match="single VM"):
        derive_import_spec(vapp, name="a", properties={}, new_name="b", new_properties={})


@pytest.mark.parametrize(("name", "expected"), [
    ("web-001", True), ("db 2 (copy)", True), ("a.b_c", True),
    ("with/slash", False), ("per%cent", False), ("back\\slash", False), ("", False),
])
def test_a_name_a_path_would_escape_asks_for_its_own_spec(name: str, expected: bool) -> None:
    assert derivable(name) is expected


def package(text: str = "p") -> Package:
    descriptor = parse_descriptor(ovf_descriptor(text, [(f"{text}-disk1.vmdk", 10, 8)]).encode())
    return Package(location=f"{text}.ova", kind="ova", descriptor=descriptor, manifest=None,
                   members={})


def placement(pool: str = "resgroup-1", datastore: str = "datastore-1") -> Any:
    ref = lambda cls, moid: type("Ref", (), {"ref": cls(moid)})()  # noqa: E731
    return type("P", (), {"resource_pool": ref(vim.ResourcePool, pool),
                          "datastore": ref(vim.Datastore, datastore)})()


def test_what_create_import_spec_is_sent_besides_name_and_values_makes_the_key() -> None:
    base = spec_key(package(), placement(), ImportOptions(properties={KEY: "a"}))
    assert base == spec_key(package(), placement(), ImportOptions(properties={KEY: "b"}))
    for other in (
        spec_key(package("q"), placement(), ImportOptions(properties={KEY: "a"})),
        spec_key(package(), placement(pool="resgroup-2"), ImportOptions(properties={KEY: "a"})),
        spec_key(package(), placement(datastore="datastore-2"),
                 ImportOptions(properties={KEY: "a"})),
        spec_key(package(), placement(), ImportOptions(properties={})),
        spec_key(package(), placement(), ImportOptions(properties={KEY: "a"},
                                                       disk_provisioning="thin")),
        spec_key(package(), placement(), ImportOptions(properties={KEY: "a"}),
                 networks={"VM Network": vim.Network("network-7")}),
    ):
        assert other != base


class SlowSession:
    """CreateImportSpec that answers when released, failing the first ``fail`` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.calls = 0
        self.fail = fail
        self.release = anyio.Event()
        self.content = type("Content", (), {"ovfManager": vim.OvfManager("OvfManager")})()

    async def invoke(self, obj: Any, method: str, **kwargs: Any) -> Any:
        self.calls += 1
        await self.release.wait()
        if self.calls <= self.fail:
            raise VCenterError("the connection dropped")
        return vcenter_answer(kwargs["cisp"].entityName, "h")


async def test_concurrent_misses_share_one_call_and_a_failure_is_the_asker_s_alone() -> None:
    cache, session = ImportSpecCache(), SlowSession(fail=1)
    outcomes: dict[str, Any] = {}

    async def get(name: str) -> None:
        try:
            result, derived = await cache.get(session, package(), placement(),  # type: ignore[arg-type]
                                              name, ImportOptions())
            outcomes[name] = (result.importSpec.configSpec.name, derived)
        except VCenterError as exc:
            outcomes[name] = str(exc)

    async with anyio.create_task_group() as tasks:
        for name in ("vm-1", "vm-2", "vm-3"):
            tasks.start_soon(get, name)
        await anyio.wait_all_tasks_blocked()
        assert session.calls == 1  # one in flight, the others wait for it
        session.release.set()
    # vm-1's call failed: only vm-1 fails; vm-2 asks again, vm-3 derives from it.
    assert outcomes == {"vm-1": "the connection dropped", "vm-2": ("vm-2", False),
                        "vm-3": ("vm-3", True)}
    assert (session.calls, cache.asked, cache.derived) == (2, 2, 1)


def test_the_fast_copy_is_what_deepcopy_makes_and_shares_nothing_mutable() -> None:
    origin = vcenter_answer("web-01", "web-01.example")
    origin.importSpec.entityConfig = None
    origin.warning = [vim.fault.OvfMissingHardware(name="sound card")]  # a fault: deepcopy'd
    copied = copy_result(origin)

    assert Serialize(copied) == Serialize(copy.deepcopy(origin)) == Serialize(origin)
    config, original = copied.importSpec.configSpec, origin.importSpec.configSpec
    assert config is not original and config.deviceChange is not original.deviceChange
    assert config.deviceChange[0].device.backing.parent is not \
        original.deviceChange[0].device.backing.parent
    assert copied.warning[0] is not origin.warning[0]
    config.vAppConfig.property[0].info.value = "changed"
    assert original.vAppConfig.property[0].info.value == "web-01.example"
