"""Removing a VM: power it off if it is on, then destroy it.

The one way asyncovf deletes a VM — a half-imported one (the lease guard), a
leftover or a VM replaced by ``--on-conflict replace`` (the pool), and the VMs
``asyncovf cleanup`` removes. Callers bound it (``fail_after`` or a shielded
``move_on_after``): waiting for a task is unbounded.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from asyncovf.errors import ManagedObjectNotFoundError, VCenterError
from asyncovf.vsphere.session import VCenterSession


async def power_off_and_destroy(session: VCenterSession, vm: Any, *,
                                powered_on: bool | None = None) -> None:
    """PowerOffVM_Task if ``vm`` is powered on, then Destroy_Task; wait for both.

    ``powered_on`` is read from ``runtime.powerState`` unless the caller knows
    it. A template is never powered on (vSphere API reference,
    VirtualMachine.MarkAsTemplate: it must be powered off), so it is destroyed
    straight away. ``InvalidPowerState`` from PowerOff means the VM was powered
    off meanwhile, which is what we wanted. Raises
    :class:`ManagedObjectNotFoundError` when the VM is gone, before or during.
    """
    if powered_on is None:
        props = await session.retrieve(vm, ["runtime.powerState"])
        powered_on = props["runtime.powerState"] == vim.VirtualMachine.PowerState.poweredOn
    try:
        if powered_on:
            try:
                await session.wait_for_task(await session.invoke(vm, "PowerOff"))
            except VCenterError as exc:
                if exc.fault_type != "InvalidPowerState":
                    raise
        await session.wait_for_task(await session.invoke(vm, "Destroy"))
    except VCenterError as exc:
        if is_gone(exc) and not isinstance(exc, ManagedObjectNotFoundError):
            # A task that failed because its VM vanished: say so with the one type.
            raise ManagedObjectNotFoundError(str(exc), fault=exc.fault, method=exc.method,
                                             vm=exc.vm) from exc
        raise


def is_gone(error: BaseException) -> bool:
    """``error`` says the object it concerns no longer exists."""
    return isinstance(error, ManagedObjectNotFoundError) or (
        isinstance(error, VCenterError) and error.fault_type == "ManagedObjectNotFound")


__all__ = ["is_gone", "power_off_and_destroy"]
