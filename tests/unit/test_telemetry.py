"""What the metrics and the traces record of a job's phases and calls, without vCenter.

Each test drives a real :class:`JobState` through the transitions the job makes
(through :func:`job_outcome`, as ``import_vm`` ends a job) and reads the
Prometheus registry or the SDK's in-memory exporter.
"""

from __future__ import annotations

import logging
import sys

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pyVmomi import vim

from asyncovf.cli.watching import metrics_address
from asyncovf.engine.job import job_outcome
from asyncovf.engine.phases import JobState, Phase
from asyncovf.errors import UsageError, VCenterError
from asyncovf.telemetry.environment import traces_exporter
from asyncovf.telemetry.metrics import Metrics
from asyncovf.telemetry.tracing import Tracing
from asyncovf.telemetry.watch import TRACE_ID, TraceIdFilter, Watcher, Watchers, combined
from asyncovf.vsphere.calls import CallRecord

LEASE_FAULT = VCenterError("HttpNfcLeaseProgress: the lease is gone",
                           fault=vim.fault.InvalidState())


def imported(state: JobState) -> None:
    for phase in (Phase.SPEC, Phase.IMPORT, Phase.LEASE_WAIT, Phase.UPLOAD, Phase.COMPLETE,
                  Phase.IMPORTED):
        state.advance(phase)


async def failed_in_upload(state: JobState) -> None:
    """As import_vm fails on a lease fault mid-upload: upload → abort → failed."""
    with pytest.raises(VCenterError), job_outcome(state):
        for phase in (Phase.SPEC, Phase.IMPORT, Phase.LEASE_WAIT, Phase.UPLOAD):
            state.advance(phase)
        try:
            raise LEASE_FAULT
        except VCenterError:
            state.advance(Phase.ABORT)
            raise


