"""What happens to a VM after HttpNfcLeaseComplete: one coroutine per step.

The job (``engine/job.py``) owns the order and the phases; each step here is a
plain cancellable coroutine that does one thing to the VM and waits for its
task. :func:`~asyncovf.vsphere.removal.remove_vm_bounded` undoes them all: it
is the cleanup a failed or cancelled step runs, shielded and time-bounded.

vSphere API reference entries: VirtualMachine.ReconfigVM_Task (``extraConfig``
OptionValues), UpgradeVM_Task, MarkAsTemplate, PowerOnVM_Task, Destroy_Task,
and GuestInfo.ipAddress ("primary IP address assigned to the guest", reported
by VMware Tools once the guest is up).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final

import anyio
from pyVmomi import vim

from asyncovf.engine.marks import IMPORT_FINISHED, IMPORT_MARK_KEY
from asyncovf.engine.options import ImportOptions
from asyncovf.engine.phases import JobState, Phase
from asyncovf.errors import (
    PostImportError,
    WaitForIPTimeout,
)
from asyncovf.ovf.environment import (
    GUESTINFO_KEY,
    Platform,
    environment_properties,
    ovf_environment,
)
from asyncovf.ovf.package import Package
from asyncovf.vsphere.removal import remove_vm_bounded
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
    await _run_task(session, vm, "Reconfigure", spec=extra_config_spec(pairs))


def extra_config_spec(pairs: Sequence[tuple[str, str]]) -> Any:
    """The ReconfigVM_Task spec that sets ``extraConfig`` to ``pairs``, in order."""
    return vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=key, value=value)
                                          for key, value in pairs])


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


PostImportStep = Callable[[], Awaitable[None]]


def asks_for_steps(options: ImportOptions) -> bool:
    """Whether ``options`` ask for any post-import step (a VM without any is finished
    as soon as it exists: a clone can be made with its finished mark)."""
    return bool(options.extra_config or options.inject_ovf_env or options.hardware_version
                or options.mark_as_template or options.power_on or options.wait_for_ip)


def post_import_steps(session: VCenterSession, vm: Any, package: Package, state: JobState,
                      options: ImportOptions, *, marked: bool = False,
                      finish: Callable[[Any], Awaitable[None]] | None = None,
                      ) -> list[tuple[Phase | None, PostImportStep]]:
    """The steps ``options`` ask for, in POST_IMPORT_STEPS order, each with its phase.

    The first writes the finished mark: with the extra_config step when there is
    one (one ReconfigVM_Task for both), else on its own while the job is still in
    its ``complete`` phase (phase ``None``: no phase of its own). ``marked``: the
    VM was created with its finished mark, so there is none to write. ``finish``
    writes a mark that is the only step without waiting for its task (a batch
    worker checks it later); a mark that other steps follow is waited for, as
    vCenter runs one task at a time on a VM.
    """
    # Only a VM has extraConfig: a vApp (a VirtualSystemCollection's entity) is
    # imported unmarked, and ``skip`` counts it as finished.
    marks = ((IMPORT_MARK_KEY, IMPORT_FINISHED),) \
        if isinstance(vm, vim.VirtualMachine) and not marked else ()
    steps: list[tuple[Phase | None, PostImportStep]] = []
    if options.extra_config:
        steps.append((Phase.EXTRA_CONFIG, partial(set_extra_config, session, vm,
                                                  (*options.extra_config.items(),
                                                   *marks))))
    elif marks:
        steps.append((None, partial(set_extra_config, session, vm, marks)))
    if options.inject_ovf_env:
        async def inject() -> None:
            values = environment_properties(package.descriptor, options.deployment,
                                            options.properties)
            document = ovf_environment(values, esx_id=str(vm._moId),
                                       platform=platform_of(session, options.locale))
            await inject_ovf_env(session, vm, document)
        steps.append((Phase.INJECT_OVF_ENV, inject))
    if options.hardware_version:
        steps.append((Phase.UPGRADE_HARDWARE,
                      partial(upgrade_hardware, session, vm, options.hardware_version)))
    if options.mark_as_template:
        steps.append((Phase.MARK_AS_TEMPLATE, partial(mark_as_template, session, vm)))
    if options.power_on:
        steps.append((Phase.POWER_ON, partial(power_on, session, vm)))
    if options.wait_for_ip:
        async def wait() -> None:
            state.ip_address = await wait_for_ip(
                session, vm, within=options.ip_timeout, vm_name=state.name)
        steps.append((Phase.WAIT_FOR_IP, wait))
    if finish is not None and marks and not options.extra_config and len(steps) == 1:
        steps = [(None, partial(finish, vm))]
    return steps


async def run_post_import(session: VCenterSession, vm: Any, package: Package, state: JobState,
                          options: ImportOptions, notify: Callable[[], None], *,
                          marked: bool = False,
                          finish: Callable[[Any], Awaitable[None]] | None = None) -> None:
    """Mark the import finished and run the post-import steps, each as its phase; if
    one fails or is cancelled, remove the VM (unless ``keep_failed``) and raise.

    A failure is raised as :class:`PostImportError` naming the step (the cause
    chained); a cancellation is re-raised unchanged once the VM is gone.
    """
    steps = post_import_steps(session, vm, package, state, options, marked=marked,
                              finish=finish)
    try:
        for phase, step in steps:
            if phase is not None:
                state.advance(phase)
                notify()
            await step()
    except BaseException as exc:
        failed = state.phase
        state.advance(Phase.ABORT)
        notify()
        if not options.keep_failed:
            started = anyio.current_time()
            await remove_vm_bounded(session, vm, state.cleanup_errors,
                                    what=f"removing {state.name} after the failed "
                                         f"{failed.value} step")
            state.timings["abort"] = (state.timings.get("abort", 0.0)
                                      + anyio.current_time() - started)
        if isinstance(exc, Exception) and not isinstance(exc, PostImportError):
            raise PostImportError(f"{state.name}: {failed.value} failed: {exc}",
                                  step=failed.value, vm=state.name) from exc
        raise


__all__ = [
    "asks_for_steps",
    "extra_config_spec",
    "post_import_steps",
    "run_post_import",
    "inject_ovf_env",
    "mark_as_template",
    "platform_of",
    "power_on",
    "set_extra_config",
    "upgrade_hardware",
    "wait_for_ip",
]
