"""What happens to a VM after HttpNfcLeaseComplete: one coroutine per step.

The job (``engine/job.py``) owns the order and the phases; each step here is a
plain cancellable coroutine that does one thing to the VM and waits for its
task. :func:`remove_vm` undoes them all — it is the cleanup a failed or
cancelled step runs, shielded and time-bounded.

vSphere API reference entries: VirtualMachine.ReconfigVM_Task (``extraConfig``
OptionValues), UpgradeVM_Task, MarkAsTemplate, PowerOnVM_Task, Destroy_Task,
and GuestInfo.ipAddress ("primary IP address assigned to the guest", reported
by VMware Tools once the guest is up).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import anyio
from pyVmomi import vim

from asyncovf.errors import ManagedObjectNotFoundError, WaitForIPTimeout
from asyncovf.ovf.environment import GUESTINFO_KEY, Platform
from asyncovf.vsphere.removal import power_off_and_destroy
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)

#: How often guest.ipAddress is read at most, once the first quick reads found nothing.
IP_POLL_MAX_INTERVAL: Final = 2.0


async def _run_task(session: VCenterSession, vm: Any, method: str, **kwargs: Any) -> Any:
    """Call a ``*_Task`` method (pyVmomi name) and wait for its task to end."""
    return await session.wait_for_task(await session.invoke(vm, method, **kwargs))


async def set_extra_config(session: VCenterSession, vm: Any,
                           pairs: Sequence[tuple[str, str]]) -> None:
    """ReconfigVM_Task with ``extraConfig`` = ``pairs`` (key, value), in order."""
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=key, value=value)
                                          for key, value in pairs])
    await _run_task(session, vm, "Reconfigure", spec=spec)  # ReconfigVM_Task


async def inject_ovf_env(session: VCenterSession, vm: Any, document: str) -> None:
    """Write the OVF environment document into ``guestinfo.ovfEnv`` (what govc does)."""
    await set_extra_config(session, vm, [(GUESTINFO_KEY, document)])


def platform_of(session: VCenterSession, locale: str | None = None) -> Platform:
    """The PlatformSection of an OVF environment: the vCenter ``session`` talks to."""
    about = session.content.about
    return Platform(kind=str(about.name or ""), version=str(about.version or ""),
                    vendor=str(about.vendor or ""), locale=locale or "en")


async def upgrade_hardware(session: VCenterSession, vm: Any, version: str) -> None:
    """UpgradeVM_Task to ``version`` (``vmx-NN``)."""
    await _run_task(session, vm, "UpgradeVirtualHardware", version=version)  # UpgradeVM_Task


async def mark_as_template(session: VCenterSession, vm: Any) -> None:
    await session.invoke(vm, "MarkAsTemplate")


async def power_on(session: VCenterSession, vm: Any) -> None:
    await _run_task(session, vm, "PowerOn")


async def wait_for_ip(session: VCenterSession, vm: Any, *, within: float,
                      vm_name: str) -> str:
    """Read ``guest.ipAddress`` until the guest reports one; raise WaitForIPTimeout after
    ``within`` seconds (its own error, so the report says which wait ran out).

    Polling with capped backoff: a property filter for WaitForUpdatesEx costs
    three calls to set up and tear down, more than most waits take in reads.
    """
    delay = 0.1
    with anyio.move_on_after(within):
        while True:
            address = (await session.retrieve(vm, ["guest.ipAddress"]))["guest.ipAddress"]
            if address:
                return str(address)
            await anyio.sleep(delay)
            delay = min(delay * 2, IP_POLL_MAX_INTERVAL)
    raise WaitForIPTimeout(f"{vm_name}: no IP address reported by the guest after {within:g} s",
                           step="wait_for_ip", vm=vm_name)


async def remove_vm(session: VCenterSession, vm: Any) -> bool:
    """Power ``vm`` off if it is on, then destroy it; False if it was gone already.

    The caller bounds and shields this (it is cleanup).
    """
    try:
        await power_off_and_destroy(session, vm)
    except ManagedObjectNotFoundError:
        return False
    return True


__all__ = [
    "inject_ovf_env",
    "mark_as_template",
    "platform_of",
    "power_on",
    "remove_vm",
    "set_extra_config",
    "upgrade_hardware",
    "wait_for_ip",
]
