"""The bounded worker pool: N workers, each with its own vCenter session.

Jobs enter a bounded stream in file order; each worker logs in once, takes jobs
until the stream is empty, and logs out on every exit path. Nothing but the
immutable inventory snapshot (through :class:`InventoryCache`) and the upload
limits is shared between workers.

A job runs attempt after attempt (``job_retries``): resolve placement, check
the name, import. A stale managed object reference refreshes the inventory and
retries once without using up a job retry. Bad input and name conflicts are
never retried.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncovf.engine.job import ImportOptions, JobHooks, JobState, import_package
from asyncovf.engine.limits import KeyedLimiter, TokenBucket, both, chunk_size_for
from asyncovf.engine.plan import JobSpec
from asyncovf.errors import (
    InputError,
    ManagedObjectNotFoundError,
    PostImportError,
    TransferError,
    UntrustedTarget,
    VCenterError,
    WaitForIPTimeout,
    error_kind,
)
from asyncovf.importer import ConnectionSettings
from asyncovf.ovf.descriptor import Descriptor
from asyncovf.ovf.package import Package
from asyncovf.ovf.properties import check_properties
from asyncovf.spec import check_deployment
from asyncovf.vsphere.folders import ensure_vm_folder
from asyncovf.vsphere.inventory import InventoryCache, InventorySnapshot, Placement
from asyncovf.vsphere.lease import CLEANUP_TIMEOUT
from asyncovf.vsphere.nfc import UploadTarget
from asyncovf.vsphere.removal import power_off_and_destroy
from asyncovf.vsphere.session import RetryPolicy, SessionTally, VCenterSession

log = logging.getLogger(__name__)

#: Tries to find and remove a VM a failed import left behind (cleanup is bounded too).
LEFTOVER_ATTEMPTS: Final = 4

#: vCenter faults that retrying cannot fix.
PERMANENT_FAULTS: Final = frozenset({
    "DuplicateName", "FileAlreadyExists", "InvalidName", "InvalidDatastorePath", "NoPermission",
    "NotSupported", "InvalidArgument", "OvfImport",
})


class JobStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    IMPORTED = "imported"
    SKIPPED = "skipped"
    FAILED = "failed"
    ABORTED = "aborted"


class OnConflict(enum.Enum):
    FAIL = "fail"
    SKIP = "skip"
    REPLACE = "replace"


class NameConflict(InputError):
    """A VM of that name already exists where the import would put it."""


def parse_ramp(text: str) -> tuple[int, ...]:
    """A concurrency schedule from ``--ramp``: ``4:64`` doubles (4, 8, 16, 32, 64),
    ``4:64:12`` adds 12 a step (4, 16, 28, 40, 52, 64), ``2,4,8,24`` is taken as given.

    Steps go up: a load test looks for the concurrency where vCenter's latency
    bends, so each step must add load. The last step is always the peak.
    """
    try:
        if "," in text:
            steps = tuple(int(part) for part in text.split(","))
        else:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            first, last = parts[0], parts[1]
            if first < 1 or last < first or (len(parts) == 3 and parts[2] < 1):
                raise ValueError
            steps_list = [first]
            while steps_list[-1] < last:
                grown = (steps_list[-1] + parts[2] if len(parts) == 3
                         else steps_list[-1] * 2)
                steps_list.append(min(grown, last))
            steps = tuple(steps_list)
    except ValueError:
        raise ValueError(f"{text!r}: expected FROM:TO (doubling), FROM:TO:STEP, or a list "
                         "like 4,8,16,32") from None
    try:
        check_ramp(steps)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return steps


def check_ramp(steps: tuple[int, ...]) -> None:
    """A ramp's steps: at least one, the first at least 1, each above the one before."""
    if not steps or steps[0] < 1 or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("each step must be at least 1 and above the one before")


