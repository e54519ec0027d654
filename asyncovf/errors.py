"""One exception hierarchy for everything asyncovf raises.

Families, so callers can decide what to do without string matching:

* :class:`InputError` — our side: a bad package, batch file, option or placement.
  Raised before anything is created on vCenter; the CLI exits 2.
* :class:`VCenterError` — vCenter's side: a SOAP fault (carrying the pyVmomi
  fault object and its type name), a lease in ``error``, a failed task.
* :class:`TransportError` — the network between us and vCenter: connection
  refused, TLS verification, timeouts.
* :class:`PostImportError` — a step after the import (power-on, wait for IP,
  reconfigure…) failed; the VM was removed.
* :class:`TransferError` — a file upload to an NFC device URL, or a read of a
  package from a web server (:class:`SourceError`).

Errors carry the VM, file and host they concern so one line on stderr is enough
to act on. Third-party exceptions (aiohttp, pyVmomi, lxml) are translated at the
boundary where they happen and chained with ``from``.

What a retry may cure is decided here too, in one table (:func:`retry_scopes`):
for an error, the levels (:class:`RetryScope`) at which doing it again may
succeed. Every place that retries asks :func:`retryable` at its own level.
"""

from __future__ import annotations

import enum
from typing import Any, Final


class AsyncOvfError(Exception):
    """Root of every error asyncovf raises on purpose."""


# --- our side ---------------------------------------------------------------


class InputError(AsyncOvfError):
    """Input rejected before anything was created on vCenter."""


class UsageError(InputError):
    """A command-line option or environment variable is wrong or missing."""


class BatchError(InputError):
    """A batch file problem, located: ``file:line: field: message``.

    The whole file is checked before anything is imported, so an operator
    fixes every entry at the place the message names, not one VM at a time.
    """

    def __init__(self, file: str, line: int | None, where: str, message: str) -> None:
        self.file, self.line, self.where = file, line, where
        location = f"{file}:{line}" if line else file
        super().__init__(f"{location}: {where}: {message}" if where else f"{location}: {message}")


class PackageError(InputError):
    """An OVF/OVA package is broken or hostile; names the file concerned."""

    def __init__(self, message: str, *, file: str | None = None) -> None:
        self.file = file
        super().__init__(f"{file}: {message}" if file else message)


class ManifestError(PackageError):
    """A manifest is malformed, or a digest does not match what was streamed."""


class PlacementError(InputError):
    """An inventory path (datacenter, pool, host, datastore, folder) does not resolve."""


class PropertyError(InputError):
    """A vApp property value the descriptor does not allow (key, type or qualifier).

    Checked for every job before anything is imported, because vCenter checks
    only at CreateImportSpec time, one VM at a time, without always naming the
    property (:mod:`asyncovf.ovf.properties`).
    """


class ReportFileError(InputError):
    """The file given to ``asyncovf report`` is not a readable run report.

    Its own class so the report command says what is wrong with the file
    (missing, not JSON, another version) rather than failing on a key deep in
    the analysis (:mod:`asyncovf.loadreport.analysis`).
    """


class ChartsUnavailable(InputError):
    """A chart was asked for but matplotlib (the ``report`` extra) is not installed.

    Input, not a crash: the user asked for something this installation cannot
    do, and the message says what to install (:mod:`asyncovf.loadreport.charts`).
    """


class NameConflict(InputError):
    """A VM of that name already exists where the import would put it."""

    def __init__(self, message: str, *, vm: str | None = None) -> None:
        self.vm = vm
        super().__init__(message)


# --- vCenter's side -----------------------------------------------------------


class VCenterError(AsyncOvfError):
    """vCenter answered with a fault or a failed task.

    ``fault`` is the pyVmomi ``vmodl.MethodFault`` when there is one, and
    ``fault_type`` its short type name (``NotAuthenticated``, ``DuplicateName``…)
    so callers can branch without importing pyVmomi.
    """

    def __init__(
        self,
        message: str,
        *,
        fault: Any = None,
        method: str | None = None,
        vm: str | None = None,
    ) -> None:
        self.fault = fault
        self.fault_type = type(fault).__name__.rsplit(".", 1)[-1] if fault is not None else None
        self.method = method
        self.vm = vm
        super().__init__(message)


