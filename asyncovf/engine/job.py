"""One import, owning every guarantee it makes: CreateImportSpec → ImportVApp →
lease → uploads → Complete → finished mark → the post-import steps.

Whoever runs an import — ``asyncovf import``, the library's
:class:`~asyncovf.importer.Importer`, a batch worker — runs :func:`import_vm`, so
the guarantees hold on every path:

* ``on_conflict`` is applied to a VM already of that name (``skip`` trusts only
  a VM whose import finished: see :func:`resolve_conflict`). With ``fail``, the
  default, the name is not asked for first: ImportVApp's own DuplicateName says
  it is taken, one call fewer per import; ``skip`` and ``replace`` ask first,
  since a run that uses them mostly meets names that are taken;
* the lease is owned by a :class:`~asyncovf.vsphere.lease.LeaseGuard` that
  aborts it on any error or cancellation and removes the half-imported VM,
  finding it by name when the lease never named it (ImportVApp succeeded, so
  the name was free and the VM of that name is this import's);
* a lost ImportVApp answer (the lease may exist, nobody knows its reference)
  renews the session — a lease ends with the session that made it — then
  removes the VM of that name if it carries this call's token in its mark
  (:mod:`asyncovf.engine.marks`): one that was there before is left alone;
* a failed or cancelled post-import step removes the VM.

Every cleanup is shielded and bounded (:func:`~asyncovf.vsphere.cleanup.bounded_cleanup`)
and recorded in ``state.cleanup_errors``; the original error is what is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
from pyVmomi import vim

from asyncovf.engine.import_specs import ImportSpecCache, create_import_spec, spec_key
from asyncovf.engine.marks import (
    IMPORT_MARK_KEY,
    is_unfinished,
    mark_of,
    new_token,
    unfinished_mark,
)
from asyncovf.engine.options import ImportOptions, OnConflict
from asyncovf.engine.phases import TERMINAL, JobState, Phase
from asyncovf.engine.postimport import run_post_import
from asyncovf.engine.pull import pull_all, pull_plan
from asyncovf.engine.uploads import JobHooks, ProgressCallback, upload_all, upload_targets
from asyncovf.errors import (
    NameConflict,
    UntrustedTarget,
    VCenterError,
    error_text,
)
from asyncovf.ovf.package import Package
from asyncovf.vsphere.cleanup import CLEANUP_TIMEOUT, Stage, bounded_cleanup, shielded
from asyncovf.vsphere.inventory import Placement
from asyncovf.vsphere.lease import LeaseGuard
from asyncovf.vsphere.nfc import UploadTarget, check_device_host
from asyncovf.vsphere.removal import find_vm, remove_leftover_bounded, remove_vm_bounded
from asyncovf.vsphere.session import VCenterSession, refused
from asyncovf.vsphere.soap import describe_fault

log = logging.getLogger(__name__)


async def import_vm(
    session: VCenterSession,
    package: Package,
    placement: Placement,
    state: JobState,
    options: ImportOptions | None = None,
    *,
    networks: Mapping[str, Any] | None = None,
    on_conflict: OnConflict = OnConflict.FAIL,
    own_vms: frozenset[str] = frozenset(),
    hooks: JobHooks | None = None,
    on_progress: ProgressCallback | None = None,
    on_replaced: Callable[[str], None] | None = None,
    specs: ImportSpecCache | None = None,
) -> bool:
    """Import ``package`` as ``state.name``; on failure raise, leaving nothing behind.

    Returns False when ``on_conflict`` is ``skip`` and a finished VM of that name
    was there already (``state.vm`` names it), True when imported. ``own_vms``
    are VMs earlier attempts of the same job created: one found under the name
    is this job's leftover and is removed whatever ``on_conflict`` says.
    ``networks`` maps the descriptor's networks to network MORs: ``options``'
    ``network_mapping`` resolved in the placement's datacenter
    (:func:`~asyncovf.engine.resolve.map_networks`). ``on_replaced`` is told the
    MOR id of a VM of that name this import destroyed (not one of ``own_vms``).
    ``specs``, a run's :class:`~asyncovf.engine.import_specs.ImportSpecCache`,
    derives the import spec from its group's instead of asking vCenter for it.

    ``state`` is updated in place (phase, bytes, timings, cleanup errors), so a
    caller can show progress and report a job even when this raises or is
    cancelled.
    """
    options = options or ImportOptions()
    hooks = hooks or JobHooks()
    if on_progress is not None:
        hooks = replace(hooks, on_progress=on_progress)
    with job_outcome(state):
        asked_first = on_conflict is not OnConflict.FAIL or bool(own_vms)
        if asked_first and not await resolve_conflict(
                session, state, placement, on_conflict, own_vms=own_vms,
                on_replaced=on_replaced):
            return False
        try:
            await _import_with_recovery(session, package, placement, state, options,
                                        networks or {}, hooks, specs)
        except VCenterError as exc:
            if asked_first or exc.fault_type != "DuplicateName" or state.vm is not None:
                raise
            # ImportVApp created nothing. Say what holds the name, as a check
            # before ImportVApp would have: the job was refused for its input.
            await resolve_conflict(session, state, placement, on_conflict)
            raise NameConflict(f"the name {state.name!r} is taken in "
                               f"{placement.folder.path} ({exc})", vm=state.name) from exc
    return True


async def resolve_conflict(session: VCenterSession, state: JobState, placement: Placement,
                           policy: OnConflict, *, own_vms: frozenset[str] = frozenset(),
                           on_replaced: Callable[[str], None] | None = None) -> bool:
    """Apply ``policy`` to a VM already named ``state.name``; False means skip the import.

    Before any lease is taken. ``skip`` trusts only a finished import: a VM
    whose :data:`~asyncovf.engine.postimport.IMPORT_MARK_KEY` still says
    "importing" was left by an import that never finished (a killed process);
    vCenter deletes such a VM once its lease times out, so counting it as done
    would lose it. It is removed and imported again. A VM without the mark is
    not asyncovf's: ``skip`` leaves it alone, never destroys it. ``on_replaced``
    hears the MOR id of every VM removed that was not one of ``own_vms``, once it
    is gone: the user's to know what was destroyed.
    """
    existing = await find_vm(session, placement.folder.ref, state.name)
    if existing is None:
        return True
    moid = str(existing._moId)
    if moid in own_vms:
        reason = "left by this job's previous attempt"
    elif policy is OnConflict.REPLACE:
        reason = "replacing it (--on-conflict replace)"
    else:
        unfinished = await _import_unfinished(session, existing)
        if policy is OnConflict.SKIP and not unfinished:
            state.vm = moid
            return False
        if policy is OnConflict.FAIL:
            what = ("a half-imported VM (an asyncovf import that never finished)"
                    if unfinished else "a VM")
            raise NameConflict(f"{what} named {state.name!r} already exists in "
                               f"{placement.folder.path} ({moid}); use --on-conflict skip "
                               "or replace", vm=state.name)
        reason = "its import never finished"
    log.info("%s: removing the existing VM %s: %s", state.name, moid, reason)
    errors: list[str] = []
    if not await remove_vm_bounded(session, existing, errors,
                                   what=f"removing the existing VM {state.name!r} ({moid})",
                                   within=CLEANUP_TIMEOUT * 3):
        raise VCenterError(errors[0] if errors else f"could not remove {moid}", vm=state.name)
    if on_replaced is not None and moid not in own_vms:
        on_replaced(moid)
    return True


async def _import_unfinished(session: VCenterSession, vm: Any) -> bool:
    """The VM carries asyncovf's "importing" mark: its import never completed.

    Only a VM carries marks (a vApp has no extraConfig): anything else counts
    as finished.
    """
    if not isinstance(vm, vim.VirtualMachine):
        return False
    return is_unfinished(await _mark(session, vm))


async def _mark(session: VCenterSession, vm: Any) -> str | None:
    return mark_of((await session.retrieve(vm, ["config.extraConfig"]))["config.extraConfig"])


@contextmanager
def job_outcome(state: JobState) -> Iterator[None]:
    """On the way out of a job that raises, its terminal phase: ``aborted`` when it was
    cancelled, else ``failed`` with its error (via ABORT if a lease or VM was there)."""
    try:
        yield
    except anyio.get_cancelled_exc_class():
        _end(state, Phase.ABORTED, "interrupted", "cancelled")
        raise
    except BaseException as exc:
        _end(state, Phase.FAILED, error_text(exc),
             getattr(exc, "fault_type", None) or type(exc).__name__)
        raise


def _end(state: JobState, phase: Phase, error: str, fault: str) -> None:
    # The error first: whoever watches the last phase change is told why.
    state.error = state.error or error
    state.fault = state.fault or fault
    if state.phase not in TERMINAL:
        state.advance(phase)


async def _import_with_recovery(session: VCenterSession, package: Package,
                                placement: Placement, state: JobState, options: ImportOptions,
                                networks: Mapping[str, Any], hooks: JobHooks,
                                specs: ImportSpecCache | None) -> None:
    """The import; on failure, end a lease nobody can name and remove a VM no lease named."""
    token = new_token()
    try:
        await _import(session, package, placement, state, options, networks, hooks, specs,
                      token)
    except BaseException:
        # Only a lost ImportVApp answer leaves what nobody can name: a lease and
        # a VM (a fault created nothing; a lease that answered has its guard).
        if state.import_unanswered:
            await end_unknown_lease(session, state)
            if not options.keep_failed:
                async def made_by_this_call(vm: Any) -> bool:
                    return await _mark(session, vm) == unfinished_mark(token)

                await remove_leftover_bounded(
                    session, placement.folder.ref, state.name, state.cleanup_errors,
                    what=f"removing half-imported VM {state.name!r}", owned=made_by_this_call)
        raise


async def end_unknown_lease(session: VCenterSession, state: JobState) -> None:
    """ImportVApp's answer was lost: end the lease it may have created.

    The call was sent and no answer came (the connection dropped, or the answer
    outlived the call timeout), so vCenter may hold a lease we never learned —
    and the vSphere API has no way to find a lease by its VM. A lease belongs to
    the session that created it and ends with it, so the session logs out and in
    again (:meth:`VCenterSession.renew`) instead of leaving the lease, and the VM
    it locks, until its ``leaseTimeout``. Shielded and bounded like all cleanup.
    """
    with bounded_cleanup("ending the session to end a lease whose ImportVApp answer was lost",
                         state.cleanup_errors, stage=Stage.LOGOUT):
        await session.renew()
        log.info("%s: ImportVApp's answer was lost; logged in again to end its lease",
                 state.name)


async def _import(
    session: VCenterSession,
    package: Package,
    placement: Placement,
    state: JobState,
    options: ImportOptions,
    networks: Mapping[str, Any],
    hooks: JobHooks,
    specs: ImportSpecCache | None,
    token: str,
) -> None:
    def notify() -> None:
        if hooks.on_progress is not None:
            hooks.on_progress(state)

    state.advance(Phase.SPEC)
    notify()
    if specs is None:
        spec_result, derived = await create_import_spec(session, package, placement, state.name,
                                                        options, networks), False
    else:
        spec_result, derived = await specs.get(session, package, placement, state.name,
                                               options, networks)
    for warning in spec_result.warning or ():
        state.warnings.append(describe_fault(warning))
    _mark_unfinished(spec_result, options, token)

    state.advance(Phase.IMPORT)
    notify()
    # A derived spec's request is filled into its group's template (serialized once).
    request = (partial(specs.import_vapp_request, session,
                       spec_key(package, placement, options, networks))
               if derived and specs is not None else None)
    try:
        lease = await _import_vapp(session, placement, spec_result, state, request)
    except VCenterError as exc:
        # A derived spec names the paths the simulator's CreateImportSpec would;
        # a vCenter that chose others (the VM's folder exists already) refuses it
        # before creating anything. This VM asks for its own spec, once.
        if not (derived and specs is not None and exc.fault_type == "FileAlreadyExists"):
            raise
        log.info("%s: vCenter refused the derived import spec (%s); asking for its own",
                 state.name, exc)
        spec_result = await specs.ask(session, package, placement, state.name, options,
                                      networks)
        _mark_unfinished(spec_result, options, token)
        lease = await _import_vapp(session, placement, spec_result, state)

    state.advance(Phase.LEASE_WAIT)
    notify()

    # The lease may never name its VM (aborted while initializing): the name was
    # free before ImportVApp, so the VM of that name is this import's.
    guard = LeaseGuard(session, lease, vm_name=state.name,
                       ready_timeout=options.lease_ready_timeout, keep_failed=options.keep_failed,
                       find_vm=partial(find_vm, session, placement.folder.ref, state.name))
    try:
        async with guard:
            state.vm = guard.entity._moId if guard.entity is not None else None
            pulls = (await pull_plan(session, guard.lease, spec_result, package, state)
                     if options.pull else None)
            if pulls is None:
                targets = upload_targets(spec_result, guard.info, session.endpoint.host, package)
                await check_device_hosts(session, targets, options, hooks)
            sizes = [t.size for t in targets] if pulls is None else [f.size for f in pulls]
            guard.total_bytes = state.bytes_total = sum(sizes)
            state.advance(Phase.UPLOAD)
            notify()

            def on_bytes(count: int) -> None:
                guard.add_bytes(count)
                state.bytes_done += count
                if state.watch is not None:
                    state.watch.bytes(count)
                notify()

            if pulls is None:
                await upload_all(session, package, targets, options, on_bytes, hooks, state)
            else:
                await pull_all(session, guard, pulls, state, on_bytes)
                state.pulled = True
            state.advance(Phase.COMPLETE)
            notify()
    except BaseException:
        state.cleanup_errors.extend(guard.cleanup_errors)
        state.timings["abort"] = guard.cleanup_seconds
        state.advance(Phase.ABORT)
        raise

    if guard.entity is not None:
        await run_post_import(session, guard.entity, package, state, options, notify,
                              finish=hooks.finish_mark)
    state.advance(Phase.IMPORTED)
    notify()


def _mark_unfinished(spec_result: Any, options: ImportOptions, token: str) -> None:
    """The job's annotation and the "importing" mark with the call's ``token``, in the
    spec ImportVApp is sent (replacing the mark of an earlier call with this spec)."""
    config = getattr(spec_result.importSpec, "configSpec", None)
    if config is not None:
        if options.annotation is not None:
            config.annotation = options.annotation
        config.extraConfig = [*(option for option in config.extraConfig or ()
                                if option.key != IMPORT_MARK_KEY),
                              vim.option.OptionValue(key=IMPORT_MARK_KEY,
                                                     value=unfinished_mark(token))]


async def _import_vapp(session: VCenterSession, placement: Placement, spec_result: Any,
                       state: JobState,
                       request: Callable[[Any, dict[str, Any]], bytes] | None = None) -> Any:
    """ImportVApp, finished shielded; the lease it created.

    ``request`` makes the request's text from the pool and the arguments
    (:meth:`ImportSpecCache.import_vapp_request`); without it pyVmomi writes it.

    ImportVApp creates the VM and the lease. Were it cancelled mid-flight, both
    could exist on vCenter with us never learning the lease to abort. So this
    one call finishes shielded — bounded by its own call timeout (and a re-login
    on NotAuthenticated), and after an interrupt by the cleanup budget; a
    pending cancellation then hits the lease guard, which aborts the lease it
    now knows. Cut by the budget, the answer is as lost as a dropped one.
    """
    state.touched_vcenter = True
    try:
        with shielded() as scope:
            pool = placement.resource_pool.ref
            arguments = import_vapp_arguments(placement, spec_result.importSpec)
            if request is None:
                lease = await session.invoke(pool, "ImportVApp", **arguments)
            else:
                lease = await session.send(pool, "ImportVApp", request(pool, arguments))
        if scope.cancelled_caught:
            raise TimeoutError("ImportVApp was cut short by the interrupt")
    except Exception as exc:
        # No answer (not a fault): vCenter may have created a lease we never learned.
        # A fault created nothing: vCenter is as it was (a stale MOR can be retried
        # after a refresh, a taken name is the input's fault).
        # Turned away unserved (HTTP 503, after its retries) is no more than a fault.
        state.import_unanswered = state.touched_vcenter = not (
            isinstance(exc, VCenterError) or refused(exc))
        raise
    return lease


async def check_device_hosts(session: VCenterSession, targets: list[UploadTarget],
                             options: ImportOptions, hooks: JobHooks) -> None:
    """Refuse a device URL that names neither vCenter nor one of its ESXi hosts.

    The hosts' inventory names first; a URL naming a host otherwise (by its
    VMkernel IP while registered by FQDN, or the reverse) is checked again
    against the hosts' management addresses, read once for that (the hook).
    """
    allowed = options.esxi_hosts
    widened = False
    for target in targets:
        try:
            check_device_host(target.url, session.endpoint.host, allowed)
        except UntrustedTarget:
            if widened or hooks.host_addresses is None:
                raise
            allowed, widened = allowed | await hooks.host_addresses(), True
            check_device_host(target.url, session.endpoint.host, allowed)


def import_vapp_arguments(placement: Placement, import_spec: Any) -> dict[str, Any]:
    """ImportVApp's arguments besides the pool it is called on.

    vSphere API reference, ResourcePool.importVApp: ``folder`` is required when
    the pool is a plain resource pool and must be left out when it is a vApp —
    vCenter answers InvalidArgument otherwise (govc leaves it out too): a vApp
    holds its VMs itself.
    """
    arguments: dict[str, Any] = {
        "spec": import_spec,
        "host": placement.host.ref if placement.host else None,
    }
    if not isinstance(placement.resource_pool.ref, vim.VirtualApp):
        arguments["folder"] = placement.folder.ref
    return arguments


__all__ = [
    "check_device_hosts",
    "job_outcome",
    "end_unknown_lease",
    "import_vapp_arguments",
    "import_vm",
    "resolve_conflict",
]