@dataclass(frozen=True)
class RunSettings:
    concurrency: int = 8
    max_per_host: int | None = None
    max_per_datastore: int | None = None
    bandwidth: float | None = None  # bytes per second, all uploads together
    job_retries: int = 1
    on_conflict: OnConflict = OnConflict.FAIL
    job_timeout: float | None = None
    keep_failed: bool = False
    verify_manifest: bool = True
    upload_attempts: int = 4
    upload_initial_wait: float = 0.5
    soap_retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_ready_timeout: float = 300.0
    stall_timeout: float = 120.0
    chunk_size: int | None = None  # None: chosen by concurrency (limits.chunk_size_for)
    create_folders: bool = False
    parallel_disks: int = 1
    #: A load test's concurrency schedule (:func:`check_ramp`): start with ``ramp[0]``
    #: workers and add workers up to the next step every ``ramp_interval`` s.
    #: Empty: ``concurrency`` workers from the start.
    ramp: tuple[int, ...] = ()
    ramp_interval: float = 30.0

    def __post_init__(self) -> None:
        if self.ramp:
            check_ramp(self.ramp)
            # The pool is sized (memory, chunk size, stream buffer) for its peak.
            object.__setattr__(self, "concurrency", self.ramp[-1])


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


UpdateCallback = Callable[[JobResult], None]


