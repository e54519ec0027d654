"""The lease guard: an HttpNfcLease owned by one async context manager.

vSphere reference, HttpNfcLease: a lease starts ``initializing``, becomes
``ready`` (device URLs are valid) or ``error``; it times out unless the client
reports progress within ``info.leaseTimeout`` seconds; it ends with
HttpNfcLeaseComplete or HttpNfcLeaseAbort.

The guard's contract:

* ``__aenter__`` waits for ``ready`` (bounded) and raises :class:`LeaseError`
  with the server's fault on ``error``.
* While the body runs, a keep-alive task sends HttpNfcLeaseProgress with the
  real percentage at an interval well inside the lease timeout. A failed
  progress call is retried on the next tick — it never silently ends the
  keep-alive. If the lease itself goes to ``error``, the body is cancelled and
  the lease's fault is raised.
* On success: HttpNfcLeaseComplete.
* On any exception *or cancellation*: HttpNfcLeaseAbort inside a shielded,
  time-bounded scope, then removal of the half-imported VM if one is left
  (vCenter deletes it on abort; vcsim does not). Cleanup failures are logged and
  recorded in :attr:`cleanup_errors`, never raised over the original error.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup
from pyVmomi import vim, vmodl

from asyncovf.errors import LeaseError, ManagedObjectNotFoundError, VCenterError
from asyncovf.vsphere.cleanup import CLEANUP_TIMEOUT, bounded_cleanup
from asyncovf.vsphere.removal import remove_vm_bounded
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.soap import describe_fault

log = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT: Final = 300.0


class LeaseOutcome(enum.Enum):
    OPEN = "open"
    COMPLETED = "completed"
    ABORTED = "aborted"


def progress_interval(lease_timeout: float | None) -> float:
    """How often to report progress: a fifth of the lease timeout, within [0.1 s, 30 s].

    A fifth leaves room for four failed reports in a row before the lease expires.
    """
    if not lease_timeout or lease_timeout <= 0:
        return 30.0
    return min(max(lease_timeout / 5, 0.1), 30.0)


VmFinder = Callable[[], Awaitable[Any]]


class LeaseGuard:
    """Own one HttpNfcLease from ``ready`` to Complete or Abort; see module docstring."""

    def __init__(
        self,
        session: VCenterSession,
        lease: Any,
        *,
        vm_name: str,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        cleanup_timeout: float = CLEANUP_TIMEOUT,
        keep_failed: bool = False,
        find_vm: VmFinder | None = None,
    ) -> None:
        self.session = session
        self.lease = lease
        self.vm_name = vm_name
        self.ready_timeout = ready_timeout
        self.cleanup_timeout = cleanup_timeout
        self.keep_failed = keep_failed
        self._find_vm = find_vm
        self.info: Any = None
        self.outcome = LeaseOutcome.OPEN
        self.total_bytes = 0
        self.done_bytes = 0
        self.progress_reports = 0
        self.progress_failures = 0
        self.cleanup_errors: list[str] = []
        self.vm_removed = False
        self.cleanup_seconds = 0.0
        self._failure: LeaseError | None = None
        self._task_group: TaskGroup | None = None
        self._body_scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<LeaseGuard {self.lease._moId} {self.vm_name!r} {self.outcome.value}>"

    # -- progress accounting (called by the uploader) ------------------------------------

    def add_bytes(self, count: int) -> None:
        self.done_bytes += count

    @property
    def percent(self) -> int:
        """Real progress, 0–99 while uploading; 100 is implied by Complete."""
        if self.total_bytes <= 0:
            return 0
        return min(99, self.done_bytes * 100 // self.total_bytes)

    @property
    def entity(self) -> Any:
        """The VM the lease is importing, once known."""
        return getattr(self.info, "entity", None) if self.info is not None else None

    # -- context manager ---------------------------------------------------------------

    async def __aenter__(self) -> LeaseGuard:
        try:
            self.info = await self.wait_until_ready()
        except BaseException as exc:
            await self._abort_and_clean(exc)
            raise
        interval = progress_interval(getattr(self.info, "leaseTimeout", None))
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._keep_alive, interval, name=f"keepalive {self.vm_name}")
        self._body_scope = anyio.CancelScope()
        self._body_scope.__enter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._body_scope is not None and self._task_group is not None
        # Scopes unwind in the order they were entered: the body's scope first
        # (it swallows only the cancellation the keep-alive caused when it found
        # the lease in error), then the keep-alive's task group.
        if self._body_scope.__exit__(exc_type, exc, tb):
            exc = None
        stop_error: BaseException | None = None
        self._task_group.cancel_scope.cancel()
        try:
            await self._task_group.__aexit__(None, None, None)
        except BaseException as error:  # an outer cancellation arrived meanwhile
            stop_error = error

        failure = exc or stop_error or self._failure
        if failure is None:
            try:
                await self._complete()
            except BaseException as complete_error:  # a failed or cancelled Complete: abort
                await self._abort_and_clean(complete_error)
                raise
            return False
        lease_failure = None
        if exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
            lease_failure = await self._lease_error_behind(exc)
        await self._abort_and_clean(failure)
        if lease_failure is not None:
            raise lease_failure from exc  # the cause the upload error was a symptom of
        if exc is not None:
            return False  # re-raise the body's exception (or cancellation) unchanged
        raise failure

    # -- phases ----------------------------------------------------------------------

    async def wait_until_ready(self) -> Any:
        """Poll the lease until ``ready``; return its info. Raise LeaseError on ``error``."""
        delay = 0.02
        try:
            with anyio.fail_after(self.ready_timeout):
                while True:
                    props = await self.session.retrieve(self.lease, ["state", "error", "info"])
                    state = props["state"]
                    if state == vim.HttpNfcLease.State.ready:
                        return props["info"]
                    if state == vim.HttpNfcLease.State.error:
                        raise self._lease_error("went to error while initializing",
                                                props["error"])
                    if state == vim.HttpNfcLease.State.done:
                        raise LeaseError(f"lease {self.lease._moId} ended before it was ready",
                                         vm=self.vm_name)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        except TimeoutError:
            raise LeaseError(
                f"lease {self.lease._moId} for {self.vm_name!r} not ready after "
                f"{self.ready_timeout:g} s",
                vm=self.vm_name,
            ) from None

    async def _keep_alive(self, interval: float) -> None:
        """Report progress every ``interval`` until cancelled; never give up silently."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.session.invoke(self.lease, "Progress", percent=self.percent)
                self.progress_reports += 1
            except VCenterError as exc:
                self.progress_failures += 1
                log.warning("progress report for %s failed (%s); retrying", self.vm_name, exc)
                if await self._lease_failed():
                    return
            except Exception as exc:  # transport trouble: keep trying until the body ends
                self.progress_failures += 1
                log.warning("progress report for %s failed (%s); retrying", self.vm_name, exc)

    async def _lease_error_behind(self, error: BaseException) -> LeaseError | None:
        """If the lease itself is in ``error``, the LeaseError that explains ``error``.

        An upload fails with a bare HTTP 500 when its lease goes to error (ESXi
        drops the transfer); the lease's fault says why. Looked up within the
        cleanup bound; any trouble looking just keeps the original error.
        """
        props: dict[str, object] = {}
        with bounded_cleanup(f"reading the state of lease {self.lease._moId}",
                             timeout=self.cleanup_timeout):
            props = await self.session.retrieve(self.lease, ["state", "error"])
        if props.get("state") == vim.HttpNfcLease.State.error:
            return self._lease_error(f"went to error ({error})", props["error"])
        return None

    async def _lease_failed(self) -> bool:
        """If the lease is in ``error``, record its fault and cancel the body."""
        try:
            props = await self.session.retrieve(self.lease, ["state", "error"])
        except Exception:  # cannot tell; the next tick tries again
            return False
        if props["state"] != vim.HttpNfcLease.State.error:
            return False
        self._failure = self._lease_error("went to error during upload", props["error"])
        if self._body_scope is not None:
            self._body_scope.cancel()
        return True

    def _lease_error(self, what: str, fault: Any) -> LeaseError:
        # The lease's ``error`` is a LocalizedMethodFault; pyVmomi hands us the
        # fault inside it (message in ``msg``), but accept the wrapper too.
        inner = fault.fault if isinstance(fault, vmodl.LocalizedMethodFault) else fault
        detail = describe_fault(fault) if fault is not None else "no fault given"
        if isinstance(fault, vmodl.MethodFault):
            detail = f"{type(fault).__name__.rsplit('.', 1)[-1]}: {detail}"
        return LeaseError(f"lease for {self.vm_name!r} {what}: {detail}", fault=inner,
                          vm=self.vm_name, method="HttpNfcLease")

    async def _complete(self) -> None:
        await self.session.invoke(self.lease, "Complete")
        self.outcome = LeaseOutcome.COMPLETED

    async def _abort_and_clean(self, cause: BaseException) -> None:
        """Abort the lease and remove a half-imported VM; never raise, never block long."""
        started = anyio.current_time()
        try:
            await self._abort_then_remove_vm(cause)
        finally:
            self.cleanup_seconds = anyio.current_time() - started

    async def _abort_then_remove_vm(self, cause: BaseException) -> None:
        with bounded_cleanup(f"abort of lease {self.lease._moId}", self.cleanup_errors,
                             timeout=self.cleanup_timeout):
            fault = cause.fault if isinstance(cause, VCenterError) else None
            if fault is not None and not isinstance(fault, Exception):
                fault = None
            try:
                await self.session.invoke(self.lease, "Abort", fault=fault)
            except ManagedObjectNotFoundError:
                # The lease is gone already: vCenter ended it (its session expired,
                # or it timed out). Nothing is left to abort.
                log.info("lease %s was already gone", self.lease._moId)
            self.outcome = LeaseOutcome.ABORTED
        if self.keep_failed:
            return
        what = f"removing half-imported VM {self.vm_name!r}"
        vm = self.entity
        if vm is None and self._find_vm is not None:
            # The lease never named its VM (aborted while initializing): look it up.
            with bounded_cleanup(f"looking for half-imported VM {self.vm_name!r}",
                                 self.cleanup_errors, timeout=self.cleanup_timeout):
                vm = await self._find_vm()
        if vm is None:
            return
        # vCenter removes an aborted import's VM itself (vcsim does not): a VM
        # already gone is what we wanted.
        if await remove_vm_bounded(self.session, vm, self.cleanup_errors, what=what,
                                   within=self.cleanup_timeout):
            self.vm_removed = True


__all__ = ["CLEANUP_TIMEOUT", "LeaseGuard", "LeaseOutcome", "progress_interval"]