def value(metrics: Metrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    assert sample is not None, f"no sample {name}{labels}"
    return sample


# -- metrics ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_metrics_count_jobs_by_how_they_ended_and_leases_only_while_held() -> None:
    metrics = Metrics()
    first, second = metrics.job("a"), metrics.job("b")
    assert value(metrics, "asyncovf_imports_in_flight") == 2
    state = JobState(name="a", watch=first)
    for phase in (Phase.SPEC, Phase.IMPORT, Phase.LEASE_WAIT):
        state.advance(phase)
    assert value(metrics, "asyncovf_leases_open") == 1
    for phase in (Phase.UPLOAD, Phase.COMPLETE, Phase.POWER_ON):
        state.advance(phase)
    assert value(metrics, "asyncovf_leases_open") == 0  # Complete ended it
    state.advance(Phase.IMPORTED)
    first.bytes(1000)
    first.end("imported", error=None, error_kind=None, attempts=1)
    failing = JobState(name="b", watch=second)
    await failed_in_upload(failing)
    second.end("failed", error=failing.error, error_kind="lease", attempts=1)
    second.end("failed", error=failing.error, error_kind="lease", attempts=1)  # told twice

    assert value(metrics, "asyncovf_imports_total", status="imported") == 1
    assert value(metrics, "asyncovf_imports_total", status="failed") == 1
    assert value(metrics, "asyncovf_imports_total", status="skipped") == 0
    assert value(metrics, "asyncovf_imports_in_flight") == 0
    assert value(metrics, "asyncovf_leases_open") == 0
    assert value(metrics, "asyncovf_uploaded_bytes_total") == 1000
    # Every phase left is observed once per job that was in it.
    assert value(metrics, "asyncovf_phase_seconds_count", phase="upload") == 2
    assert value(metrics, "asyncovf_phase_seconds_count", phase="abort") == 1
    assert value(metrics, "asyncovf_phase_seconds_count", phase="power_on") == 1


def test_metrics_count_calls_by_method_and_fault_and_sessions_by_their_login_and_logout() -> None:
    metrics = Metrics()
    one, two = metrics.session(), metrics.session()
    one(CallRecord("Login", 0.0, 0.01, None))
    two(CallRecord("Login", 0.0, 0.01, "HTTP 503"))  # refused: no session
    two(CallRecord("Login", 0.0, 0.01, None))
    two(CallRecord("Login", 0.0, 0.01, None))  # again after expiry: still one session
    one(CallRecord("ImportVApp", 0.0, 0.2, "DuplicateName"))
    assert value(metrics, "asyncovf_sessions_open") == 2
    one(CallRecord("Logout", 0.0, 0.01, "connection"))  # given up, answered or not
    assert value(metrics, "asyncovf_sessions_open") == 1
    assert value(metrics, "asyncovf_soap_calls_total", method="Login", fault="") == 3
    assert value(metrics, "asyncovf_soap_calls_total", method="Login", fault="HTTP 503") == 1
    assert value(metrics, "asyncovf_soap_calls_total", method="ImportVApp",
                 fault="DuplicateName") == 1
    assert value(metrics, "asyncovf_soap_call_seconds_count", method="Login") == 4
    assert value(metrics, "asyncovf_soap_call_seconds_bucket", method="ImportVApp",
                 le="0.25") == 1
    metrics.limit(12)
    assert value(metrics, "asyncovf_concurrency_limit") == 12


# -- traces -------------------------------------------------------------------------------------


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traces(spans: InMemorySpanExporter) -> Tracing:
    """Made off the event loop, as the command makes it: the SDK's resource detection
    waits on threads."""
    return Tracing(SimpleSpanProcessor(spans))


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


@pytest.mark.anyio
async def test_a_job_is_one_trace_its_phases_under_it_and_its_calls_under_their_phase(
        spans: InMemorySpanExporter, traces: Tracing) -> None:
    observe = traces.session()
    observe(CallRecord("Login", 0.0, 0.01, None))  # for no job: a trace of its own
    watch = traces.job("web-01")
    state = JobState(name="web-01", watch=watch)
    state.advance(Phase.SPEC)
    state.advance(Phase.IMPORT)
    observe(CallRecord("ImportVApp", 0.0, 0.01, None))
    state.advance(Phase.LEASE_WAIT)
    state.advance(Phase.UPLOAD)
    with watch.file("disk1.vmdk"):
        observe(CallRecord("HttpNfcLeaseProgress", 0.0, 0.01, None))
    state.advance(Phase.COMPLETE)
    state.advance(Phase.IMPORTED)
    watch.end("imported", error=None, error_kind=None, attempts=1)
    traces.close()

    finished = spans.get_finished_spans()
    (job,) = by_name(finished, "job")
    assert watch.trace_id == format(job.context.trace_id, "032x")
    assert job.attributes is not None and job.attributes["asyncovf.vm"] == "web-01"
    phases = [s for s in finished if s.parent is not None and s.parent.span_id ==
              job.context.span_id]
    assert [s.name for s in sorted(phases, key=lambda s: s.start_time or 0)] == [
        "spec", "import", "lease_wait", "upload", "complete"]
    (import_phase,) = by_name(finished, "import")
    (call,) = by_name(finished, "ImportVApp")
    assert call.parent is not None and call.parent.span_id == import_phase.context.span_id
    (file,) = by_name(finished, "file")
    (upload,) = by_name(finished, "upload")
    assert file.parent is not None and file.parent.span_id == upload.context.span_id
    (progress,) = by_name(finished, "HttpNfcLeaseProgress")
    assert progress.parent is not None and progress.parent.span_id == file.context.span_id
    (login,) = by_name(finished, "Login")
    assert login.parent is None and login.context.trace_id != job.context.trace_id
    assert all(s.status.status_code is not StatusCode.ERROR for s in finished)


@pytest.mark.anyio
async def test_the_phase_a_job_failed_in_carries_its_fault_and_so_does_the_job(
        spans: InMemorySpanExporter, traces: Tracing) -> None:
    watch = traces.job("web-02")
    state = JobState(name="web-02", watch=watch)
    await failed_in_upload(state)
    watch.end("failed", error=state.error, error_kind="lease: InvalidState", attempts=1)
    traces.close()

    finished = spans.get_finished_spans()
    (upload,) = by_name(finished, "upload")
    assert upload.status.status_code is StatusCode.ERROR
    assert upload.status.description == state.error == str(LEASE_FAULT)
    assert upload.attributes is not None and upload.attributes["error.type"] == "InvalidState"
    (abort,) = by_name(finished, "abort")
    assert abort.status.status_code is not StatusCode.ERROR  # the cleanup did not fail
    # The failed phase ends when the job left it, not when the error became known.
    assert upload.end_time is not None and abort.start_time is not None
    assert upload.end_time <= abort.start_time
    (job,) = by_name(finished, "job")
    assert job.status.status_code is StatusCode.ERROR
    assert job.attributes is not None and job.attributes["error.type"] == "lease: InvalidState"
    for name in ("spec", "import", "lease_wait"):
        (span,) = by_name(finished, name)
        assert span.status.status_code is not StatusCode.ERROR


@pytest.mark.anyio
async def test_an_interrupted_job_ends_every_span_it_opened(spans: InMemorySpanExporter,
                                                            traces: Tracing) -> None:
    watch = traces.job("web-03")
    state = JobState(name="web-03", watch=watch)
    state.advance(Phase.SPEC)
    state.advance(Phase.IMPORT)
    watch.end("aborted", error="interrupted", error_kind=None, attempts=1)
    traces.close()
    finished = spans.get_finished_spans()
    assert sorted(s.name for s in finished) == ["import", "job", "spec"]
    (job,) = by_name(finished, "job")
    assert job.status.description == "interrupted"


@pytest.mark.anyio
async def test_the_trace_id_is_the_tasks_while_its_job_runs_and_ends_in_log_lines(
        spans: InMemorySpanExporter, traces: Tracing) -> None:
    record = logging.LogRecord("asyncovf", logging.INFO, __file__, 1, "hello", None, None)
    assert TRACE_ID.get() is None
    watch = traces.job("web-04")
    TraceIdFilter().filter(record)
    assert record.trace_suffix == f" (trace {watch.trace_id})"
    watch.end("imported", error=None, error_kind=None, attempts=1)
    assert TRACE_ID.get() is None
    TraceIdFilter().filter(record)
    assert record.trace_suffix == ""


@pytest.mark.anyio
async def test_secrets_never_become_attributes(spans: InMemorySpanExporter,
                                              traces: Tracing) -> None:
    watch = traces.job("web-05")
    state = JobState(name="web-05", watch=watch)
    state.advance(Phase.SPEC)
    traces.session()(CallRecord("Login", 0.0, 0.01, "InvalidLogin"))
    watch.end("failed", error="InvalidLogin", error_kind="login", attempts=1)
    traces.close()
    keys = {key for span in spans.get_finished_spans() for key in (span.attributes or {})}
    assert keys <= {"asyncovf.vm", "asyncovf.phase", "asyncovf.attempt", "asyncovf.status",
                    "asyncovf.attempts", "asyncovf.file", "rpc.system", "rpc.method",
                    "error.type"}


# -- watchers, environment, options -----------------------------------------------------------


@pytest.mark.anyio
async def test_nobody_watching_is_none_and_two_watchers_both_hear_everything(
        spans: InMemorySpanExporter, traces: Tracing) -> None:
    assert combined([None, None]) is None
    metrics = Metrics()
    assert combined([metrics, None]) is metrics
    both = combined([metrics, traces])
    assert isinstance(both, Watchers)
    watch = both.job("web-06")
    assert watch.trace_id is not None
    state = JobState(name="web-06", watch=watch)
    imported(state)
    with watch.file("disk1.vmdk"):
        watch.bytes(5)
    watch.end("imported", error=None, error_kind=None, attempts=1)
    observe = both.session()
    assert observe is not None
    observe(CallRecord("Login", 0.0, 0.01, None))
    both.limit(3)
    both.close()
    assert value(metrics, "asyncovf_imports_total", status="imported") == 1
    assert value(metrics, "asyncovf_uploaded_bytes_total") == 5
    assert value(metrics, "asyncovf_sessions_open") == 1
    assert {s.name for s in spans.get_finished_spans()} >= {"job", "file", "Login", "upload"}
    assert Watcher().session() is None


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"OTEL_TRACES_EXPORTER": "none"}, None),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "Console"}, "console"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, None),
])
def test_traces_are_exported_only_when_the_environment_asks(environ: dict[str, str],
                                                             expected: str | None) -> None:
    assert traces_exporter(environ) == expected