class BatchRunner:
    """Run jobs with a bounded pool of workers; results are readable at any time."""

    def __init__(
        self,
        connection: ConnectionSettings,
        jobs: tuple[JobSpec, ...] | list[JobSpec],
        packages: Mapping[str, Package],
        settings: RunSettings,
        *,
        on_update: UpdateCallback | None = None,
        inventory: InventoryCache | None = None,
        source_errors: Mapping[str, str] | None = None,
    ) -> None:
        self.connection = connection
        self.results = [JobResult(spec) for spec in jobs]
        self.packages = packages
        #: Sources that failed to open or check: their jobs fail without an attempt.
        self.source_errors = dict(source_errors or {})
        self.settings = settings
        self.inventory = inventory or InventoryCache()
        self.on_update = on_update
        self.soap_calls: Counter[str] = Counter()
        self.sessions = SessionTally()
        self.relogins = 0
        #: Logouts and logins again to end a lease whose ImportVApp answer was lost.
        self.sessions_renewed = 0
        self.soap_retries = 0
        self.worker_errors: list[str] = []
        self.started = time.monotonic()
        self.finished: float | None = None
        #: (seconds from the start, workers allowed from then on): the report's record
        #: of the concurrency a load test ran at.
        self.concurrency_series: list[tuple[float, int]] = []
        self._fed = anyio.Event()
        self._per_host = KeyedLimiter(settings.max_per_host)
        self._per_datastore = KeyedLimiter(settings.max_per_datastore)
        self._bandwidth = TokenBucket(settings.bandwidth) if settings.bandwidth else None

    # -- the pool ------------------------------------------------------------------------

    async def run(self) -> list[JobResult]:
        """Import every job; returns when all are done (or raises Cancelled on interrupt).

        Whatever happens, :attr:`results` says what became of each job.
        """
        self.started = time.monotonic()
        # No buffer: a job leaves the feed only when a worker takes it, so "fed"
        # means every job is in a worker's hands (the ramp's cue to stop).
        send, receive = anyio.create_memory_object_stream[JobResult](max_buffer_size=0)
        steps = self.settings.ramp or (self.settings.concurrency,)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._feed, send)
                async with receive:
                    self._add_workers(group, receive, steps[0])
                    if len(steps) > 1:
                        group.start_soon(self._ramp, group, receive.clone(), steps[1:],
                                         name="ramp")
        finally:
            self.finished = time.monotonic()
            self._settle_unstarted()
        return self.results

    def _add_workers(self, group: TaskGroup, jobs: MemoryObjectReceiveStream[JobResult],
                     limit: int) -> None:
        """Start workers up to ``limit`` (never more than there are jobs)."""
        started = self.concurrency_series[-1][1] if self.concurrency_series else 0
        self.concurrency_series.append((round(time.monotonic() - self.started, 6), limit))
        for number in range(started + 1, min(limit, max(1, len(self.results))) + 1):
            group.start_soon(self._worker, number, jobs.clone(), name=f"worker {number}")

    async def _ramp(self, group: TaskGroup, jobs: MemoryObjectReceiveStream[JobResult],
                    steps: tuple[int, ...]) -> None:
        """Raise the number of workers one step every ``ramp_interval`` s.

        Each new worker logs in when its step comes, so a ramp measures vCenter
        at each concurrency, logins included. The ramp ends early once every
        job has been handed to a worker: later steps would only log in and out.
        """
        async with jobs:
            for limit in steps:
                with anyio.move_on_after(self.settings.ramp_interval):
                    await self._fed.wait()
                if self._fed.is_set():
                    return
                log.info("ramp: %d workers", limit)
                self._add_workers(group, jobs, limit)

    async def _feed(self, send: MemoryObjectSendStream[JobResult]) -> None:
        async with send:
            try:
                for result in self.results:
                    try:
                        await send.send(result)
                    except anyio.BrokenResourceError:
                        return  # every worker is gone (e.g. none could log in)
            finally:
                self._fed.set()

    async def _worker(self, number: int, jobs: MemoryObjectReceiveStream[JobResult]) -> None:
        async with jobs:
            session = VCenterSession(self.connection.endpoint(), self.connection.credentials(),
                                     call_timeout=self.connection.call_timeout,
                                     retry=self.settings.soap_retry)
            try:
                await self.sessions.log_in(session)
            except Exception as exc:
                self.worker_errors.append(f"worker {number}: {exc}")
                log.error("worker %d cannot log in: %s", number, exc)
                return
            try:
                async for result in jobs:
                    await self._run_job(session, result, number)
            finally:
                await self.sessions.log_out(session)
                self.soap_calls.update(session.client.calls)
                self.relogins += session.relogins
                self.sessions_renewed += session.renewals
                self.soap_retries += session.retries

    @property
    def sessions_opened(self) -> int:
        return self.sessions.opened

    @property
    def sessions_closed(self) -> int:
        return self.sessions.closed

    def _settle_unstarted(self) -> None:
        reason = "interrupted before it started"
        if self.worker_errors and not any(r.status is JobStatus.RUNNING for r in self.results):
            reason = "not started: " + "; ".join(self.worker_errors[:3])
        for result in self.results:
            if result.status is JobStatus.PENDING:
                result.status = (JobStatus.FAILED if reason.startswith("not started")
                                 else JobStatus.ABORTED)
                result.error = reason
                result.error_kind = "not started" if reason.startswith("not started") else None
            elif result.status is JobStatus.RUNNING:  # cancelled mid-job
                result.status = JobStatus.ABORTED
                result.error = result.error or "interrupted"
                result.finished = result.finished or time.monotonic()

    def _notify(self, result: JobResult) -> None:
        if self.on_update is not None:
            self.on_update(result)

    # -- one job ---------------------------------------------------------------------------

    async def _run_job(self, session: VCenterSession, result: JobResult, worker: int) -> None:
        result.status = JobStatus.RUNNING
        result.worker = worker
        result.started = time.monotonic()
        refusal = self._refusal(result.spec)
        if refusal is not None:
            # Refused on its source or descriptor alone: no attempt, nothing sent to vCenter.
            result.status = JobStatus.FAILED
            result.error, result.error_kind = refusal
            result.input_error = True
            result.finished = result.started
            self._notify(result)
            return
        self._notify(result)
        timeout = (anyio.fail_after(self.settings.job_timeout) if self.settings.job_timeout
                   else nullcontext())
        try:
            with timeout:
                await self._attempts(session, result)
        except TimeoutError:
            result.status = JobStatus.FAILED
            result.error_kind = "job timeout"
            result.error = (f"job timeout: not finished after {self.settings.job_timeout:g} s"
                            + (f" ({result.error})" if result.error else ""))
        except anyio.get_cancelled_exc_class():
            result.status = JobStatus.ABORTED
            result.error = result.error or "interrupted"
            result.finished = time.monotonic()
            self._notify(result)
            raise
        result.finished = time.monotonic()
        result.state = None
        self._notify(result)

    def _refusal(self, spec: JobSpec) -> tuple[str, str] | None:
        """(error, kind) when the job's source failed to open or its descriptor rules it out."""
        if spec.source in self.source_errors:
            return self.source_errors[spec.source], "package"
        try:
            check_job(spec, self.packages[spec.source].descriptor)
        except InputError as exc:
            return str(exc), error_kind(exc)
        return None

    async def _attempts(self, session: VCenterSession, result: JobResult) -> None:
        spec = result.spec
        package = self.packages[spec.source]
        attempt = 0
        refreshed_for_stale_mor = False
        while True:
            attempt += 1
            result.attempts = attempt
            state = result.state = JobState(name=spec.name)
            seen = await self.inventory.get(session)
            try:
                status = await self._attempt(session, spec, package, state, result)
            except anyio.get_cancelled_exc_class():
                result.absorb(state, attempt)
                raise
            except Exception as exc:
                if (isinstance(exc, ManagedObjectNotFoundError) and not refreshed_for_stale_mor
                        and not state.touched_vcenter):
                    # A MOR from the snapshot is stale (deleted or re-created since):
                    # refresh once and try again, without spending a job retry.
                    result.absorb(state, attempt)
                    refreshed_for_stale_mor = True
                    log.info("%s: inventory changed under us; refreshing", spec.name)
                    await self.inventory.refresh(session, seen=seen)
                    attempt -= 1
                    continue
                result.absorb(state, attempt)
                result.error = _error_text(exc)
                result.error_kind = error_kind(exc)
                if attempt <= self.settings.job_retries and _retryable(exc):
                    log.warning("%s: attempt %d failed (%s); retrying the job", spec.name,
                                attempt, result.error)
                    continue
                result.status = JobStatus.FAILED
                result.input_error = isinstance(exc, InputError) and not state.touched_vcenter
                return
            result.absorb(state, attempt)
            result.status = status
            result.error = result.error_kind = None
            return

    async def _attempt(self, session: VCenterSession, spec: JobSpec, package: Package,
                       state: JobState, result: JobResult) -> JobStatus:
        create_folders = (spec.create_folders if spec.create_folders is not None
                          else self.settings.create_folders)
        if create_folders:
            await ensure_vm_folder(session, self.inventory, spec.placement)
        placement = await self.inventory.resolve(session, spec.placement)
        snapshot = self.inventory.snapshot
        assert snapshot is not None
        options = import_options(spec, snapshot, placement, self.settings,
                                 descriptor=package.descriptor, warnings=result.warnings)
        if await self._resolve_conflict(session, spec.name, placement, state):
            return JobStatus.SKIPPED
        hooks = JobHooks(on_progress=lambda _: self._notify(result),
                         upload_slot=self._upload_slot(placement),
                         throttle=self._bandwidth.consume if self._bandwidth else None)
        try:
            await import_package(session, package, placement, state, options, hooks=hooks)
        except BaseException as exc:
            # The guard removes the VM its lease named (state.vm); this is for the others.
            # ImportVApp answered with a fault created nothing: no need to look.
            refused = isinstance(exc, VCenterError) and exc.method == "ImportVApp"
            if state.import_unanswered:
                await self._end_unknown_lease(session, state)
            if (state.touched_vcenter and state.vm is None and not refused
                    and not self.settings.keep_failed):
                await self._remove_leftover(session, spec.name, placement, state)
            raise
        return JobStatus.IMPORTED

    async def _end_unknown_lease(self, session: VCenterSession, state: JobState) -> None:
        """ImportVApp's answer was lost: end the lease it may have created.

        The call was sent and no answer came (the connection dropped, or the
        answer outlived the call timeout), so vCenter may hold a lease we never
        learned — and the vSphere API has no way to find a lease by its VM. A
        lease belongs to the session that created it and ends with it, so the
        worker logs out and in again (:meth:`VCenterSession.renew`) instead of
        leaving the lease, and the VM it locks, until its ``leaseTimeout``.
        Shielded and bounded like all cleanup; never raises but cancellation.
        """
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
            try:
                await session.renew()
            except Exception as exc:
                state.cleanup_errors.append(f"ending the session to end a lease whose "
                                            f"ImportVApp answer was lost failed: {exc}")
                return
            log.info("%s: ImportVApp's answer was lost; logged in again to end its lease",
                     state.name)
        if scope.cancelled_caught:
            state.cleanup_errors.append("ending the session to end a lease whose ImportVApp "
                                        "answer was lost timed out")

    async def _remove_leftover(self, session: VCenterSession, name: str, placement: Placement,
                               state: JobState) -> None:
        """Remove the VM a failed import left behind that its lease never named.

        The lease guard removes the VM its lease names. A lease aborted before
        its info was read — the import cancelled during ImportVApp or while the
        lease was initializing — names none, and a server that keeps an aborted
        import's VM (vcsim does) would keep it; nor does a lost ImportVApp
        answer name one. The name was free before ImportVApp (the conflict
        check), so a VM of that name in the folder now is this import's.
        Shielded and bounded like all cleanup; never raises.
        """
        problem = ""
        with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
            # A failed look-up or removal is tried again: giving up leaves a VM
            # that no job reports (and that blocks the name for the next attempt).
            for attempt in range(LEFTOVER_ATTEMPTS):
                if attempt:
                    await anyio.sleep(0.2 * 2 ** (attempt - 1))
                try:
                    vm = await session.invoke(session.content.searchIndex, "FindChild",
                                              entity=placement.folder.ref, name=name)
                except Exception as exc:
                    problem = (f"looking for a half-imported VM {name!r} in "
                               f"{placement.folder.path} failed: {exc}")
                    continue
                if vm is None:
                    return
                try:
                    await power_off_and_destroy(session, vm)
                except ManagedObjectNotFoundError:
                    return  # removed meanwhile (by the lease guard, or by vCenter)
                except Exception as exc:
                    problem = f"removing half-imported VM {name!r} failed: {exc}"
                    continue
                log.info("%s: removed the half-imported VM %s", name, vm._moId)
                return
        if scope.cancelled_caught:
            problem = f"removing half-imported VM {name!r} timed out" + (
                f" ({problem})" if problem else "")
        if problem:
            state.cleanup_errors.append(problem)

    def _upload_slot(self, placement: Placement) -> Callable[[UploadTarget],
                                                             AbstractAsyncContextManager[None]]:
        def slot(target: UploadTarget) -> AbstractAsyncContextManager[None]:
            host = target.url.split("/")[2] if "://" in target.url else target.url
            return both(self._per_host.slot(host),
                        self._per_datastore.slot(placement.datastore.moid))
        return slot

    async def _resolve_conflict(self, session: VCenterSession, name: str, placement: Placement,
                                state: JobState) -> bool:
        """Apply ``on_conflict`` before any lease is taken; True means skip this job."""
        existing = await session.invoke(session.content.searchIndex, "FindChild",
                                        entity=placement.folder.ref, name=name)
        if existing is None:
            return False
        policy = self.settings.on_conflict
        if policy is OnConflict.SKIP:
            state.vm = existing._moId
            return True
        if policy is OnConflict.FAIL:
            raise NameConflict(f"a VM named {name!r} already exists in {placement.folder.path} "
                               f"({existing._moId}); use --on-conflict skip or replace")
        log.info("%s: replacing existing VM %s", name, existing._moId)
        with anyio.fail_after(CLEANUP_TIMEOUT * 3):
            await power_off_and_destroy(session, existing)
        return False


