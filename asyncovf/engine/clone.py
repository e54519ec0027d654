"""One VM cloned from its group's seed (``strategy: clone``), owning every guarantee it makes.

name check → seed (made once per group: engine/seeds.py) → CloneVM_Task → the
post-import steps, the finished mark first. What an import guarantees, a clone
does too:

* the name is checked first, and ``on_conflict`` applied, as for an import
  (:func:`~asyncovf.engine.job.resolve_conflict`);
* the clone carries the "importing" mark in its config spec until its
  post-import steps are done, so a run killed before then leaves a VM
  ``--on-conflict skip`` will not count as done (a clone with no step to
  come is made finished: the task makes all of it or fails);
* CloneVM_Task is sent shielded (as ImportVApp is): once sent, we learn its
  task, or know its answer was lost;
* a clone that fails or is cancelled has its task cancelled on the server
  (CancelTask, waited for: a clone still running would create its VM after
  our removal), then its partial VM removed by name, shielded and bounded; a
  lost answer leaves no task to cancel, and the VM is removed by name;
* a failed or cancelled post-import step removes the VM (run_post_import).

vSphere API reference: VirtualMachine.CloneVM_Task, VirtualMachineCloneSpec
(``location``, ``template``, ``powerOn``, ``snapshot``, ``config``),
VirtualMachineRelocateSpec.diskMoveType (``createNewChildDiskBacking``: a
linked clone, its disks children of the snapshot's), Task.CancelTask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

import anyio
from pyVmomi import vim

from asyncovf.engine.job import job_outcome, resolve_conflict
from asyncovf.engine.marks import IMPORT_FINISHED, IMPORT_MARK_KEY, IMPORT_UNFINISHED
from asyncovf.engine.options import ImportOptions, OnConflict
from asyncovf.engine.phases import JobState, Phase
from asyncovf.engine.postimport import asks_for_steps, run_post_import
from asyncovf.engine.seeds import Seed, SeedRegistry, make_seed
from asyncovf.errors import SeedError, TaskError
from asyncovf.ovf.package import Package
from asyncovf.vsphere.cleanup import shielded
from asyncovf.vsphere.inventory import Placement
from asyncovf.vsphere.removal import remove_leftover_bounded
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.tasks import cancel_task_bounded

log = logging.getLogger(__name__)

#: A linked clone's disks: new child disks of the seed snapshot's (delta disks).
LINKED_DISK_MOVE: Final = "createNewChildDiskBacking"
#: CancelTask's faults that mean there is nothing left to cancel: the task ended
#: (InvalidState), or it cannot be cancelled and will end by itself (NotSupported).
def property_edits(seed: Seed, properties: Mapping[str, str]) -> list[Any]:
    """vApp property values for a clone's config spec: an ``edit`` of each of the seed's
    properties the job sets, by vCenter's integer key.

    Raises :class:`SeedError` for a property the seed does not have (vCenter did
    not keep it on import): cloning would silently drop the value.
    """
    missing = sorted(set(properties) - set(seed.properties))
    if missing:
        raise SeedError(f"seed {seed.name} has no vApp property {', '.join(missing)}",
                        seed=seed.name)
    return [vim.vApp.PropertySpec(operation="edit", info=vim.vApp.PropertyInfo(
        key=seed.properties[key], value=value)) for key, value in sorted(properties.items())]


def clone_spec(seed: Seed, placement: Placement, options: ImportOptions) -> Any:
    """The VirtualMachineCloneSpec of one VM: its placement, annotation, property values
    and the "importing" mark; a linked clone names the seed's snapshot and child disks.

    Not a template and not powered on: the post-import steps do either, as for
    an import, after the finished mark. A VM that asks for no step is finished
    once the clone is: it is made with the finished mark (one ReconfigVM_Task
    and its wait fewer), since the clone task either makes the whole VM or fails.
    """
    location = vim.vm.RelocateSpec(pool=placement.resource_pool.ref,
                                   datastore=placement.datastore.ref)
    if placement.host is not None:
        location.host = placement.host.ref
    if seed.linked:
        location.diskMoveType = LINKED_DISK_MOVE
    mark = IMPORT_UNFINISHED if asks_for_steps(options) else IMPORT_FINISHED
    config = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(
        key=IMPORT_MARK_KEY, value=mark)])
    if options.annotation is not None:
        config.annotation = options.annotation
    edits = property_edits(seed, options.properties)
    if edits:
        config.vAppConfig = vim.vApp.VmConfigSpec(property=edits)
    spec = vim.vm.CloneSpec(location=location, template=False, powerOn=False, config=config)
    if seed.linked:
        spec.snapshot = seed.snapshot
    return spec


async def clone_vm(
    session: VCenterSession,
    seeds: SeedRegistry,
    seed: Seed,
    package: Package,
    placement: Placement,
    state: JobState,
    options: ImportOptions,
    *,
    networks: Mapping[str, Any],
    on_conflict: OnConflict = OnConflict.FAIL,
    own_vms: frozenset[str] = frozenset(),
    on_replaced: Callable[[str], None] | None = None,
    notify: Callable[[], None] = lambda: None,
    seed_attempts: int = 1,
) -> bool:
    """Clone ``state.name`` from ``seed`` (made first if no job has); on failure raise,
    leaving nothing behind. Returns False when ``on_conflict`` is ``skip`` and a
    finished VM of that name was there (as :func:`~asyncovf.engine.job.import_vm`).

    ``networks`` and ``options`` are the job's, resolved: the seed is imported
    with them (less the VM's own settings) by whichever job comes first.
    """
    with job_outcome(state):
        if not await resolve_conflict(session, state, placement, on_conflict,
                                      own_vms=own_vms, on_replaced=on_replaced):
            return False
        state.advance(Phase.SEED)
        notify()
        await seeds.ready(seed, partial(make_seed, session, package=package,
                                        placement=placement, options=options,
                                        networks=dict(networks), on_conflict=on_conflict,
                                        attempts=seed_attempts,
                                        watch=state.watch and state.watch.part()))
        state.advance(Phase.CLONE)
        notify()
        vm = await _clone(session, seed, placement, state, options)
        state.vm = str(vm._moId)
        await run_post_import(session, vm, package, state, options, notify,
                              marked=not asks_for_steps(options))
        state.advance(Phase.IMPORTED)
        notify()
    return True


async def _clone(session: VCenterSession, seed: Seed, placement: Placement, state: JobState,
                 options: ImportOptions) -> Any:
    """CloneVM_Task and its wait; on any failure, cancel the task and remove the VM."""
    spec = clone_spec(seed, placement, options)
    task: Any = None
    ended = False  # the task ended by itself (in error): nothing to cancel
    state.touched_vcenter = True
    try:
        with shielded() as scope:
            task = await session.invoke(seed.vm, "Clone", folder=placement.folder.ref,
                                        name=state.name, spec=spec)
        if scope.cancelled_caught:
            raise TimeoutError("CloneVM_Task was cut short by the interrupt")
        try:
            return await session.wait_for_task(task)
        except TaskError:
            ended = True
            raise
    except BaseException:
        state.advance(Phase.ABORT)
        started = anyio.current_time()
        if task is not None and not ended:
            await cancel_task_bounded(session, task, state.cleanup_errors,
                                      what=f"cancelling the clone task of {state.name!r}")
        if not options.keep_failed:
            await remove_leftover_bounded(session, placement.folder.ref, state.name,
                                          state.cleanup_errors,
                                          what=f"removing the partial clone {state.name!r}")
        state.timings["abort"] = (state.timings.get("abort", 0.0)
                                  + anyio.current_time() - started)
        raise


__all__ = ["LINKED_DISK_MOVE", "clone_spec", "clone_vm", "property_edits"]