class NotAuthenticatedError(VCenterError):
    """The session is not (or no longer) logged in."""


class InvalidLoginError(VCenterError):
    """vCenter rejected the user name or password."""


class ManagedObjectNotFoundError(VCenterError):
    """A managed object reference is stale: the object is gone."""


class ImportSpecRejected(VCenterError, InputError):
    """CreateImportSpec returned errors: vCenter refuses this package or these options.

    It is both a vCenter answer and an input rejection: nothing was created yet.
    """


class LeaseError(VCenterError):
    """An HttpNfcLease went to ``error``, timed out, or could not be completed."""


class TaskError(VCenterError):
    """A vCenter task ended in ``error``."""


class PostImportError(AsyncOvfError):
    """A step after the import (extra config, OVF environment, hardware upgrade,
    template, power-on, waiting for the IP) failed; the VM was removed unless
    ``--keep-failed``. ``step`` is the step's phase name; the cause is chained.
    """

    def __init__(self, message: str, *, step: str, vm: str | None = None) -> None:
        self.step = step
        self.vm = vm
        super().__init__(message)


class WaitForIPTimeout(PostImportError):
    """The guest reported no IP address in time. Permanent: a re-import would not help."""


class SeedError(AsyncOvfError):
    """The seed VM of a clone group (``strategy: clone``) could not be made.

    Every VM of the group fails with it, each with this one line. Permanent for
    them: the seed had its own attempts. ``seed`` names it; the cause is chained.
    """

    def __init__(self, message: str, *, seed: str) -> None:
        self.seed = seed
        super().__init__(message)


# --- transport ----------------------------------------------------------------


class TransportError(AsyncOvfError):
    """The connection to vCenter failed: refused, reset, TLS, timeout.

    ``status`` is set when an HTTP answer came that is not SOAP's (200 or 500):
    what stands in front of vCenter refused the call, e.g. 503 when vCenter is
    overloaded or at its session limit.
    """

    def __init__(self, message: str, *, host: str | None = None,
                 status: int | None = None) -> None:
        self.host = host
        self.status = status
        super().__init__(message)


class TLSVerificationError(TransportError):
    """The server's certificate could not be verified."""


class RequestTimeout(TransportError):
    """A SOAP call did not answer in time."""


class TransferError(AsyncOvfError):
    """A file upload to an NFC device URL failed."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        url: str | None = None,
        status: int | None = None,
    ) -> None:
        self.file = file
        self.url = url
        self.status = status
        super().__init__(message)


class TransferTimeout(TransferError):
    """An upload made no progress in time."""


class SourceError(TransferError):
    """Reading a package from a web server failed mid-transfer.

    A transfer error (not an :class:`InputError`) because it is the network's
    fault, not the package's: connection trouble and 5xx are retried like an
    upload failure, from a reopened source. A 4xx is not retried.
    """


class UntrustedTarget(TransferError):
    """An NFC target failed a security check (foreign host, certificate mismatch).

    Never retried: repeating the request would send the same data to the same place.
    """


# --- bugs ---------------------------------------------------------------------


class IllegalTransition(RuntimeError):
    """A job was moved to a phase its current phase may not lead to.

    A bug in the orchestration, not a failure of vCenter or of the input — hence
    a ``RuntimeError`` and not an :class:`AsyncOvfError`: raised by
    :meth:`~asyncovf.engine.phases.JobState.advance` so that the bug shows up
    as an error rather than as a report that lies.
    """


# --- signals ------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGINT or SIGTERM stopping a command that runs without an event loop (``report``).

    Not a plain KeyboardInterrupt: CPython (3.11) ends the process by SIGINT at
    exit, even after the interrupt was caught and 130 returned, when a plain
    KeyboardInterrupt came through ``eval()`` or ``exec()`` of a string.
    """


