"""The post-import steps against a recording fake session: the exact calls sent, in
order, and what a failed or cancelled step leaves (nothing)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from pyVmomi import vim, vmodl

from asyncovf.engine.job import import_vapp_arguments
from asyncovf.engine.marks import IMPORT_FINISHED, IMPORT_MARK_KEY
from asyncovf.engine.options import ImportOptions
from asyncovf.engine.phases import JobState, Phase
from asyncovf.engine.postimport import run_post_import
from asyncovf.errors import InputError, PostImportError, TaskError, WaitForIPTimeout, error_kind
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.vsphere.inventory import InventoryItem, Placement
from tests.factory import APPLIANCE_PRODUCT_SECTION, ovf_descriptor
from tests.unit.test_job_phases import completed

pytestmark = pytest.mark.anyio

VM = vim.VirtualMachine("vm-42")


class FakeSession:
    """Records invoke calls; tasks succeed unless their method is in ``failing``."""

    def __init__(self, *, failing: str | None = None, ip: str | None = "10.0.0.9",
                 ip_after_reads: int = 2) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failing = failing
        self.ip, self.ip_after_reads, self.ip_reads = ip, ip_after_reads, 0
        self.power_state = "poweredOff"
        self.content = SimpleNamespace(about=SimpleNamespace(
            name="VMware vCenter Server", version="7.0.0", vendor="VMware, Inc."))

    async def invoke(self, mo: Any, method: str, **kwargs: Any) -> Any:
        self.calls.append((method, kwargs))
        return method

    async def wait_for_task(self, task: Any) -> Any:
        if task == self.failing:
            raise TaskError(f"{task}: The operation is not supported.",
                            fault=vmodl.fault.NotSupported(), method=task)
        if task == "PowerOn":
            self.power_state = "poweredOn"
        if task == "PowerOff":
            self.power_state = "poweredOff"
        return None

    async def retrieve(self, obj: Any, paths: list[str]) -> dict[str, Any]:
        if paths == ["guest.ipAddress"]:
            self.ip_reads += 1
            return {"guest.ipAddress": self.ip if self.ip_reads > self.ip_after_reads else None}
        return {"runtime.powerState": self.power_state}

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]


PACKAGE = SimpleNamespace(descriptor=parse_descriptor(ovf_descriptor(
    "app", [("app.vmdk", 10, 16)], product_section=APPLIANCE_PRODUCT_SECTION).encode()))


async def run(session: FakeSession, options: ImportOptions, state: JobState | None = None
              ) -> JobState:
    state = state or completed("web-01")
    await run_post_import(session, VM, PACKAGE, state, options, lambda: None)  # type: ignore[arg-type]
    return state


async def test_every_step_sends_its_call_in_order_and_the_ip_is_recorded() -> None:
    session = FakeSession()
    options = ImportOptions(extra_config={"guestinfo.role": "web", "disk.EnableUUID": "TRUE"},
                            inject_ovf_env=True, hardware_version="vmx-19", power_on=True,
                            wait_for_ip=True, ip_timeout=5,
                            properties={"appliance.hostname.web": "web-01"})
    state = await run(session, options)
    assert session.methods() == ["Reconfigure", "Reconfigure", "UpgradeVirtualHardware",
                                 "PowerOn"]
    extra = session.calls[0][1]["spec"].extraConfig
    # The finished mark rides on the extra_config step's ReconfigVM_Task: no call of its own.
    assert [(o.key, o.value) for o in extra] == [("guestinfo.role", "web"),
                                                 ("disk.EnableUUID", "TRUE"),
                                                 (IMPORT_MARK_KEY, IMPORT_FINISHED)]
    (env,) = session.calls[1][1]["spec"].extraConfig
    assert env.key == "guestinfo.ovfEnv"
    assert 've:esxId="vm-42"' in env.value and "<Kind>VMware vCenter Server</Kind>" in env.value
    assert '<Property oe:key="appliance.hostname.web" oe:value="web-01"/>' in env.value
    assert '<Property oe:key="appliance.port.web" oe:value="8080"/>' in env.value
    assert session.calls[2][1] == {"version": "vmx-19"}
    assert state.ip_address == "10.0.0.9" and session.ip_reads == 3
    assert state.phase is Phase.WAIT_FOR_IP
    assert [p for p, _ in state.history][5:] == ["extra_config", "inject_ovf_env",
                                                 "upgrade_hardware", "power_on", "wait_for_ip"]


async def test_mark_as_template_is_one_call() -> None:
    session = FakeSession()
    state = await run(session, ImportOptions(mark_as_template=True))
    assert session.methods() == ["Reconfigure", "MarkAsTemplate"]  # the mark, then the step
    assert state.phase is Phase.MARK_AS_TEMPLATE


async def test_no_steps_asked_for_sends_only_the_finished_mark() -> None:
    session = FakeSession()
    state = await run(session, ImportOptions())
    assert session.methods() == ["Reconfigure"] and state.phase is Phase.COMPLETE
    (mark,) = session.calls[0][1]["spec"].extraConfig
    assert (mark.key, mark.value) == (IMPORT_MARK_KEY, IMPORT_FINISHED)


@pytest.mark.parametrize(("options", "waited"), [
    (ImportOptions(), []),
    (ImportOptions(power_on=True), ["Reconfigure", "PowerOn"]),
    (ImportOptions(extra_config={"a": "b"}), ["Reconfigure"]),
], ids=["the-mark-alone", "a-step-follows", "with-extra-config"])
async def test_a_batch_worker_writes_a_mark_that_ends_the_job_without_waiting(
    options: ImportOptions, waited: list[str],
) -> None:
    # Only a mark that is the job's last call is handed over (the worker checks its
    # task later); one that other steps follow is waited for: vCenter runs one task
    # at a time on a VM.
    session = FakeSession()
    handed: list[Any] = []

    async def finish(vm: Any) -> None:
        handed.append(vm)

    await run_post_import(session, VM, PACKAGE, completed("web-01"), options,  # type: ignore[arg-type]
                          lambda: None, finish=finish)
    assert session.methods() == waited
    assert handed == ([] if waited else [VM])


async def test_a_failed_finished_mark_fails_the_import_and_removes_the_vm() -> None:
    session = FakeSession(failing="Reconfigure")
    state = completed("web-01")
    with pytest.raises(PostImportError, match="web-01: complete failed: Reconfigure"):
        await run(session, ImportOptions(), state)
    assert session.methods() == ["Reconfigure", "Destroy"]
    assert state.phase is Phase.ABORT and state.cleanup_errors == []


async def test_a_failed_step_removes_the_vm_and_names_the_step() -> None:
    session = FakeSession(failing="UpgradeVirtualHardware")
    state = completed("web-01")
    with pytest.raises(PostImportError) as caught:
        await run(session, ImportOptions(hardware_version="vmx-19", power_on=True), state)
    assert str(caught.value) == ("web-01: upgrade_hardware failed: UpgradeVirtualHardware: "
                                 "The operation is not supported.")
    assert caught.value.step == "upgrade_hardware"
    assert isinstance(caught.value.__cause__, TaskError)
    assert error_kind(caught.value) == "upgrade_hardware: NotSupported"
    assert session.methods() == ["Reconfigure", "UpgradeVirtualHardware", "Destroy"]  # never on
    assert state.phase is Phase.ABORT and "abort" in state.timings
    assert state.cleanup_errors == []


async def test_a_powered_on_vm_is_powered_off_before_it_is_removed() -> None:
    session = FakeSession(ip=None)
    with pytest.raises(WaitForIPTimeout, match=r"web-01: no IP address reported by the guest "
                                               r"after 0\.3 s"):
        await run(session, ImportOptions(power_on=True, wait_for_ip=True, ip_timeout=0.3))
    assert session.methods() == ["Reconfigure", "PowerOn", "PowerOff", "Destroy"]


async def test_keep_failed_keeps_the_vm() -> None:
    session = FakeSession(failing="PowerOn")
    with pytest.raises(PostImportError):
        await run(session, ImportOptions(power_on=True, keep_failed=True))
    assert session.methods() == ["Reconfigure", "PowerOn"]


async def test_a_cancelled_step_still_removes_the_vm() -> None:
    session = FakeSession(ip=None)
    state = completed("web-01")
    with anyio.CancelScope() as scope:
        retrieve = session.retrieve

        async def cancel_while_waiting_for_ip(obj: Any, paths: list[str]) -> dict[str, Any]:
            if paths == ["guest.ipAddress"]:  # mid-step: the VM is on, no address yet
                scope.cancel()
            return await retrieve(obj, paths)

        session.retrieve = cancel_while_waiting_for_ip  # type: ignore[method-assign]
        await run(session, ImportOptions(power_on=True, wait_for_ip=True, ip_timeout=60), state)
    assert scope.cancelled_caught  # the cancellation went through, unchanged
    assert session.methods() == ["Reconfigure", "PowerOn", "PowerOff", "Destroy"]
    assert state.phase is Phase.ABORT


@pytest.mark.parametrize(("fields", "message"), [
    ({"power_on": True, "mark_as_template": True},
     r"^mark_as_template contradicts power_on=True \(a template cannot be powered on\)$"),
    ({"wait_for_ip": True}, r"^wait_for_ip needs power_on=True \(a VM that is off gets no IP "),
])
def test_contradictory_steps_cannot_be_asked_for(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        ImportOptions(**fields)


def item(ref: Any, kind: str) -> InventoryItem:
    return InventoryItem(ref=ref, kind=kind, name=ref._moId, path=f"/DC0/{ref._moId}",
                         parent=None, datacenter="datacenter-2", props={})


@pytest.mark.parametrize(("pool", "with_folder"), [
    (vim.ResourcePool("resgroup-1"), True),
    (vim.VirtualApp("resgroup-v9"), False),  # vCenter: InvalidArgument if a folder is given
])
def test_importvapp_gets_a_folder_only_for_a_plain_resource_pool(pool: Any,
                                                                  with_folder: bool) -> None:
    folder = vim.Folder("group-v3")
    placement = Placement(datacenter=item(vim.Datacenter("datacenter-2"), "datacenter"),
                          resource_pool=item(pool, "pool"),
                          datastore=item(vim.Datastore("datastore-1"), "datastore"),
                          folder=item(folder, "vm-folder"))
    arguments = import_vapp_arguments(placement, "SPEC")
    assert arguments == {"spec": "SPEC", "host": None, **({"folder": folder} if with_folder
                                                          else {})}


async def test_a_vapp_gets_no_finished_mark_it_has_no_extra_config() -> None:
    # A VirtualSystemCollection imports as a vApp: ReconfigVM_Task is a VM's.
    session = FakeSession()
    state = completed("web-01")
    await run_post_import(session, vim.VirtualApp("resgroup-v7"), PACKAGE, state,  # type: ignore[arg-type]
                          ImportOptions(), lambda: None)
    assert session.calls == [] and state.phase is Phase.COMPLETE
