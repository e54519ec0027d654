"""A batch on the worker pool: its jobs through :class:`~asyncovf.engine.workers.WorkerPool`.

The pool feeds the jobs in file order to N workers (or a ramp of them), each
logging in once and logging out on every exit path. Nothing but the immutable
inventory snapshot (through :class:`InventoryCache`) and the upload limits is
shared between workers. What one job does — attempts, retries and every
guarantee of its import — is :func:`~asyncovf.engine.batch.run_job`'s; what
became of a job the pool could not see through is :meth:`BatchRunner._settle`'s.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

from asyncovf.engine.adaptive import AdaptiveLimit
from asyncovf.engine.batch import (
    JobContext,
    JobResult,
    JobStatus,
    Refusal,
    UpdateCallback,
    run_job,
)
from asyncovf.engine.breaker import CircuitBreaker
from asyncovf.engine.import_specs import ImportSpecCache
from asyncovf.engine.limits import KeyedLimiter, TokenBucket, both
from asyncovf.engine.mark_checks import MarkChecks
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import JobSpec
from asyncovf.engine.seeds import SeedRegistry, clones
from asyncovf.engine.uploads import JobHooks
from asyncovf.engine.workers import OnWorkerPool, Unfinished, WorkerPool
from asyncovf.ovf.package import Package
from asyncovf.telemetry.watch import Watcher, watched
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import InventoryCache, Placement
from asyncovf.vsphere.nfc import UploadTarget
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)


class BatchRunner(OnWorkerPool):
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
        refusals: Mapping[int, Refusal] | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        self.connection = connection
        #: Told of each job, session and limit: the run's metrics and traces (None: off).
        self.watcher = watcher
        self.results = [JobResult(spec) for spec in jobs]
        self.packages = packages
        #: Jobs found unable to run before the run, by job index: those of a source
        #: that failed to open or check (``source_errors``: source → message) and
        #: any ``refusals`` (a placement that does not resolve). They fail without
        #: an attempt.
        self.refusals: dict[int, Refusal] = {
            spec.index: Refusal(source_errors[spec.source], "package")
            for spec in jobs if source_errors and spec.source in source_errors}
        self.refusals.update(refusals or {})
        self.settings = settings
        #: vCenter's ServiceContent.about (fullName, version, build, apiVersion), as the
        #: first worker to log in read it: the run report's metadata.
        self.about: dict[str, str] | None = None
        self.inventory = inventory or InventoryCache()
        self.on_update = on_update
        self._per_host = KeyedLimiter(settings.max_per_host)
        self._per_datastore = KeyedLimiter(settings.max_per_datastore)
        self._bandwidth = TokenBucket(settings.bandwidth) if settings.bandwidth else None
        #: One CreateImportSpec per group, each VM's spec derived (unless ``spec_per_vm``).
        self.import_specs = None if settings.spec_per_vm else ImportSpecCache()
        #: The seed VMs of the jobs cloned from one (``strategy: clone``), by group.
        self.seeds = (SeedRegistry(jobs, settings)
                      if any(clones(spec, settings) for spec in jobs) else None)
        #: Each worker's finished-mark tasks not yet seen done, by its session.
        self._marks: dict[int, MarkChecks] = {}
        #: Reads of pending finished-mark tasks, summed as workers leave.
        self.mark_checks = 0
        #: Stops the feed once the run's jobs keep failing (``--max-error-rate``).
        self.breaker = CircuitBreaker(window=settings.error_window,
                                      max_error_rate=settings.max_error_rate,
                                      pause_first=settings.burst_pause)
        #: ``--concurrency auto``: the limit the workers follow (None: fixed or a ramp).
        self.limiter = AdaptiveLimit(settings.concurrency) if settings.adaptive else None
        self.pool = WorkerPool(self.results, new_session=self._new_session,
                               handle=self._run_job, settle=self._settle,
                               before_logout=self._before_logout, admit=self.breaker.admit,
                               limiter=self.limiter,
                               on_limit=watcher.limit if watcher is not None else None,
                               steps=settings.ramp or (settings.concurrency,),
                               interval=settings.ramp_interval, name="worker")

    async def run(self) -> list[JobResult]:
        """Import every job; returns when all are done (or raises Cancelled on interrupt).

        Whatever happens, :attr:`results` says what became of each job.
        """
        await self.pool.run()
        return self.results

    # -- what the pool counted, as the report reads it ----------------------------------------

    @property
    def started(self) -> float:
        """When the run started (monotonic): the origin of every time in the report."""
        return self.pool.started

    @property
    def finished(self) -> float | None:
        return self.pool.finished

    @property
    def concurrency_series(self) -> list[tuple[float, int]]:
        """(seconds from the start, workers allowed from then on): the report's record
        of the concurrency a load test ran at."""
        return self.pool.concurrency_series

    @property
    def ramp_step(self) -> tuple[int, int, int] | None:
        """(the step in force, from 1; the steps; the workers it allows), or None before
        the run starts: what the progress display says of the ramp."""
        series = self.pool.concurrency_series
        if not series:
            return None
        return len(series), len(self.pool.steps), series[-1][1]

    @property
    def soap_calls(self) -> Counter[str]:
        return self.pool.soap_calls

    @property
    def relogins(self) -> int:
        return self.pool.relogins

    @property
    def sessions_renewed(self) -> int:
        """Logouts and logins again to end a lease whose ImportVApp answer was lost."""
        return self.pool.sessions_renewed

    @property
    def soap_retries(self) -> int:
        return self.pool.soap_retries

    @property
    def worker_errors(self) -> list[str]:
        """``worker N: why it could not log in``, one per worker that could not."""
        return [str(failure) for failure in self.pool.login_errors]

    # -- the pool's callbacks -------------------------------------------------------------------

    def _new_session(self) -> VCenterSession:
        session = VCenterSession(self.connection, retry=self.settings.soap_retry)
        if self.limiter is not None:
            session.client.observers.append(self.limiter.observe)
        return watched(session, self.watcher)

    def _settle(self, result: JobResult, why: Unfinished) -> None:
        """A job the run ended without: failed if no worker could log in, else aborted."""
        if result.status is JobStatus.RUNNING:  # cancelled mid-job
            result.status = JobStatus.ABORTED
            result.error = result.error or "interrupted"
            result.finished = result.finished or time.monotonic()
        elif result.status is JobStatus.PENDING:
            if why is Unfinished.NO_SESSION:
                result.status = JobStatus.FAILED
                result.error = "not started: " + "; ".join(self.worker_errors[:3])
                result.error_kind = "not started"
            elif self.breaker.tripped is not None:
                result.status = JobStatus.ABORTED
                result.error = f"not started: the circuit breaker stopped the run: " \
                               f"{self.breaker.tripped}"
                result.error_kind = "not started"
            else:
                result.status = JobStatus.ABORTED
                result.error = "interrupted before it started"

    def _notify(self, result: JobResult) -> None:
        if self.on_update is not None:
            self.on_update(result)

    async def _run_job(self, session: VCenterSession, result: JobResult, worker: int) -> None:
        result.worker = worker
        if self.about is None:
            about = session.content.about
            self.about = {key: str(getattr(about, key, "") or "")
                          for key in ("fullName", "version", "build", "apiVersion")}
        context = JobContext(inventory=self.inventory, settings=self.settings,
                             hooks_for=self._hooks, on_update=self._notify,
                             import_specs=self.import_specs, seeds=self.seeds,
                             marks=self._marks_of(session), watcher=self.watcher)
        # Counted in hand before anything is awaited: the seed stays while a job holds it.
        if self.seeds is not None:
            self.seeds.enter(result.spec)
        try:
            await run_job(session, result, self.packages.get(result.spec.source), context,
                          refusal=self.refusals.get(result.spec.index))
            self.breaker.record(result)
        finally:
            if self.seeds is not None:
                await self.seeds.leave(session, result.spec)

    def _marks_of(self, session: VCenterSession) -> MarkChecks:
        """The worker's finished-mark tasks (made at its first job)."""
        marks = self._marks.get(id(session))
        if marks is None:
            marks = self._marks[id(session)] = MarkChecks(session)
        return marks

    async def _before_logout(self, session: VCenterSession) -> None:
        """A worker leaving: its finished marks checked, and the seeds no job holds done
        with. Each is bounded and never raises; the worker then logs out."""
        marks = self._marks.pop(id(session), None)
        if marks is not None:
            await marks.check_bounded()
            self.mark_checks += marks.checks
        if self.seeds is not None:
            await self.seeds.sweep(session)

    def _hooks(self, placement: Placement, result: JobResult) -> JobHooks:
        return JobHooks(on_progress=lambda _: self._notify(result),
                        upload_slot=self._upload_slot(placement),
                        throttle=self._bandwidth.consume if self._bandwidth else None)

    def _upload_slot(self, placement: Placement) -> Callable[[UploadTarget],
                                                             AbstractAsyncContextManager[None]]:
        def slot(target: UploadTarget) -> AbstractAsyncContextManager[None]:
            host = target.url.split("/")[2] if "://" in target.url else target.url
            return both(self._per_host.slot(host),
                        self._per_datastore.slot(placement.datastore.moid))
        return slot


__all__ = ["BatchRunner"]
