"""One batch job from start to end: its attempts, its time bound, and its record.

A job runs attempt after attempt (``job_retries``): resolve placement (and
create the folder if asked), build the import options, then
:func:`~asyncovf.engine.job.import_vm`, which owns every guarantee of one
import. A stale managed object reference refreshes the inventory and retries
once without using up a job retry. Bad input and name conflicts are never
retried. Whatever goes wrong — an inventory that cannot be read included —
fails this job only, with its error kind: never the worker, never the batch.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio

from asyncovf.engine.clone import clone_vm
from asyncovf.engine.import_specs import ImportSpecCache
from asyncovf.engine.job import import_vm
from asyncovf.engine.mark_checks import MarkChecks
from asyncovf.engine.options import RunSettings
from asyncovf.engine.phases import JobState
from asyncovf.engine.plan import JobSpec
from asyncovf.engine.resolve import check_job, resolve_options
from asyncovf.engine.seeds import SeedRegistry
from asyncovf.engine.uploads import JobHooks
from asyncovf.errors import (
    InputError,
    PlacementError,
    RetryScope,
    error_kind,
    error_text,
    retryable,
)
from asyncovf.ovf.package import Package
from asyncovf.telemetry.watch import JobWatch, Watcher
from asyncovf.vsphere.folders import ensure_vm_folder
from asyncovf.vsphere.inventory import (
    InventoryCache,
    InventorySnapshot,
    Placement,
    PlacementRequest,
)
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)

class JobStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    IMPORTED = "imported"
    SKIPPED = "skipped"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass
class JobResult:
    """What happened to one job; the report is made of these."""

    spec: JobSpec
    status: JobStatus = JobStatus.PENDING
    vm: str | None = None
    attempts: int = 0
    upload_retries: int = 0
    bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: :func:`~asyncovf.errors.error_kind` of the error that ended the job.
    error_kind: str | None = None
    warnings: list[str] = field(default_factory=list)
    cleanup_errors: list[str] = field(default_factory=list)
    #: Failed on bad input before anything was created on vCenter.
    input_error: bool = False
    worker: int | None = None
    started: float | None = None  # monotonic
    finished: float | None = None
    phases: list[tuple[int, str, float]] = field(default_factory=list)  # attempt, phase, start
    #: The guest's IP address, when the job waited for it.
    ip_address: str | None = None
    #: The MOR id of a VM of that name the job destroyed to import its own
    #: (``--on-conflict replace``, or an import that never finished).
    replaced: str | None = None
    #: The host fetched the files itself (pull mode): their digests went unchecked.
    pulled: bool = False
    #: The job's OpenTelemetry trace id, when traced: joins its report row, log lines, trace.
    trace_id: str | None = None
    state: JobState | None = None  # the attempt in progress, for live display

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def done(self) -> bool:
        return self.status not in (JobStatus.PENDING, JobStatus.RUNNING)

    def absorb(self, state: JobState, attempt: int) -> None:
        """Fold one attempt's record into the job's."""
        for phase, seconds in state.timings.items():
            self.timings[phase] = self.timings.get(phase, 0.0) + seconds
        self.phases.extend((attempt, phase, started) for phase, started in state.history)
        self.warnings.extend(w for w in state.warnings if w not in self.warnings)
        self.cleanup_errors.extend(state.cleanup_errors)
        self.vm = state.vm or self.vm
        self.ip_address = state.ip_address
        self.bytes = state.bytes_done
        self.upload_retries += state.upload_retries
        self.pulled = state.pulled


UpdateCallback = Callable[[JobResult], None]


@dataclass(frozen=True)
class Refusal:
    """Why a job fails without an attempt, known before it starts: nothing reached vCenter."""

    error: str
    kind: str  # its error_kind: "package" (its source), "input" (its placement, descriptor)


def refuse(result: JobResult, refusal: Refusal) -> None:
    """Fail ``result`` without an attempt, as an input error."""
    result.status = JobStatus.FAILED
    result.error, result.error_kind = refusal.error, refusal.kind
    result.input_error = True
    result.started = result.finished = result.started or time.monotonic()
HooksFor = Callable[[Placement, JobResult], JobHooks]


@dataclass(frozen=True)
class JobContext:
    """What a job needs from the run around it: nothing a job must not share."""

    inventory: InventoryCache
    settings: RunSettings
    #: The upload slot and throttle of the pool (per-host, per-datastore, bandwidth).
    hooks_for: HooksFor | None = None
    on_update: UpdateCallback | None = None
    #: The run's import specs, one CreateImportSpec per group (None: one per VM).
    import_specs: ImportSpecCache | None = None
    #: The run's seed VMs, for jobs cloned from one (``strategy: clone``).
    seeds: SeedRegistry | None = None
    #: The worker's finished-mark tasks, checked later (None: each is waited for).
    marks: MarkChecks | None = None
    #: Told of each job, its phases and bytes: the run's metrics and traces (None: off).
    watcher: Watcher | None = None

    def notify(self, result: JobResult) -> None:
        if self.on_update is not None:
            self.on_update(result)


async def run_job(session: VCenterSession, result: JobResult, package: Package | None,
                  context: JobContext, *, refusal: Refusal | None = None) -> None:
    """Run one job to its end; ``result`` says what became of it.

    ``refusal``: found before the run (its source failed to open, its placement
    does not resolve), so it fails without an attempt, as does a job its
    descriptor rules out. Raises only cancellation.
    """
    if context.watcher is None:
        await _run(session, result, package, context, refusal, None)
        return
    watch = context.watcher.job(result.name)
    result.trace_id = watch.trace_id
    try:
        await _run(session, result, package, context, refusal, watch)
    finally:
        watch.end(result.status.value, error=result.error, error_kind=result.error_kind,
                  attempts=result.attempts)


async def _run(session: VCenterSession, result: JobResult, package: Package | None,
               context: JobContext, refusal: Refusal | None, watch: JobWatch | None) -> None:
    result.status = JobStatus.RUNNING
    result.started = time.monotonic()
    if refusal is None and package is not None:
        try:
            check_job(result.spec, package.descriptor, strategy=context.settings.strategy)
        except InputError as exc:
            refusal = Refusal(str(exc), error_kind(exc))
    if refusal is not None or package is None:
        # Refused on its input alone: no attempt, nothing sent to vCenter.
        refuse(result, refusal or Refusal("no package", "package"))
        context.notify(result)
        return
    context.notify(result)
    job_timeout = context.settings.job_timeout
    timeout = anyio.fail_after(job_timeout) if job_timeout else nullcontext()
    try:
        with timeout:
            await _attempts(session, result, package, context, watch)
    except TimeoutError:
        result.status = JobStatus.FAILED
        result.error_kind = "job timeout"
        result.error = (f"job timeout: not finished after {job_timeout:g} s"
                        + (f" ({result.error})" if result.error else ""))
    except anyio.get_cancelled_exc_class():
        result.status = JobStatus.ABORTED
        result.error = result.error or "interrupted"
        result.finished = time.monotonic()
        context.notify(result)
        raise
    result.finished = time.monotonic()
    result.state = None
    context.notify(result)


async def _attempts(session: VCenterSession, result: JobResult, package: Package,
                    context: JobContext, watch: JobWatch | None) -> None:
    spec = result.spec
    settings = context.settings
    attempt = 0
    refreshed_for_stale_mor = False
    touched_vcenter = False
    own_vms: set[str] = set()
    while True:
        attempt += 1
        result.attempts = attempt
        state = result.state = JobState(name=spec.name, watch=watch)
        seen: InventorySnapshot | None = None
        try:
            seen = await context.inventory.get(session)
            imported = await _attempt(session, result, package, state, context,
                                      frozenset(own_vms))
        except anyio.get_cancelled_exc_class():
            result.absorb(state, attempt)
            raise
        except Exception as exc:
            touched_vcenter = touched_vcenter or state.touched_vcenter
            if state.vm is not None:
                own_vms.add(state.vm)
            if (retryable(exc, RetryScope.INVENTORY) and not refreshed_for_stale_mor
                    and not state.touched_vcenter and seen is not None):
                # A MOR from the snapshot is stale (deleted or re-created since):
                # refresh once and try again, without spending a job retry.
                result.absorb(state, attempt)
                refreshed_for_stale_mor = True
                log.info("%s: inventory changed under us; refreshing", spec.name)
                try:
                    await context.inventory.refresh(session, seen=seen)
                except Exception as refresh_error:
                    exc = refresh_error  # the job fails on the refresh, with its kind
                else:
                    attempt -= 1
                    continue
            result.absorb(state, attempt)
            result.error = error_text(exc)
            result.error_kind = error_kind(exc)
            if attempt <= settings.job_retries and retryable(exc, RetryScope.JOB):
                log.warning("%s: attempt %d failed (%s); retrying the job", spec.name,
                            attempt, result.error)
                continue
            result.status = JobStatus.FAILED
            # Input is to blame only if nothing reached vCenter on any attempt.
            result.input_error = isinstance(exc, InputError) and not touched_vcenter
            return
        result.absorb(state, attempt)
        result.status = JobStatus.IMPORTED if imported else JobStatus.SKIPPED
        result.error = result.error_kind = None
        return


async def _attempt(session: VCenterSession, result: JobResult, package: Package,
                   state: JobState, context: JobContext, own_vms: frozenset[str]) -> bool:
    spec = result.spec
    settings = context.settings
    if settings.creates_folders(spec.options):
        await ensure_vm_folder(session, context.inventory, spec.placement)
    snapshot, placement = await _resolve(session, context.inventory, spec.placement)
    options, networks = resolve_options(spec, snapshot, placement, settings,
                                        descriptor=package.descriptor, warnings=result.warnings)
    seeds = context.seeds
    seed = seeds.seed_of(spec) if seeds is not None else None
    if seeds is not None and seed is not None:
        return await clone_vm(session, seeds, seed, package, placement, state, options,
                              networks=networks, on_conflict=settings.on_conflict,
                              own_vms=own_vms, on_replaced=partial(_replaced, result),
                              notify=partial(context.notify, result),
                              seed_attempts=settings.job_retries + 1)
    hooks = replace(context.hooks_for(placement, result) if context.hooks_for else JobHooks(),
                    host_addresses=partial(context.inventory.host_addresses, session),
                    finish_mark=partial(context.marks.write, job=result.name,
                                        warn=result.warnings.append)
                    if context.marks is not None else None)
    return await import_vm(session, package, placement, state, options, networks=networks,
                           on_conflict=settings.on_conflict, own_vms=own_vms, hooks=hooks,
                           on_replaced=partial(_replaced, result),
                           specs=context.import_specs)


def _replaced(result: JobResult, moid: str) -> None:
    # The first: a later attempt removes only this job's own leftovers.
    result.replaced = result.replaced or moid
    log.warning("%s: destroyed the existing VM %s to import it again", result.name, moid)


async def _resolve(session: VCenterSession, inventory: InventoryCache,
                   request: PlacementRequest) -> tuple[InventorySnapshot, Placement]:
    """Placement and the snapshot it was resolved in (refreshed once on a miss): the
    job's options must come from the same snapshot, not from one swapped in since."""
    snapshot = await inventory.get(session)
    try:
        return snapshot, snapshot.resolve(request)
    except PlacementError:
        snapshot = await inventory.refresh(session, seen=snapshot)
        return snapshot, snapshot.resolve(request)


def totals(results: list[JobResult]) -> dict[str, Any]:
    counts = Counter(r.status.value for r in results)
    return {
        "jobs": len(results),
        **{status.value: counts.get(status.value, 0) for status in JobStatus
           if status not in (JobStatus.PENDING, JobStatus.RUNNING)},
        "bytes": sum(r.bytes for r in results if r.status is JobStatus.IMPORTED),
        "attempts": sum(r.attempts for r in results),
    }


__all__ = [
    "JobContext",
    "JobResult",
    "JobStatus",
    "Refusal",
    "UpdateCallback",
    "refuse",
    "run_job",
    "totals",
]