# --- what a retry may cure -----------------------------------------------------


class RetryScope(enum.Enum):
    """How much is done again when an error is retried, from the least to the most."""

    #: Send the SOAP call again (the session sends again only a method that is
    #: safe to repeat: ``IDEMPOTENT_METHODS``), or read the property
    #: collector's pages again from the first.
    CALL = "call"
    #: Log in again (the session expired), then send the call once more.
    LOGIN = "login"
    #: Upload the file again from the start, from a reopened source.
    UPLOAD = "upload"
    #: Refresh the inventory snapshot, then run the attempt again without
    #: spending a job retry: an object it named is gone (deleted or
    #: re-created since), and nothing reached vCenter yet.
    INVENTORY = "inventory"
    #: Run the whole import again: a job retry (``job_retries``).
    JOB = "job"


#: vCenter faults that retrying cannot fix.
PERMANENT_FAULTS: Final = frozenset({
    "DuplicateName", "FileAlreadyExists", "InvalidName", "InvalidDatastorePath", "NoPermission",
    "NotSupported", "InvalidArgument", "OvfImport",
})

_NEVER: Final[frozenset[RetryScope]] = frozenset()
_JOB: Final = frozenset({RetryScope.JOB})


def retry_scopes(error: BaseException) -> frozenset[RetryScope]:
    """The one table of what is retryable: the levels at which a retry may cure ``error``.

    ============================================  ====  =====  ======  =========  ===
    error (the first row that matches)            CALL  LOGIN  UPLOAD  INVENTORY  JOB
    ============================================  ====  =====  ======  =========  ===
    not an ``Exception``: cancellation, Ctrl-C    -     -      -       -          -
    :class:`InputError`: package, name conflict   -     -      -       -          -
    :class:`WaitForIPTimeout`                     -     -      -       -          -
    :class:`SeedError`: a clone group's seed      -     -      -       -          -
    :class:`PostImportError`                      -     -      -       -          (1)
    :class:`UntrustedTarget`                      -     -      -       -          -
    :class:`TransferTimeout`: a stalled upload    -     -      yes     -          (2)
    :class:`TransferError`, :class:`SourceError`  -     -      (2)     -          (2)
    :class:`TransportError`: TLS, timeout, reset  yes   -      -       -          yes
    :class:`NotAuthenticatedError`                -     yes    -       -          (3)
    :class:`ManagedObjectNotFoundError`           -     -      -       yes        (3)
    :class:`VCenterError`: lease, task, fault     -     -      -       -          (3)
    anything else, an exception group too         -     -      -       -          yes
    ============================================  ====  =====  ======  =========  ===

    (1) What its cause gets at JOB (a step's fault is as permanent as it is
    alone); yes when it has none. (2) Not when refused, a status below 500:
    vCenter or the web server turned the request itself down, and repeating it
    changes nothing. (3) Not for a fault in :data:`PERMANENT_FAULTS`.
    """
    if not isinstance(error, Exception):
        return _NEVER  # a cancellation or an interrupt: stop, never try again
    if isinstance(error, InputError):
        return _NEVER  # bad package, placement, options, name conflict, spec rejected
    if isinstance(error, WaitForIPTimeout):
        return _NEVER  # the guest did not report an address: a new import would not either
    if isinstance(error, SeedError):
        return _NEVER  # the seed had its attempts; its group's VMs share its failure
    if isinstance(error, PostImportError):
        # A step's fault is as permanent as it is alone; only a new import redoes a step.
        cause = error.__cause__
        return _JOB if cause is None else retry_scopes(cause) & _JOB
    if isinstance(error, UntrustedTarget):
        return _NEVER  # a security refusal: the same request would go to the same place
    if isinstance(error, TransferError):
        refused = error.status is not None and error.status < 500
        upload = not refused or isinstance(error, TransferTimeout)
        return frozenset({RetryScope.UPLOAD} if upload else ()) | (_NEVER if refused else _JOB)
    if isinstance(error, TransportError):
        # The answer was lost, not refused: send again (if safe), or redo the job.
        return frozenset({RetryScope.CALL, RetryScope.JOB})
    if isinstance(error, VCenterError):
        login = frozenset({RetryScope.LOGIN} if isinstance(error, NotAuthenticatedError) else ())
        stale = frozenset({RetryScope.INVENTORY}
                          if isinstance(error, ManagedObjectNotFoundError) else ())
        return login | stale | (_NEVER if error.fault_type in PERMANENT_FAULTS else _JOB)
    return _JOB


