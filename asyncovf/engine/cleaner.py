"""Removing exactly the VMs a run created, concurrently: the engine of ``asyncovf cleanup``.

What to remove is a list of :class:`CleanupTarget` — a VM's managed object id
*and* the name it had — taken from run reports (:func:`asyncovf.report.read_reports`:
the VMs of jobs reported ``imported``; a ``skipped`` job's VM existed before the
run and is left alone) or listed by name prefix (:func:`list_by_prefix`). A
target is removed only if its id still carries that name: a VM renamed since,
or an id now naming another VM, is skipped and said so, never destroyed. A VM
already gone is reported as such, not as an error.

Removal runs through the import engine's worker pool
(:class:`~asyncovf.engine.workers.WorkerPool`): a bounded number of workers,
each logging in once, owning its session and logging out on every path, taking
the targets in order; each VM is powered off
if it is on, then destroyed (:func:`~asyncovf.vsphere.removal.power_off_and_destroy`).
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import anyio
from pyVmomi import vim, vmodl

from asyncovf.engine.workers import OnWorkerPool, Unfinished, WorkerPool
from asyncovf.errors import UsageError
from asyncovf.vsphere.cleanup import bounded_cleanup
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import load_snapshot
from asyncovf.vsphere.removal import is_gone, power_off_and_destroy
from asyncovf.vsphere.session import RetryPolicy, VCenterSession

log = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector


class RemovalStatus(enum.Enum):
    PENDING = "pending"
    REMOVED = "removed"
    ALREADY_GONE = "already_gone"
    SKIPPED = "skipped"  # the id no longer carries the name: not ours to remove
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class CleanupTarget:
    """A VM to remove: its managed object id, the name it must still have, and why."""

    vm: str
    name: str
    origin: str


@dataclass
class RemovalResult:
    target: CleanupTarget
    status: RemovalStatus = RemovalStatus.PENDING
    detail: str | None = None
    powered_off: bool = False
    worker: int | None = None
    seconds: float | None = None

    @property
    def gone(self) -> bool:
        return self.status in (RemovalStatus.REMOVED, RemovalStatus.ALREADY_GONE)


@dataclass(frozen=True)
class CleanupSettings:
    concurrency: int = 8
    #: Bound on one VM's PowerOff and Destroy together.
    remove_timeout: float = 300.0
    soap_retry: RetryPolicy = field(default_factory=RetryPolicy)


# -- names (pure) -------------------------------------------------------------------------------


def same_name(actual: str, expected: str) -> bool:
    """``actual`` (as vCenter reads it back) is the name ``expected``.

    vCenter escapes ``%``, ``/`` and ``\\`` in entity names (vSphere API
    reference, ManagedEntity.name): ``a/b`` reads back as ``a%2fb``.
    """
    if actual == expected:
        return True
    unescaped = re.sub(r"%(2[fF]|5[cC]|25)",
                       lambda m: {"2f": "/", "5c": "\\", "25": "%"}[m.group(1).lower()], actual)
    return unescaped == expected


# -- listing by name prefix ---------------------------------------------------------------------


async def find_by_prefix(session: VCenterSession, prefix: str, *,
                         datacenter: str | None = None,
                         folder: str | None = None) -> list[CleanupTarget]:
    """Every VM (templates too) whose name starts with ``prefix``, sorted by name.

    ``datacenter`` and ``folder`` (paths, names or ids, as for placement) scope
    the search to that datacenter's VM folder or that folder, recursively.
    """
    if not prefix:
        raise UsageError("--name-prefix must not be empty: it would match every VM")
    container = session.content.rootFolder
    scope = "the inventory"
    if datacenter or folder:
        snapshot = await load_snapshot(session)
        dc = snapshot.find("datacenter", datacenter) if datacenter else None
        if folder:
            item = snapshot.find("vm-folder", folder, datacenter=dc, what="VM folder")
            container, scope = item.ref, item.path
        else:
            assert dc is not None
            container, scope = dc.props["vmFolder"], dc.path
    view = await session.invoke(session.content.viewManager, "CreateContainerView",
                                container=container, type=[vim.VirtualMachine], recursive=True)
    try:
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[PC.TraversalSpec(
                name="view", type=vim.view.ContainerView, path="view", skip=False)])],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, all=False, pathSet=["name"])],
        )
        contents = await session.retrieve_contents([spec])
    finally:
        # A view left behind is the session's, and Logout destroys it anyway: a
        # failure here is only logged.
        with bounded_cleanup("destroying the container view"):
            await session.invoke(view, "Destroy")
    origin = f"name prefix {prefix!r} in {scope}"
    found = []
    for content in contents:
        name = next((p.val for p in content.propSet or () if p.name == "name"), None)
        if isinstance(name, str) and name.startswith(prefix):
            found.append(CleanupTarget(vm=content.obj._moId, name=name, origin=origin))
    return sorted(found, key=lambda t: (t.name, t.vm))


async def list_by_prefix(connection: ConnectionSettings, prefix: str, *,
                         datacenter: str | None = None,
                         folder: str | None = None) -> list[CleanupTarget]:
    """:func:`find_by_prefix` in a session of its own."""
    async with VCenterSession(connection) as session:
        return await find_by_prefix(session, prefix, datacenter=datacenter, folder=folder)


# -- removing -----------------------------------------------------------------------------------

UpdateCallback = Callable[[RemovalResult], None]


class Cleaner(OnWorkerPool):
    """Remove targets with a :class:`~asyncovf.engine.workers.WorkerPool`; results are
    readable at any time."""

    def __init__(self, connection: ConnectionSettings, targets: Iterable[CleanupTarget],
                 settings: CleanupSettings | None = None, *,
                 on_update: UpdateCallback | None = None) -> None:
        self.connection = connection
        self.settings = settings or CleanupSettings()
        self.results = [RemovalResult(target) for target in targets]
        self.on_update = on_update
        self.pool = WorkerPool(self.results, new_session=self._new_session,
                               handle=self._handle, settle=self._settle,
                               steps=(self.settings.concurrency,), name="cleanup worker")

    async def run(self) -> list[RemovalResult]:
        """Remove every target; raises the cancellation when interrupted.

        Whatever happens, :attr:`results` says what became of each target.
        """
        await self.pool.run()
        return self.results

    def _new_session(self) -> VCenterSession:
        return VCenterSession(self.connection, retry=self.settings.soap_retry)

    async def _handle(self, session: VCenterSession, result: RemovalResult, worker: int) -> None:
        result.worker = worker
        await self._remove(session, result)
        if self.on_update is not None:
            self.on_update(result)

    async def _remove(self, session: VCenterSession, result: RemovalResult) -> None:
        target = result.target
        vm = session.client.mor("VirtualMachine", target.vm)
        started = time.monotonic()
        try:
            with anyio.fail_after(self.settings.remove_timeout):
                props = await session.retrieve(vm, ["name", "runtime.powerState"])
                if not same_name(props["name"], target.name):
                    result.status = RemovalStatus.SKIPPED
                    result.detail = (f"{target.vm} is now named {props['name']!r}, not "
                                     f"{target.name!r}: renamed or another VM; left alone")
                    log.warning("%s: %s", target.name, result.detail)
                    return
                powered_on = props["runtime.powerState"] == vim.VirtualMachine.PowerState.poweredOn
                await power_off_and_destroy(session, vm, powered_on=powered_on)
            result.status = RemovalStatus.REMOVED
            result.powered_off = powered_on
            log.info("%s: removed %s%s", target.name, target.vm,
                     " (powered off first)" if powered_on else "")
        except TimeoutError:
            result.status = RemovalStatus.FAILED
            result.detail = f"not removed within {self.settings.remove_timeout:g} s"
        except Exception as exc:
            if is_gone(exc):
                result.status = RemovalStatus.ALREADY_GONE
                log.info("%s: %s was already gone", target.name, target.vm)
            else:
                result.status = RemovalStatus.FAILED
                result.detail = str(exc) or type(exc).__name__
                log.error("%s: removing %s failed: %s", target.name, target.vm, result.detail)
        finally:
            result.seconds = round(time.monotonic() - started, 6)

    def _settle(self, result: RemovalResult, why: Unfinished) -> None:
        """Say why a target was left: no worker could log in, or an interrupt."""
        if result.status is not RemovalStatus.PENDING:
            return
        if why is Unfinished.NO_SESSION:
            result.status = RemovalStatus.FAILED
            result.detail = f"not attempted: cannot log in: {self.login_errors[0]}"
        elif why is Unfinished.NOT_STARTED:
            result.status = RemovalStatus.INTERRUPTED
            result.detail = "interrupted before its turn; not removed"
        else:
            # Destroy may have been sent: the server may still carry it out.
            result.status = RemovalStatus.INTERRUPTED
            result.detail = "interrupted mid-removal; it may be gone (run again to know)"


# -- totals -------------------------------------------------------------------------------------


def counts(results: Sequence[RemovalResult]) -> dict[str, int]:
    """How many targets there were, and how many ended in each status."""
    tally = Counter(r.status for r in results)
    return {"targeted": len(results),
            **{s.value: tally.get(s, 0) for s in RemovalStatus if s is not RemovalStatus.PENDING}}


__all__ = [
    "Cleaner",
    "CleanupSettings",
    "CleanupTarget",
    "RemovalResult",
    "RemovalStatus",
    "counts",
    "find_by_prefix",
    "list_by_prefix",
    "same_name",
]