def test_an_exporter_we_do_not_have_is_a_one_line_usage_error() -> None:
    with pytest.raises(UsageError, match=r"OTEL_TRACES_EXPORTER=zipkin\\x1b: asyncovf exports "
                                         r"traces with one of otlp, console, none$"):
        traces_exporter({"OTEL_TRACES_EXPORTER": "zipkin\x1b"})


@pytest.mark.parametrize(("text", "expected"), [
    ("9464", ("0.0.0.0", 9464)), ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:9464", ("::1", 9464))])
def test_the_metrics_address(text: str, expected: tuple[str, int]) -> None:
    assert metrics_address(text) == expected


@pytest.mark.parametrize("text", ["", "x", "70000", "host:", ":9464"])
def test_a_metrics_address_that_is_not_one(text: str) -> None:
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="expected PORT or ADDRESS:PORT"):
        metrics_address(text)


def test_metrics_without_their_extra_say_which_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncovf.cli import watching
    monkeypatch.setitem(sys.modules, "asyncovf.telemetry.metrics", None)
    with pytest.raises(UsageError, match=r"pip install 'asyncovf\[metrics\]'"):
        watching._open_metrics("127.0.0.1", 0)


@pytest.mark.anyio
async def test_a_part_of_a_job_adds_its_bytes_and_files_not_its_phases_or_end(
        spans: InMemorySpanExporter, traces: Tracing) -> None:
    metrics = Metrics()
    whole = Watchers([metrics, traces]).job("web-07")
    job = JobState(name="web-07", watch=whole)
    job.advance(Phase.SEED)
    part = whole.part()
    assert part.trace_id == whole.trace_id
    seed = JobState(name="seed-web", watch=part)
    imported(seed)  # the seed's own phases: none of them the job's
    with part.file("disk1.vmdk"):
        part.bytes(300)
    part.end("imported", error=None, error_kind=None, attempts=1)
    assert value(metrics, "asyncovf_uploaded_bytes_total") == 300
    assert value(metrics, "asyncovf_imports_total", status="imported") == 0
    assert value(metrics, "asyncovf_imports_in_flight") == 1
    assert value(metrics, "asyncovf_leases_open") == 0
    job.advance(Phase.CLONE)
    job.advance(Phase.IMPORTED)
    whole.end("imported", error=None, error_kind=None, attempts=1)
    traces.close()
    finished = spans.get_finished_spans()
    assert sorted(s.name for s in finished) == ["clone", "file", "job", "seed"]
    (file,) = by_name(finished, "file")
    (seed_phase,) = by_name(finished, "seed")
    assert file.parent is not None and file.parent.span_id == seed_phase.context.span_id
