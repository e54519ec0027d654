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
"""

from __future__ import annotations

from typing import Any


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


# --- transport ----------------------------------------------------------------


class TransportError(AsyncOvfError):
    """The connection to vCenter failed: refused, reset, TLS, timeout."""

    def __init__(self, message: str, *, host: str | None = None) -> None:
        self.host = host
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
    "PackageError",
    "PlacementError",
    "PostImportError",
    "PropertyError",
    "ReportFileError",
    "RequestTimeout",
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
    "error_kind",
    "error_text",
    "first_error",
]
