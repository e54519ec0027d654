"""OpenTelemetry traces (and metrics) of real runs against the simulator.

In process, through the SDK's in-memory exporter: a trace per job with its
phases, files and SOAP calls under it, and as many call spans of each method as
the simulator counted calls. Through the command line, with ``OTEL_*`` set: the
spans reach an OTLP/HTTP collector, and the report joins each job to its trace.
"""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.engine.pool import BatchRunner
from asyncovf.telemetry.metrics import Metrics
from asyncovf.telemetry.tracing import Tracing
from asyncovf.telemetry.watch import Watchers
from tests.faults.support import (
    FaultRun,
    cli_environment,
    job_name,
    plan_of,
    report_jobs,
    run_cli_report,
    write_batch,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMPORT_PHASES = ["spec", "import", "lease_wait", "upload", "complete"]


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.parent is not None
                   and s.parent.span_id == parent.context.span_id),
                  key=lambda s: s.start_time or 0)


async def test_each_job_is_a_trace_of_its_phases_files_and_calls(fault_run: FaultRun) -> None:
    count = 4
    failing = job_name(fault_run, 2)
    await fault_run.set_faults(soap=[{"method": "HttpNfcLeaseComplete", "vm": failing,
                                      "fault": "InvalidState"}])
    exporter = InMemorySpanExporter()
    tracing = await anyio.to_thread.run_sync(lambda: Tracing(SimpleSpanProcessor(exporter)))
    package = await fault_run.package()
    runner = BatchRunner(fault_run.connection, plan_of(fault_run, count).jobs,
                         {str(fault_run.package_path): package},
                         RunSettings(concurrency=2, job_retries=0), watcher=tracing)
    await runner.run()
    await anyio.to_thread.run_sync(tracing.close)
    counters = await fault_run.settled()
    spans = exporter.get_finished_spans()

    rows = report_jobs(runner)
    jobs = {s.attributes["asyncovf.vm"]: s for s in spans if s.name == "job" and s.attributes}
    assert set(jobs) == set(rows)
    for name, job in jobs.items():
        # The report row names the job's trace.
        assert rows[name]["trace_id"] == format(job.context.trace_id, "032x")
        # The pending phase's calls (the inventory's, a first job's) hang on the job itself.
        phases = [c for c in children(spans, job)
                  if c.attributes and "asyncovf.phase" in c.attributes]
        failed = name == failing
        assert [p.name for p in phases] == IMPORT_PHASES + (["abort"] if failed else []), name
        (upload,) = (p for p in phases if p.name == "upload")
        files = children(spans, upload)
        assert [f.name for f in files] == ["file"] * len(package.descriptor.disks)
        (import_phase,) = (p for p in phases if p.name == "import")
        assert [c.name for c in children(spans, import_phase)] == ["ImportVApp"]
        assert rows[name]["status"] == ("failed" if failed else "imported")
        assert (job.status.status_code is StatusCode.ERROR) is failed
        (complete,) = (p for p in phases if p.name == "complete")
        if failed:
            # The phase it failed in carries the fault; the phases before it do not.
            assert complete.status.status_code is StatusCode.ERROR
            assert complete.attributes is not None
            assert complete.attributes["error.type"] == "InvalidState"
            assert all(p.status.status_code is not StatusCode.ERROR
                       for p in phases if p is not complete)
            # The lease guard aborts on its way out of the phase that failed.
            assert {"HttpNfcLeaseComplete", "HttpNfcLeaseAbort"} <= {
                c.name for c in children(spans, complete)}
        else:
            assert all(p.status.status_code is not StatusCode.ERROR for p in phases)

    # A span for every call the simulator counted, by method: the simulator is the oracle.
    methods = {name for name in counters.methods if counters.calls(name)}
    call_spans = Counter(s.name for s in spans if s.attributes
                         and s.attributes.get("rpc.system") == "vsphere_soap")
    assert call_spans == {method: counters.calls(method) for method in methods}
    (faulted,) = (s for s in spans if s.name == "HttpNfcLeaseComplete"
                  and s.status.status_code is StatusCode.ERROR)
    assert faulted.attributes is not None and faulted.attributes["error.type"] == "InvalidState"
    await fault_run.check_invariants(runner)


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector of one route, keeping what it was sent."""

    received: list[bytes]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    received: list[bytes] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_the_command_exports_traces_where_otel_says_and_names_them_in_the_report(
        fault_run: FaultRun, tmp_path: Path, collector: tuple[str, list[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, received = collector
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n'
                                                   "    count: 3\n")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fleet-import")
    # One upload of the second VM fails once: its retry's warning is a log line of that job.
    flaky = f"{fault_run.prefix}-2"
    await fault_run.set_faults(nfc=[{"vm": flaky, "times": 1, "status": 500,
                                     "after_bytes": 1000}])
    status, _, stderr, report = await run_cli_report(fault_run, batch, "--concurrency", "2")
    assert status == 0, stderr
    # The log line ends in its job's trace id: a log line, a report row and a trace join.
    (row,) = (job for job in report["jobs"] if job["name"] == flaky)
    (warning,) = (line for line in stderr.splitlines() if "retrying" in line)
    assert warning.startswith("asyncovf: WARNING: upload of ")
    assert warning.endswith(f" (trace {row['trace_id']})")
    assert received, "no trace reached the collector"
    spans = []
    services = set()
    for body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes
                         if a.key == "service.name"}
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    assert services == {"fleet-import"}
    job_traces = {span.trace_id.hex() for span in spans if span.name == "job"}
    assert job_traces == {job["trace_id"] for job in report["jobs"]} and len(job_traces) == 3
    # No span holds the password, the session cookie or the server's address.
    exported = b"".join(received)
    assert fault_run.vcsim.password.encode() not in exported
    assert b"vmware_soap_session" not in exported
    await fault_run.check_invariants(imported={job["name"] for job in report["jobs"]})


async def test_without_otel_variables_nothing_is_traced(fault_run: FaultRun,
                                                        tmp_path: Path) -> None:
    batch = await write_batch(fault_run, tmp_path, f'  - name: "{fault_run.prefix}-1"\n')
    assert not any(key.startswith("OTEL_") for key in cli_environment(fault_run))
    status, _, stderr, report = await run_cli_report(fault_run, batch)
    assert status == 0, stderr
    assert [job["trace_id"] for job in report["jobs"]] == [None]
    await fault_run.check_invariants(imported={f"{fault_run.prefix}-1"})


async def test_a_clone_run_counts_its_seeds_upload_under_the_job_that_made_it(
        fault_run: FaultRun) -> None:
    exporter = InMemorySpanExporter()
    tracing = await anyio.to_thread.run_sync(lambda: Tracing(SimpleSpanProcessor(exporter)))
    metrics = Metrics()
    package = await fault_run.package()
    runner = BatchRunner(fault_run.connection, plan_of(fault_run, 6).jobs,
                         {str(fault_run.package_path): package},
                         RunSettings(concurrency=3, strategy="clone"),
                         watcher=Watchers([metrics, tracing]))
    await runner.run()
    await anyio.to_thread.run_sync(tracing.close)
    counters = await fault_run.settled()
    assert {r.status for r in runner.results} == {JobStatus.IMPORTED}
    # The one upload, the seed's, counted once: as many bytes as the simulator took in.
    assert counters.ok("ImportVApp") == 1
    assert metrics.registry.get_sample_value("asyncovf_uploaded_bytes_total") == \
        counters.nfc_bytes > 0
    assert metrics.registry.get_sample_value(
        "asyncovf_imports_total", {"status": "imported"}) == 6  # the seed is no job
    spans = exporter.get_finished_spans()
    # Its file spans are in the trace of the job that made it, under that job's seed phase.
    files = [s for s in spans if s.name == "file"]
    assert len(files) == len(package.descriptor.disks)
    (maker,) = {s.context.trace_id for s in files}
    (seed_phase,) = (s for s in spans if s.name == "seed" and s.context.trace_id == maker)
    assert all(f.parent is not None and f.parent.span_id == seed_phase.context.span_id
               for f in files)
    assert sum(s.name == "job" for s in spans) == 6
    await fault_run.check_invariants(runner)
