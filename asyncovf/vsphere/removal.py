"""Removing a VM: power it off if it is on, then destroy it.

The one way asyncovf deletes a VM — a half-imported one (the lease guard), a
leftover or a VM replaced by ``--on-conflict replace`` (the pool), and the VMs
``asyncovf cleanup`` removes. Callers bound it (``fail_after`` or a shielded
``move_on_after``): waiting for a task is unbounded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from pyVmomi import vim

from asyncovf.errors import ManagedObjectNotFoundError, VCenterError
from asyncovf.vsphere.cleanup import CLEANUP_TIMEOUT, bounded_cleanup
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)

#: Tries at finding or removing a VM within one cleanup bound: a removal given up
#: on after one failure (a PowerOff refused while a lost PowerOn's task runs, a
#: dropped answer) is a VM left behind.
REMOVAL_ATTEMPTS: Final = 4


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


async def find_vm(session: VCenterSession, folder: Any, name: str) -> Any:
    """The VM (or vApp) called ``name`` directly in ``folder``, or None (SearchIndex.FindChild).

    How an import checks its name, and finds a VM its lease never named.
    """
    return await session.invoke(session.content.searchIndex, "FindChild",
                                entity=folder, name=name)


async def remove_vm_bounded(session: VCenterSession, vm: Any, errors: list[str], *,
                            what: str, within: float = CLEANUP_TIMEOUT) -> bool:
    """:func:`power_off_and_destroy`, shielded and bounded, tried again on failure.

    True once the VM is gone (removed now, or already gone). Otherwise one line
    saying why goes to ``errors``; never raises but the caller's cancellation.
    """
    async def remove() -> None:
        await power_off_and_destroy(session, vm)
        log.info("%s: removed %s", what, vm._moId)

    return await _retry_bounded(remove, errors, what=what, within=within)


async def remove_leftover_bounded(session: VCenterSession, folder: Any, name: str,
                                  errors: list[str], *, what: str,
                                  within: float = CLEANUP_TIMEOUT,
                                  owned: Callable[[Any], Awaitable[bool]] | None = None) -> bool:
    """Find the VM called ``name`` in ``folder`` and remove it; True once none is there.

    For an import that failed before its lease named its VM (ImportVApp's answer
    lost, or the lease aborted while initializing). ``owned`` tells a VM that
    import made from one that was there before (its mark's token): one it does
    not own is left, and counts as gone. Without it the caller knows the name
    was free before ImportVApp.
    """
    async def remove() -> None:
        vm = await find_vm(session, folder, name)
        if vm is not None and owned is not None and not await owned(vm):
            log.info("%s: %s is not this import's; left as it is", what, vm._moId)
            return
        if vm is not None:
            await power_off_and_destroy(session, vm)
            log.info("%s: removed %s", what, vm._moId)

    return await _retry_bounded(remove, errors, what=what, within=within)


async def _retry_bounded(action: Any, errors: list[str], *, what: str, within: float) -> bool:
    last: Exception | None = None
    gone = False
    with bounded_cleanup(what, timeout=within) as outcome:
        for attempt in range(REMOVAL_ATTEMPTS):
            if attempt:
                await anyio.sleep(0.2 * 2 ** (attempt - 1))
            try:
                await action()
            except ManagedObjectNotFoundError:
                gone = True  # removed meanwhile (vCenter removes an aborted import's VM)
                break
            except Exception as exc:
                last = exc
                continue
            gone = True
            break
    if not gone:
        if outcome.error is not None:  # the bound ran out
            errors.append(outcome.error + (f" (last error: {last})" if last else ""))
        else:
            errors.append(f"{what} failed: {last}")
    return gone


__all__ = ["REMOVAL_ATTEMPTS", "find_vm", "is_gone", "power_off_and_destroy",
           "remove_leftover_bounded", "remove_vm_bounded"]
