"""The bounded worker pool of a batch: N workers, each with its own vCenter session.

Jobs enter a bounded stream in file order; each worker logs in once, takes jobs
until the stream is empty, and logs out on every exit path. Nothing but the
immutable inventory snapshot (through :class:`InventoryCache`) and the upload
limits is shared between workers. What one job does — attempts, retries and
every guarantee of its import — is :func:`~asyncovf.engine.batch.run_job`'s.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncovf.engine.batch import (
    JobContext,
    JobResult,
    JobStatus,
    UpdateCallback,
    run_job,
    totals,
)
from asyncovf.engine.limits import KeyedLimiter, TokenBucket, both
from asyncovf.engine.options import (
    OnConflict,
    RunSettings,
    check_job,
    check_ramp,
    import_options,
    parse_ramp,
)
from asyncovf.engine.plan import JobSpec
from asyncovf.engine.uploads import JobHooks
from asyncovf.errors import NameConflict
from asyncovf.ovf.package import Package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import InventoryCache, Placement
from asyncovf.vsphere.nfc import UploadTarget
from asyncovf.vsphere.session import SessionTally, VCenterSession

log = logging.getLogger(__name__)


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
        #: Why workers could not log in (the errors themselves, for the exit status).
        self.login_errors: list[Exception] = []
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
                self.login_errors.append(exc)
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
        result.worker = worker
        error = self.source_errors.get(result.spec.source)
        context = JobContext(inventory=self.inventory, settings=self.settings,
                             hooks_for=self._hooks, on_update=self._notify)
        await run_job(session, result, self.packages.get(result.spec.source), context,
                      refusal=(error, "package") if error is not None else None)

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


__all__ = [
    "BatchRunner",
    "JobResult",
    "JobStatus",
    "NameConflict",
    "OnConflict",
    "RunSettings",
    "check_job",
    "check_ramp",
    "import_options",
    "parse_ramp",
    "totals",
]
