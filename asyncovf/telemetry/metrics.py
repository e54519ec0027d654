"""Prometheus metrics of a run, served while it runs: ``--metrics-port``.

What an operator of a shared vCenter asks during a long run, as counters,
gauges and histograms (OpenMetrics when the scraper asks for it, as Prometheus
does):

========================================  ===========================================
``asyncovf_imports_total{status}``        jobs ended: imported, skipped, failed, aborted
``asyncovf_imports_in_flight``            jobs started and not ended
``asyncovf_sessions_open``                vCenter sessions logged in and not out
``asyncovf_leases_open``                  import leases held (ImportVApp → Complete)
``asyncovf_uploaded_bytes_total``         bytes sent to (or pulled by) the hosts
``asyncovf_soap_calls_total{method,fault}``  SOAP calls; ``fault`` empty for an answer
``asyncovf_soap_call_seconds{method}``    SOAP call latency, a histogram
``asyncovf_phase_seconds{phase}``         time in each job phase, a histogram
``asyncovf_concurrency_limit``            the workers the run allows now
========================================  ===========================================

No label holds a VM's name or anything from a package: a run of ten thousand
VMs has the same few series as a run of ten. The server is prometheus_client's
own, on a daemon thread of its own, so a scrape is answered even while the
event loop is busy; it is an optional extra (``asyncovf[metrics]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from asyncovf.telemetry.watch import LEASE_PHASES, TERMINAL_PHASES, JobWatch, Watcher
from asyncovf.vsphere.calls import CallRecord

#: vCenter's answers: from a millisecond (an idle simulator) to its 120 s call timeout.
SOAP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                       5.0, 10.0, 30.0, 60.0, 120.0)
#: A phase: from a millisecond to an hour's upload.
PHASE_BUCKETS: Final = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0, 900.0, 3600.0)
#: The calls that open and close a session.
LOGINS: Final = frozenset({"Login", "LoginByToken", "LoginExtensionByCertificate"})


class Metrics(Watcher):
    """The run's metrics in a registry of their own (several runs, several registries)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.imports = Counter("asyncovf_imports", "Jobs ended, by how they ended",
                               ["status"], registry=r)
        self.in_flight = Gauge("asyncovf_imports_in_flight", "Jobs started and not ended",
                               registry=r)
        self.sessions = Gauge("asyncovf_sessions_open", "vCenter sessions logged in",
                              registry=r)
        self.leases = Gauge("asyncovf_leases_open", "Import leases held", registry=r)
        self.uploaded = Counter("asyncovf_uploaded_bytes",
                                "Bytes sent to the hosts (or pulled by them)", registry=r)
        self.calls = Counter("asyncovf_soap_calls", "SOAP calls, by method and fault",
                             ["method", "fault"], registry=r)
        self.call_seconds = Histogram("asyncovf_soap_call_seconds", "SOAP call latency",
                                      ["method"], buckets=SOAP_BUCKETS, registry=r)
        self.phase_seconds = Histogram("asyncovf_phase_seconds", "Time in each job phase",
                                       ["phase"], buckets=PHASE_BUCKETS, registry=r)
        self.concurrency = Gauge("asyncovf_concurrency_limit",
                                 "The workers the run allows now", registry=r)
        for status in ("imported", "skipped", "failed", "aborted"):
            self.imports.labels(status)  # present at 0 from the first scrape

    def job(self, name: str) -> JobWatch:
        self.in_flight.inc()
        return _JobMetrics(self)

    def session(self) -> Callable[[CallRecord], None]:
        logged_in = False

        def observe(call: CallRecord) -> None:
            nonlocal logged_in
            self.calls.labels(call.method, call.fault or "").inc()
            self.call_seconds.labels(call.method).observe(call.seconds)
            if call.method in LOGINS and call.fault is None and not logged_in:
                logged_in = True
                self.sessions.inc()
            elif call.method == "Logout" and logged_in:
                # Answered or not, the session is given up: ours no more.
                logged_in = False
                self.sessions.dec()
        return observe

    def limit(self, workers: int) -> None:
        self.concurrency.set(workers)


class _JobMetrics(JobWatch):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._entered = time.monotonic()
        self._ended = False

    def phase(self, old: str, new: str, *, error: str | None, fault: str | None) -> None:
        now = time.monotonic()
        metrics = self._metrics
        if old != "pending" and old not in TERMINAL_PHASES:
            metrics.phase_seconds.labels(old).observe(now - self._entered)
        self._entered = now
        if new in LEASE_PHASES and old not in LEASE_PHASES:
            metrics.leases.inc()
        elif old in LEASE_PHASES and new not in LEASE_PHASES:
            metrics.leases.dec()

    def bytes(self, count: int) -> None:
        self._metrics.uploaded.inc(count)

    def end(self, status: str, *, error: str | None, error_kind: str | None,
            attempts: int) -> None:
        if self._ended:
            return
        self._ended = True
        self._metrics.imports.labels(status).inc()
        self._metrics.in_flight.dec()


def serve_metrics(metrics: Metrics, address: str, port: int) -> tuple[Callable[[], None], int]:
    """Serve ``metrics`` on ``address:port`` (0: any free port) on a thread of its own.

    Returns how to stop it, and the port it listens on.
    """
    server, thread = start_http_server(port, address, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return stop, int(server.server_port)


__all__ = ["LOGINS", "PHASE_BUCKETS", "SOAP_BUCKETS", "Metrics", "serve_metrics"]
