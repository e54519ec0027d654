"""OpenTelemetry traces of a run: a span per job, per phase, per file, per SOAP call.

Each job is one trace: its span holds a span per phase it entered (``spec``,
``import``, ``lease_wait``, ``upload``, ``complete``, each post-import step,
``abort``), over every attempt; an upload holds a span per file; a SOAP call
made for the job is a child of the phase (or file) it was made in. A call made
for no job (Login, a worker's mark check) is a trace of its own.

A failed phase carries the job's error (status ERROR, ``error.type`` its fault).
The phase a job failed in is the one it left for ``abort`` or ``failed``; the
error is known only when the job ends, so that span is ended then, at the
moment the job left it.

Exported as the standard ``OTEL_*`` variables say, and only when asked
(:func:`tracing_from_environment`); an optional extra (``asyncovf[tracing]``).
Attributes hold method, phase and fault names, the VM's name and a package's
file names; never a URL, a header, a credential or a SOAP body. The job's trace
id goes into its report row and its log lines
(:class:`~asyncovf.telemetry.watch.TraceIdFilter`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from asyncovf.printable import printable
from asyncovf.telemetry.environment import traces_exporter
from asyncovf.telemetry.watch import TERMINAL_PHASES, TRACE_ID, JobWatch, Watcher
from asyncovf.version import __version__
from asyncovf.vsphere.calls import CallRecord

#: The job the current task works for: a SOAP call's span goes under its phase.
_JOB: Final[ContextVar[_JobTrace | None]] = ContextVar("asyncovf_job", default=None)
#: The file the current task uploads: a span under the job's phase.
_FILE: Final[ContextVar[Span | None]] = ContextVar("asyncovf_file", default=None)
#: Spans flushed at the end of a run, at most this long (an exporter may be gone).
FLUSH_MILLIS: Final = 5000
#: The variables that set the OTLP exporter's own timeout.
OTLP_TIMEOUTS: Final = ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")


class Tracing(Watcher):
    """Spans for a run's jobs and calls, handed to ``processor`` (a batching one by default)."""

    def __init__(self, processor: SpanProcessor, *, resource: Resource | None = None) -> None:
        self.provider = TracerProvider(resource=resource or Resource.create(
            {"service.name": "asyncovf", "service.version": __version__}))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("asyncovf", __version__)

    def job(self, name: str) -> JobWatch:
        return _JobTrace(self.tracer, name)

    def session(self) -> Callable[[CallRecord], None]:
        tracer = self.tracer

        def observe(call: CallRecord) -> None:
            end = time.time_ns()
            job = _JOB.get()
            parent = _FILE.get() or (job.current if job is not None else None)
            context = trace.set_span_in_context(parent) if parent is not None else None
            span = tracer.start_span(call.method, context=context, kind=SpanKind.CLIENT,
                                     start_time=end - int(call.seconds * 1e9),
                                     attributes={"rpc.system": "vsphere_soap",
                                                 "rpc.method": call.method})
            if call.fault is not None:
                span.set_attribute("error.type", call.fault)
                span.set_status(Status(StatusCode.ERROR, call.fault))
            span.end(end_time=end)
        return observe

    def close(self) -> None:
        self.provider.force_flush(FLUSH_MILLIS)
        self.provider.shutdown()


class _JobTrace(JobWatch):
    """One job's spans. Made in the task that runs the job: SOAP calls of that task
    (and of the tasks it starts) find it through :data:`_JOB`."""

    def __init__(self, tracer: trace.Tracer, name: str) -> None:
        self._tracer = tracer
        self._span = tracer.start_span("job", attributes={"asyncovf.vm": printable(name)})
        self._context = trace.set_span_in_context(self._span)
        self.trace_id = format(self._span.get_span_context().trace_id, "032x")
        self._phase: Span | None = None
        self._attempt = 0
        #: The phase the job failed in, ended when its error is known: (span, when).
        self._failed_in: tuple[Span, int] | None = None
        self._tokens = (_JOB.set(self), TRACE_ID.set(self.trace_id))

    @property
    def current(self) -> Span:
        """The phase the job is in, or the job's own span between phases."""
        return self._phase or self._span

    def phase(self, old: str, new: str, *, error: str | None, fault: str | None) -> None:
        now = time.time_ns()
        if old == "pending":
            self._attempt += 1
        left = self._phase
        if left is not None:
            if new in ("abort", "failed", "aborted") and old != "abort":
                self._failed_in = (left, now)
            else:
                left.end(end_time=now)
        self._phase = None
        if error is not None or new in TERMINAL_PHASES:
            self._end_failed_phase(error, fault)
        if new not in TERMINAL_PHASES:
            self._phase = self._tracer.start_span(
                new, context=self._context, start_time=now,
                attributes={"asyncovf.phase": new, "asyncovf.attempt": self._attempt})

    def _end_failed_phase(self, error: str | None, fault: str | None) -> None:
        if self._failed_in is None or error is None:
            return
        span, when = self._failed_in
        self._failed_in = None
        _failed(span, error, fault)
        span.end(end_time=when)

    @contextmanager
    def file(self, path: str) -> Iterator[None]:
        span = self._tracer.start_span("file", context=trace.set_span_in_context(self.current),
                                       attributes={"asyncovf.file": printable(path)})
        token = _FILE.set(span)
        try:
            yield
        except BaseException as exc:
            _failed(span, str(exc) or type(exc).__name__, type(exc).__name__)
            raise
        finally:
            _FILE.reset(token)
            span.end()

    def end(self, status: str, *, error: str | None, error_kind: str | None,
            attempts: int) -> None:
        if not self._span.is_recording():
            return
        now = time.time_ns()
        self._end_failed_phase(error or status, error_kind)
        if self._phase is not None:
            self._phase.end(end_time=now)
            self._phase = None
        self._span.set_attribute("asyncovf.status", status)
        self._span.set_attribute("asyncovf.attempts", attempts)
        if status in ("failed", "aborted"):
            _failed(self._span, error or status, error_kind)
        self._span.end(end_time=now)
        job_token, trace_token = self._tokens
        # Ended from another task (never, in the engine): that context is not ours to reset.
        with suppress(ValueError):
            _JOB.reset(job_token)
            TRACE_ID.reset(trace_token)


def _failed(span: Span, error: str, fault: str | None) -> None:
    span.set_status(Status(StatusCode.ERROR, printable(error)))
    if fault:
        span.set_attribute("error.type", fault)


def tracing_from_environment(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """A :class:`Tracing` exporting as ``OTEL_*`` asks, or None when nothing is asked
    (:func:`~asyncovf.telemetry.environment.traces_exporter`).

    The OTLP exporter (HTTP and protobuf) reads its endpoint, headers, timeout
    and TLS settings from the standard variables itself.
    """
    env = os.environ if environ is None else environ
    wanted = traces_exporter(env)
    if wanted is None:
        return None
    exporter: SpanExporter
    if wanted == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The SDK's default is 10 s per export, retries included: at the end of a
        # run with the collector gone, that is what the command waits. Ours is the
        # flush bound, unless the environment says otherwise.
        timeout = None if any(key in env for key in OTLP_TIMEOUTS) else FLUSH_MILLIS / 1000
        exporter = OTLPSpanExporter(timeout=timeout)
    attributes = {"service.name": env.get("OTEL_SERVICE_NAME") or "asyncovf",
                  "service.version": __version__}
    return Tracing(BatchSpanProcessor(exporter), resource=Resource.create(attributes))


__all__ = ["FLUSH_MILLIS", "OTLP_TIMEOUTS", "Tracing", "tracing_from_environment"]
