"""Finished marks sent without waiting: a worker checks its jobs' mark tasks together, later.

The finished mark (:mod:`asyncovf.engine.marks`) is the last call of an import
that asks for no post-import step: one ReconfigVM_Task. Waiting for it costs
the job a poll of the task and the task's own time (a reconfigure takes a few
hundred milliseconds on vCenter) before the worker can start its next import,
for a task that almost never fails. So a batch worker sends it, counts the job
imported (its lease is complete: the VM is whole), and checks the tasks it sent
in one read of all of them: whenever :data:`CHECK_EVERY` are pending, and
before it logs out, on every path.

A mark whose task failed is written again and waited for. If that fails too,
the job keeps its VM and says so in a warning: the VM still reads "importing",
so a later ``--on-conflict skip`` would remove it and import it again. Nothing
is lost either way; only the check moved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
from pyVmomi import vim, vmodl

from asyncovf.engine.marks import IMPORT_FINISHED, IMPORT_MARK_KEY
from asyncovf.engine.postimport import extra_config_spec, set_extra_config
from asyncovf.errors import ManagedObjectNotFoundError, error_text
from asyncovf.vsphere.cleanup import bounded_cleanup
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.soap import describe_fault

log = logging.getLogger(__name__)

#: Mark tasks a worker lets pend before it checks them (and waits for them).
CHECK_EVERY: Final = 32

Warn = Callable[[str], None]
FINISHED: Final = ((IMPORT_MARK_KEY, IMPORT_FINISHED),)


def finished_mark_spec() -> Any:
    """The ReconfigVM_Task spec that writes the finished mark."""
    return extra_config_spec(FINISHED)


@dataclass(frozen=True)
class _Pending:
    task: Any
    vm: Any
    job: str
    warn: Warn


class MarkChecks:
    """One worker's finished-mark tasks not yet seen to succeed."""

    def __init__(self, session: VCenterSession) -> None:
        self.session = session
        self.pending: list[_Pending] = []
        self.checks = 0  # reads of the pending tasks, for tests and benchmarks

    async def write(self, vm: Any, *, job: str, warn: Warn) -> None:
        """Send the finished mark of ``job``'s ``vm``; :meth:`check` sees it done."""
        task = await self.session.invoke(vm, "Reconfigure", spec=finished_mark_spec())
        self.pending.append(_Pending(task, vm, job, warn))
        if len(self.pending) >= CHECK_EVERY:
            await self.check()

    async def check(self) -> None:
        """Until every pending mark task has ended: one read of all of them per round;
        a failed mark is written again, waited for, and a warning if that fails too."""
        delay = 0.02
        while self.pending:
            self.checks += 1
            states = await self._states([p.task for p in self.pending])
            running = []
            for pending in self.pending:
                state, error = states.get(str(pending.task._moId), (None, None))
                if state == vim.TaskInfo.State.success:
                    continue
                if state in (vim.TaskInfo.State.queued, vim.TaskInfo.State.running):
                    running.append(pending)
                    continue
                # Failed, or a task vCenter no longer knows: write the mark again.
                why = describe_fault(error) if error is not None else "its task is gone"
                await self._again(pending, why)
            self.pending = running
            if running:
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def check_bounded(self) -> None:
        """:meth:`check`, shielded and bounded (a worker leaving): a mark it could not
        see done is a warning of its job, never an error of the run."""
        errors: list[str] = []
        with bounded_cleanup("checking the finished marks", errors):
            await self.check()
        for pending in self.pending:
            pending.warn(f"the finished mark of {pending.job} was sent and not seen done "
                         f"({errors[0] if errors else 'interrupted'}); --on-conflict skip "
                         "would take the VM for a half-imported one")
        self.pending = []

    async def _states(self, tasks: list[Any]) -> dict[str, tuple[Any, Any]]:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task, skip=False)
                       for task in tasks],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(
                type=vim.Task, pathSet=["info.state", "info.error"], all=False)])
        try:
            contents = await self.session.retrieve_contents([spec])
        except ManagedObjectNotFoundError:
            return {}  # one of them is gone: each is written again, which is harmless
        states: dict[str, tuple[Any, Any]] = {}
        for content in contents:
            values = {prop.name: prop.val for prop in content.propSet or ()}
            states[str(content.obj._moId)] = (values.get("info.state"), values.get("info.error"))
        return states

    async def _again(self, pending: _Pending, why: str) -> None:
        log.warning("%s: the finished mark's task failed (%s); writing it again", pending.job,
                    why)
        try:
            await set_extra_config(self.session, pending.vm, FINISHED)
        except Exception as exc:
            pending.warn(f"the finished mark was not written ({why}; again: {error_text(exc)}):"
                         " --on-conflict skip would take the VM for a half-imported one")


__all__ = ["CHECK_EVERY", "MarkChecks", "finished_mark_spec"]