def check_job(spec: JobSpec, descriptor: Descriptor) -> None:
    """Refuse, as an :class:`InputError`, a job the descriptor alone shows to be wrong.

    Pure: a job that fails here is failed before anything reaches vCenter.
    """
    try:
        check_deployment(descriptor, spec.deployment)
    except ValueError as exc:
        raise InputError(f"{spec.name}: {exc}") from None


def import_options(spec: JobSpec, snapshot: InventorySnapshot, placement: Placement,
                   settings: RunSettings, *, descriptor: Descriptor | None = None,
                   warnings: list[str] | None = None) -> ImportOptions:
    """A job's import options, with network names resolved to MORs in its datacenter.

    Given the ``descriptor``, the job's properties and network names are
    checked against it first (an :class:`InputError` naming the property or
    listing the valid networks), and networks the job leaves unmapped fall
    back to the datacenter's default network, with a warning.
    """
    if descriptor is not None:
        check_job(spec, descriptor)
        check_properties(descriptor, spec.properties, where=spec.name, hidden=spec.hidden)
    networks = map_networks(spec, snapshot, placement, descriptor, warnings)
    return ImportOptions(
        deployment=spec.deployment,
        disk_provisioning=spec.disk_provisioning,
        ip_allocation_policy=spec.ip_allocation_policy,
        ip_protocol=spec.ip_protocol,
        network_mapping=networks,
        properties=dict(spec.properties),
        annotation=spec.annotation,
        locale=spec.locale,
        extra_config=tuple(spec.extra_config.items()),
        inject_ovf_env=spec.inject_ovf_env,
        hardware_version=spec.hardware_version,
        mark_as_template=spec.mark_as_template,
        power_on=spec.power_on,
        wait_for_ip=spec.wait_for_ip,
        ip_timeout=spec.ip_timeout,
        verify_manifest=settings.verify_manifest,
        keep_failed=settings.keep_failed,
        lease_ready_timeout=settings.lease_ready_timeout,
        stall_timeout=settings.stall_timeout,
        upload_attempts=settings.upload_attempts,
        upload_initial_wait=settings.upload_initial_wait,
        chunk_size=settings.chunk_size or chunk_size_for(settings.concurrency),
        parallel_disks=spec.parallel_disks or settings.parallel_disks,
        esxi_hosts=snapshot.host_addresses(),
    )


