"""What a run tells whoever watches it, and the one place that fans it out.

A run is watched through :class:`Watcher`: the Prometheus metrics
(:mod:`asyncovf.telemetry.metrics`) and the OpenTelemetry traces
(:mod:`asyncovf.telemetry.tracing`) are two. The engine tells a watcher of

* every job: :meth:`Watcher.job` at its start gives a :class:`JobWatch`, told of
  each phase the job enters (``JobState.advance``), each file it uploads, its
  bytes, and how it ended;
* every SOAP call, through the observer :meth:`Watcher.session` gives each
  session's :class:`~asyncovf.vsphere.soap.SoapClient`;
* every change of the concurrency limit.

Nobody watching costs nothing measurable: the engine holds ``None`` instead of
a watcher and tests for it, and no optional package is imported. The base
classes do nothing, so a watcher implements only what it records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Final

from asyncovf.vsphere.calls import CallRecord
from asyncovf.vsphere.session import VCenterSession

#: The trace id (32 hex digits) of the job the current task runs, while tracing.
TRACE_ID: Final[ContextVar[str | None]] = ContextVar("asyncovf_trace_id", default=None)

#: The phases a job holds its lease in: from ImportVApp's answer to Complete.
LEASE_PHASES: Final = frozenset({"lease_wait", "upload", "complete"})
#: The phases a job ends in.
TERMINAL_PHASES: Final = frozenset({"imported", "failed", "aborted"})


class JobWatch:
    """One job, as a watcher sees it; this base records nothing."""

    #: The job's trace id, when traced: its report row and log lines carry it.
    trace_id: str | None = None

    def phase(self, old: str, new: str, *, error: str | None, fault: str | None) -> None:
        """The job left phase ``old`` for ``new``; ``error`` and ``fault`` (its type)
        are set once the job has failed."""

    def bytes(self, count: int) -> None:
        """``count`` more bytes reached vCenter (or were pulled by its hosts)."""

    def file(self, path: str) -> AbstractContextManager[None]:
        """Around the upload of one of the package's files."""
        return nullcontext()

    def end(self, status: str, *, error: str | None, error_kind: str | None,
            attempts: int) -> None:
        """The job ended: ``imported``, ``skipped``, ``failed`` or ``aborted``."""

    def part(self) -> JobWatch:
        """A watch for an import this job makes on the side (its group's seed VM, for
        ``strategy: clone``): its bytes and files are this job's; its phases, the
        seed's own, are not (the job is in its ``seed`` phase meanwhile)."""
        return _Part(self)


class _Part(JobWatch):
    def __init__(self, whole: JobWatch) -> None:
        self._whole = whole
        self.trace_id = whole.trace_id

    def bytes(self, count: int) -> None:
        self._whole.bytes(count)

    def file(self, path: str) -> AbstractContextManager[None]:
        return self._whole.file(path)


class Watcher:
    """A run's watcher; this base records nothing."""

    def job(self, name: str) -> JobWatch:
        """A job named ``name`` starts, in the task that runs it."""
        return JobWatch()

    def session(self) -> Callable[[CallRecord], None] | None:
        """The observer of a new session's SOAP calls, or None."""
        return None

    def limit(self, workers: int) -> None:
        """The run's concurrency limit is now ``workers``."""

    def close(self) -> None:
        """The run is over: flush what is buffered (bounded; never raises)."""


class _JobWatches(JobWatch):
    def __init__(self, watches: Sequence[JobWatch]) -> None:
        self._watches = watches
        self.trace_id = next((w.trace_id for w in watches if w.trace_id), None)

    def phase(self, old: str, new: str, *, error: str | None, fault: str | None) -> None:
        for watch in self._watches:
            watch.phase(old, new, error=error, fault=fault)

    def bytes(self, count: int) -> None:
        for watch in self._watches:
            watch.bytes(count)

    @contextmanager
    def file(self, path: str) -> Iterator[None]:
        with ExitStack() as stack:
            for watch in self._watches:
                stack.enter_context(watch.file(path))
            yield

    def end(self, status: str, *, error: str | None, error_kind: str | None,
            attempts: int) -> None:
        for watch in self._watches:
            watch.end(status, error=error, error_kind=error_kind, attempts=attempts)


class Watchers(Watcher):
    """Several watchers as one (metrics and traces both on)."""

    def __init__(self, watchers: Sequence[Watcher]) -> None:
        self.watchers = tuple(watchers)

    def job(self, name: str) -> JobWatch:
        return _JobWatches([watcher.job(name) for watcher in self.watchers])

    def session(self) -> Callable[[CallRecord], None] | None:
        observers = [o for o in (w.session() for w in self.watchers) if o is not None]
        if len(observers) <= 1:
            return observers[0] if observers else None

        def observe(call: CallRecord) -> None:
            for observer in observers:
                observer(call)
        return observe

    def limit(self, workers: int) -> None:
        for watcher in self.watchers:
            watcher.limit(workers)

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.close()


def watched(session: VCenterSession, watcher: Watcher | None) -> VCenterSession:
    """``session``, its calls told to ``watcher`` (if anyone watches)."""
    observe = watcher.session() if watcher is not None else None
    if observe is not None:
        session.client.observers.append(observe)
    return session


def combined(watchers: Sequence[Watcher | None]) -> Watcher | None:
    """None when nobody watches, the one watcher, or :class:`Watchers` of them."""
    present = [watcher for watcher in watchers if watcher is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return Watchers(present)


class TraceIdFilter(logging.Filter):
    """Gives each log record ``trace_suffix``: `` (trace <id>)`` when logged by a
    traced job's task, else empty; a log line then joins its trace and report row."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = TRACE_ID.get()
        record.trace_suffix = f" (trace {trace_id})" if trace_id else ""
        return True


__all__ = ["LEASE_PHASES", "TERMINAL_PHASES", "TRACE_ID", "JobWatch", "TraceIdFilter",
           "Watcher", "Watchers", "combined", "watched"]
