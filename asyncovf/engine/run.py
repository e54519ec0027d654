"""A whole batch run: open the packages, check what can be checked, run the pool.

The library entry point behind ``asyncovf run``; the CLI only maps options and
prints. Before the first import, a run finds the jobs that cannot run: a
source that does not open or check (:func:`open_sources`, once per source, no
session needed) and a placement that does not resolve
(:func:`check_placements`: one session, one inventory load, each distinct
request resolved once). Those jobs fail without an attempt, as input errors,
each distinct cause told once with the VMs it affects (:class:`Cause`); the
other jobs still run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from asyncovf.engine.batch import JobResult, JobStatus, Refusal, UpdateCallback, refuse
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import BatchPlan, JobSpec
from asyncovf.engine.pool import BatchRunner
from asyncovf.engine.workers import Unfinished, WorkerPool
from asyncovf.errors import AsyncOvfError, PackageError, PlacementError
from asyncovf.ovf.blobs import HttpSourceSettings
from asyncovf.ovf.package import Package, check_files
from asyncovf.ovf.source import open_package, unreadable_source
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES
from asyncovf.printable import counted
from asyncovf.telemetry.watch import Watcher, watched
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.folders import folder_components
from asyncovf.vsphere.inventory import (
    InventoryCache,
    InventorySnapshot,
    Placement,
    PlacementRequest,
)
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cause:
    """One reason for failing and the VMs it affects, in file order: one line for all."""

    message: str
    names: tuple[str, ...]

    def __str__(self) -> str:
        if len(self.names) == 1:
            return f"{self.names[0]}: {self.message}"
        return f"{self.message} (affects {affected(self.names)})"

    def describe(self, within: Sequence[str] = ()) -> str:
        """The message alone when it affects every VM of ``within`` (named already)."""
        return self.message if tuple(within) == self.names else str(self)


def affected(names: Sequence[str]) -> str:
    """``web-001``; ``a, b, c``; or ``web-001 … web-200, 200 VMs``."""
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]} … {names[-1]}, {len(names)} VMs"


def resolve_placement(snapshot: InventorySnapshot, request: PlacementRequest, *,
                      create_folders: bool = False) -> tuple[Placement, str | None]:
    """``request`` resolved in ``snapshot`` as the import will resolve it, creating nothing.

    Returns the placement and, when the request names a folder that does not
    exist yet and ``create_folders`` will make, that folder (the placement then
    holds the datacenter's VM folder). Raises :class:`PlacementError` otherwise.
    """
    try:
        return snapshot.resolve(request), None
    except PlacementError:
        if not (create_folders and request.folder):
            raise
    # The rest of the request must resolve, and the folder must name one below
    # the VM folder: what ensure_vm_folder will create.
    placement = snapshot.resolve(replace(request, folder=None))
    folder_components(request.folder, placement.datacenter)
    return placement, request.folder


async def open_sources(
    plan: BatchPlan,
    *,
    verify_manifest: bool = True,
    max_descriptor_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES,
    http: HttpSourceSettings | None = None,
) -> tuple[dict[str, Package], dict[str, str]]:
    """Open and check every distinct source once (not once per VM).

    A broken source fails only the jobs that use it: the error is returned per
    source (not logged: the caller tells it once, with the VMs it affects), and
    the other jobs still run — whatever the error, even one nothing foresaw
    (:func:`~asyncovf.ovf.source.unreadable_source`). A cancellation goes on.
    """
    packages: dict[str, Package] = {}
    errors: dict[str, str] = {}
    for source in dict.fromkeys(job.source for job in plan.jobs):
        try:
            package = await open_package(source, max_descriptor_bytes=max_descriptor_bytes,
                                         http=http)
            check_files(package, verify_manifest=verify_manifest)
        except PackageError as exc:
            errors[source] = str(exc)
            continue
        except Exception as exc:  # one source's problem, never the whole run's
            errors[source] = str(unreadable_source(source, exc, http))
            continue
        for warning in counted(package.warnings):
            log.warning("%s: %s", source, warning)
        packages[source] = package
    return packages, errors


def causes(jobs: Sequence[JobSpec], refusals: Mapping[int, Refusal]) -> list[Cause]:
    """Each distinct refusal once, with the VMs it affects, in file order."""
    names: dict[str, list[str]] = {}
    for job in jobs:
        refusal = refusals.get(job.index)
        if refusal is not None:
            names.setdefault(refusal.error, []).append(job.name)
    return [Cause(message, tuple(affected)) for message, affected in names.items()]


@dataclass
class _InventoryLoad:
    snapshot: InventorySnapshot | None = None
    error: Exception | None = None


async def load_inventory(connection: ConnectionSettings, settings: RunSettings,
                         inventory: InventoryCache, *,
                         watcher: Watcher | None = None) -> InventorySnapshot:
    """Load ``inventory`` in a session of its own: one shielded login, one logout.

    Raises the login error when it cannot log in, the load's error when the
    inventory cannot be read, and the cancellation when interrupted. ``watcher``
    hears of the session's calls, as of the workers'.
    """
    load = _InventoryLoad()

    async def handle(session: VCenterSession, item: _InventoryLoad, worker: int) -> None:
        try:
            item.snapshot = await inventory.get(session)
        except Exception as exc:  # the caller's to raise, not the pool's
            item.error = exc

    def settle(item: _InventoryLoad, why: Unfinished) -> None:
        pass  # not loaded: the pool says why (no session), or the interrupt is raised

    pool = WorkerPool([load], steps=(1,), handle=handle, settle=settle,
                      new_session=lambda: watched(VCenterSession(
                          connection, retry=settings.soap_retry), watcher),
                      name="placement check")
    await pool.run()
    if pool.no_session:
        raise pool.login_errors[0].error
    if load.error is not None:
        raise load.error
    assert load.snapshot is not None
    return load.snapshot


async def check_placements(connection: ConnectionSettings, jobs: Sequence[JobSpec],
                           settings: RunSettings, inventory: InventoryCache, *,
                           watcher: Watcher | None = None) -> dict[int, Refusal]:
    """The jobs whose placement does not resolve, by job index, and why.

    The inventory is loaded once (into ``inventory``, which the run then starts
    from) and each distinct request resolved once in it, as the import will
    resolve it: a folder that ``create_folders`` will make is not missing. No
    jobs, no session.
    """
    requests: dict[tuple[PlacementRequest, bool], list[int]] = {}
    for job in jobs:
        requests.setdefault((job.placement, settings.creates_folders(job.options)),
                            []).append(job.index)
    if not requests:
        return {}
    snapshot = await load_inventory(connection, settings, inventory, watcher=watcher)
    refusals: dict[int, Refusal] = {}
    for (request, create_folders), indices in requests.items():
        try:
            resolve_placement(snapshot, request, create_folders=create_folders)
        except PlacementError as exc:
            refusals.update(dict.fromkeys(indices, Refusal(str(exc), "input")))
    return refusals


class BatchRun:
    """``asyncovf run`` once its sources are open: the checks, then the pool.

    :meth:`check` finds the jobs that cannot run and returns each cause once;
    :meth:`run` fails those without an attempt and runs the others; :meth:`settle`
    says what became of the jobs the run never reached. The report is the
    :attr:`runner`'s, whose :attr:`~BatchRunner.results` cover every job.
    """

    def __init__(
        self,
        connection: ConnectionSettings,
        plan: BatchPlan,
        packages: Mapping[str, Package],
        source_errors: Mapping[str, str],
        settings: RunSettings,
        *,
        on_update: UpdateCallback | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        self.connection = connection
        self.jobs = plan.jobs
        self.settings = settings
        #: Every job's status updates but the refused ones' (told once, by cause).
        self.on_update = on_update
        #: Loaded by the placement check; the run's workers start from it.
        self.inventory = InventoryCache()
        self.runner = BatchRunner(connection, plan.jobs, packages, settings,
                                  on_update=self._notify, inventory=self.inventory,
                                  source_errors=source_errors, watcher=watcher)
        #: Jobs that fail without an attempt, by job index: the runner's, which
        #: fails them, and to which :meth:`check` adds.
        self.refusals = self.runner.refusals
        #: Whether :meth:`check` finished: an error before then is the checks', not a job's.
        self.checked = False

    @property
    def results(self) -> list[JobResult]:
        return self.runner.results

    @property
    def to_run(self) -> list[JobResult]:
        """The jobs not refused: those the pool imports."""
        return [r for r in self.results if r.spec.index not in self.refusals]

    async def check(self) -> list[Cause]:
        """Resolve the placement of every job whose source opened; each cause once."""
        pending = [job for job in self.jobs if job.index not in self.refusals]
        self.refusals.update(await check_placements(self.connection, pending, self.settings,
                                                    self.inventory, watcher=self.runner.watcher))
        self.checked = True
        return causes(self.jobs, self.refusals)

    async def run(self) -> None:
        """Run the jobs (after :meth:`check`); with none but refused ones, no session at all.

        The pool fails every refused job (a broken source, a placement that
        does not resolve) without an attempt.
        """
        if not self.to_run:
            self.settle()
            return
        await self.runner.run()

    def settle(self, error: BaseException | None = None) -> None:
        """What became of the jobs the run never reached (no-op once the pool ran).

        A refused job fails as refused; any other was interrupted before it
        started, or — ``error`` — never started because the checks could not
        be made (a login refused, an inventory that cannot be read).
        """
        for result in self.results:
            if result.status is not JobStatus.PENDING:
                continue
            refusal = self.refusals.get(result.spec.index)
            if refusal is not None:
                refuse(result, refusal)
            elif error is None:
                result.status = JobStatus.ABORTED
                result.error = "interrupted before it started"
            else:
                result.status = JobStatus.FAILED
                result.error = f"not started: {error}"
                result.error_kind = "not started"

    def _notify(self, result: JobResult) -> None:
        if self.on_update is not None and result.spec.index not in self.refusals:
            self.on_update(result)


async def run_batch(
    connection: ConnectionSettings,
    plan: BatchPlan,
    settings: RunSettings | None = None,
    *,
    on_update: UpdateCallback | None = None,
    max_descriptor_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES,
    http: HttpSourceSettings | None = None,
    watcher: Watcher | None = None,
) -> list[JobResult]:
    """``asyncovf run`` without the terminal: one result per job of ``plan``, in its order.

    Opens every source once, checks every placement, then imports on the worker
    pool (``settings``, by default :class:`RunSettings`'s). A job that cannot
    run — its source does not open, its placement does not resolve — fails
    without an attempt and the others still run. When the checks cannot be made
    at all (a login refused, an inventory that cannot be read), no job starts
    and each result says why: vCenter's answers and bad input end up in the
    results, never raised. ``on_update`` sees every status change of the jobs
    that were not refused. ``watcher`` hears of every job, phase and SOAP call
    (:class:`~asyncovf.telemetry.metrics.Metrics`,
    :class:`~asyncovf.telemetry.tracing.Tracing`, or both as
    :class:`~asyncovf.telemetry.watch.Watchers`).

    Cancelled, it aborts the leases in flight, removes their VMs and logs out
    before the cancellation goes on; an error that is not ours (a bug) is
    raised the same way. Either way every job's result is settled first, for a
    caller holding them through ``on_update``.
    """
    settings = settings if settings is not None else RunSettings()
    packages, source_errors = await open_sources(plan, verify_manifest=settings.verify_manifest,
                                                 max_descriptor_bytes=max_descriptor_bytes,
                                                 http=http)
    batch = BatchRun(connection, plan, packages, source_errors, settings, on_update=on_update,
                     watcher=watcher)
    try:
        try:
            await batch.check()
        except AsyncOvfError as exc:
            batch.settle(exc)  # not started: the results say why
            return batch.results
        await batch.run()
    finally:
        # Jobs the run never reached: a refused one fails as refused, any other
        # was interrupted before it started. A no-op once the pool ran.
        batch.settle()
    return batch.results


__all__ = [
    "BatchRun",
    "Cause",
    "affected",
    "causes",
    "check_placements",
    "load_inventory",
    "open_sources",
    "resolve_placement",
    "run_batch",
]