#: What vCenter calls the network a fresh host comes with: the usual default.
DEFAULT_NETWORK_NAMES: Final = ("VM Network",)


def map_networks(spec: JobSpec, snapshot: InventorySnapshot, placement: Placement,
                 descriptor: Descriptor | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
    """OVF network name -> network MOR (port group, distributed port group, opaque)."""
    ovf_networks = descriptor.networks if descriptor is not None else ()
    if descriptor is not None:
        unknown = [name for name in spec.network_mapping if name not in ovf_networks]
        if unknown:
            raise InputError(f"{spec.name}: network mapping names {', '.join(map(repr, unknown))}"
                             f", which the descriptor does not have (its networks: "
                             f"{', '.join(ovf_networks) or 'none'})")
    mapped = {
        ovf_name: snapshot.find("network", target, datacenter=placement.datacenter,
                                what=f"network for {ovf_name!r}").ref
        for ovf_name, target in spec.network_mapping.items() if target
    }
    unmapped = [name for name in ovf_networks if name not in mapped]
    if unmapped:
        fallback = _default_network(snapshot, placement)
        if fallback is not None:
            for name in unmapped:
                if name == fallback.name:
                    continue  # same name: vCenter maps it by itself
                note = f"network {name!r} is not mapped; using {fallback.name!r}"
                log.warning("%s: %s", spec.name, note)
                if warnings is not None:
                    warnings.append(note)
                mapped[name] = fallback.ref
    return mapped


def _default_network(snapshot: InventorySnapshot, placement: Placement) -> Any:
    """The datacenter's only network, or its "VM Network"; None when it has no obvious one."""
    networks = snapshot.items("network", placement.datacenter)
    if len(networks) == 1:
        return networks[0]
    return next((n for n in networks if n.name in DEFAULT_NETWORK_NAMES), None)


def _retryable(error: BaseException) -> bool:
    """A job is retried from scratch only for failures a new attempt can fix."""
    if isinstance(error, InputError):
        return False  # bad package, placement, options, name conflict, spec rejected
    if isinstance(error, WaitForIPTimeout):
        return False  # the guest did not report an address: a new import would not either
    if isinstance(error, PostImportError) and error.__cause__ is not None:
        return _retryable(error.__cause__)  # a step's fault is as permanent as it is alone
    if isinstance(error, UntrustedTarget):
        return False  # a security refusal: the same request would go to the same place
    if isinstance(error, TransferError) and error.status is not None and error.status < 500:
        return False  # vCenter refused the request itself: repeating it changes nothing
    if isinstance(error, VCenterError) and error.fault_type in PERMANENT_FAULTS:
        return False
    return True


def _error_text(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_error_text(e) for e in error.exceptions)
    return str(error) or type(error).__name__


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
    "BatchRunner",
    "JobResult",
    "JobStatus",
    "NameConflict",
    "OnConflict",
    "RunSettings",
    "check_job",
    "import_options",
    "totals",
]