def retryable(error: BaseException, scope: RetryScope) -> bool:
    """May retrying at ``scope`` cure ``error``? Every retry in asyncovf asks this."""
    return scope in retry_scopes(error)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a task group: the first raised that is not a cancellation.

    The others are echoes (siblings cancelled because of it, a sender noticing
    its data stopped); raising the first keeps one clear message per failure.
    """
    import anyio

    cancelled = anyio.get_cancelled_exc_class()
    leaves = _leaves(group)
    return next((e for e in leaves if not isinstance(e, cancelled)), leaves[0])


def error_kind(error: BaseException) -> str:
    """A short, stable category for ``error``: what a load tester counts and charts.

    vCenter's faults are counted by their own name (``InvalidState``,
    ``TaskInProgress``…) — that is what tells a platform team which part of
    vCenter pushed back — prefixed ``lease:`` when a lease ended in one; our
    own failures by the layer that failed (``manifest``, ``source``, ``upload``,
    ``connection``, ``timeout``, ``input``).
    """
    if isinstance(error, BaseExceptionGroup):
        error = first_error(error)
    if isinstance(error, WaitForIPTimeout):
        return f"{error.step}: timeout"
    if isinstance(error, SeedError):
        cause = error.__cause__
        return f"seed: {error_kind(cause)}" if cause is not None else "seed"
    if isinstance(error, PostImportError):
        cause = error.__cause__
        return f"{error.step}: {error_kind(cause)}" if cause is not None else error.step
    if isinstance(error, LeaseError):
        return f"lease: {error.fault_type}" if error.fault_type else "lease"
    if isinstance(error, VCenterError):
        return error.fault_type or "vCenter"
    if isinstance(error, ManifestError):
        return "manifest"
    if isinstance(error, InputError):
        return "input"
    if isinstance(error, SourceError):
        return "source"
    if isinstance(error, UntrustedTarget):
        return "untrusted target"
    if isinstance(error, TransferTimeout):
        return "upload stalled"
    if isinstance(error, TransferError):
        return "upload"
    if isinstance(error, RequestTimeout | TimeoutError):
        return "timeout"
    if isinstance(error, TLSVerificationError):
        return "TLS"
    if isinstance(error, TransportError | OSError):
        return "connection"
    return type(error).__name__


def error_text(error: BaseException) -> str:
    """One line for ``error``: its message (every member's, for a group) or its type."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(error_text(e) for e in error.exceptions)
    return str(error) or type(error).__name__


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


__all__ = [
    "AsyncOvfError",
    "Terminated",
    "ChartsUnavailable",
    "IllegalTransition",
    "ImportSpecRejected",
    "InputError",
    "InvalidLoginError",
    "LeaseError",
    "ManagedObjectNotFoundError",
    "ManifestError",
    "NameConflict",
    "NotAuthenticatedError",
    "PERMANENT_FAULTS",
    "PackageError",
    "PlacementError",
    "PostImportError",
    "PropertyError",
    "ReportFileError",
    "RequestTimeout",
    "RetryScope",
    "SourceError",
    "TLSVerificationError",
    "TaskError",
    "TransferError",
    "TransferTimeout",
    "TransportError",
    "UntrustedTarget",
    "UsageError",
    "VCenterError",
    "WaitForIPTimeout",
    "SeedError",
    "error_kind",
    "error_text",
    "first_error",
    "retry_scopes",
    "retryable",
]
