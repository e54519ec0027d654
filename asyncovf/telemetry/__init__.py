"""Watching a run: Prometheus metrics and OpenTelemetry traces, both optional extras.

:mod:`asyncovf.telemetry.watch` is what the engine tells and needs nothing
optional; :mod:`~asyncovf.telemetry.metrics` and
:mod:`~asyncovf.telemetry.tracing` import their packages, so they are imported
only when a run asks for them (:mod:`asyncovf.cli.watching`, or a library
caller passing ``run_batch(watcher=…)``).
"""

from __future__ import annotations

from asyncovf.telemetry.watch import JobWatch, TraceIdFilter, Watcher, combined

__all__ = ["JobWatch", "TraceIdFilter", "Watcher", "combined"]
