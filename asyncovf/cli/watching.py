"""``--metrics-port``, ``--metrics-linger`` and the ``OTEL_*`` traces of ``run`` and ``import``.

The command opens what the operator asked to watch the run with before the
run, and closes it after the report is written: the metrics endpoint serves
on for ``--metrics-linger`` seconds, so the last scrape sees the final counts
(a signal ends the wait early), and the traces are flushed within a bound.
Both are optional extras: asked for without their packages, the command says
which extra to install and exits 2 before logging in.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import anyio

from asyncovf.cli.exits import EXIT_USAGE
from asyncovf.cli.output import report_error
from asyncovf.errors import UsageError
from asyncovf.interrupt import run_until_signal
from asyncovf.telemetry.environment import traces_exporter
from asyncovf.telemetry.watch import Watcher, combined

#: Seconds the endpoint serves after the run by default: Prometheus's usual
#: scrape interval, so one more scrape reads the final values.
DEFAULT_LINGER: Final = 15.0


def metrics_address(text: str) -> tuple[str, int]:
    """``--metrics-port``: ``PORT`` (every interface) or ``ADDRESS:PORT``; 0 picks a port."""
    host, colon, port = text.rpartition(":")
    host = host.strip("[]") if colon else "0.0.0.0"
    if not port.isdigit() or int(port) > 65535 or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PORT or ADDRESS:PORT")
    return host, int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds from 0 to 86400")
    return value


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "watching the run (traces: the OTEL_* environment, e.g. OTEL_TRACES_EXPORTER=otlp)")
    group.add_argument("--metrics-port", type=metrics_address, metavar="[ADDRESS:]PORT",
                       help="serve Prometheus metrics of the run here, at /metrics "
                            "(needs asyncovf[metrics])")
    group.add_argument("--metrics-linger", type=_seconds, metavar="S", default=DEFAULT_LINGER,
                       help="keep serving the metrics S seconds after the run, for the "
                            f"last scrape (default {DEFAULT_LINGER:g}; a signal ends it)")


@dataclass
class Watching:
    """What watches a command's run, and how long its metrics outlive it."""

    #: None: nobody watches.
    watcher: Watcher | None
    #: Seconds the metrics endpoint serves after the run; an interrupted run sets 0.
    linger: float


@asynccontextmanager
async def watching(args: argparse.Namespace) -> AsyncIterator[Watching]:
    """The run's watcher, open for the block and closed after it.

    Raises :class:`~asyncovf.errors.UsageError` when an extra is missing or a
    port cannot be bound, before anything else starts (and then nothing lingers).
    """
    stop_metrics: Callable[[], None] | None = None
    metrics = tracing = None
    opened = Watching(None, 0.0)
    try:
        if args.metrics_port is not None:
            metrics, stop_metrics = await anyio.to_thread.run_sync(_open_metrics,
                                                                   *args.metrics_port)
        # Off the loop: the SDK's resource detection waits on threads of its own.
        tracing = await anyio.to_thread.run_sync(_open_tracing)
        opened = Watching(combined([metrics, tracing]), args.metrics_linger)
        yield opened
    finally:
        with anyio.CancelScope(shield=True):
            if stop_metrics is not None:
                if opened.linger > 0:
                    linger = opened.linger
                    await run_until_signal(lambda: anyio.sleep(linger))
                await anyio.to_thread.run_sync(stop_metrics)
            if tracing is not None:
                await anyio.to_thread.run_sync(tracing.close)


async def run_watched(args: argparse.Namespace,
                      command: Callable[[Watching], Awaitable[int]]) -> int:
    """``command`` with what the operator asked to watch it with, open around it; the
    command's status, or 2 with one line when that cannot be opened."""
    try:
        async with watching(args) as watch:
            return await command(watch)
    except UsageError as exc:  # a port taken, an extra missing, an exporter unknown
        report_error(exc, args.debug)
        return EXIT_USAGE


def _open_metrics(host: str, port: int) -> tuple[Watcher, Callable[[], None]]:
    try:
        from asyncovf.telemetry.metrics import Metrics, serve_metrics
    except ImportError as exc:
        raise UsageError("--metrics-port needs the metrics extra: "
                         "pip install 'asyncovf[metrics]'") from exc
    metrics = Metrics()
    try:
        stop, bound = serve_metrics(metrics, host, port)
    except OSError as exc:
        raise UsageError(f"--metrics-port {host}:{port}: {exc.strerror or exc}") from exc
    shown = f"[{host}]" if ":" in host else host
    print(f"asyncovf: metrics at http://{shown}:{bound}/metrics", file=sys.stderr)
    return metrics, stop


def _open_tracing() -> Watcher | None:
    try:
        from asyncovf.telemetry.tracing import tracing_from_environment
    except ImportError as exc:
        if traces_exporter() is not None:
            raise UsageError("OTEL_* asks for traces, which need the tracing extra: "
                             "pip install 'asyncovf[tracing]'") from exc
        return None
    tracing = tracing_from_environment()
    if tracing is not None:
        quiet_exporter_logs()
    return tracing


class _Once(logging.Filter):
    """Lets a message through the first time only."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


def quiet_exporter_logs() -> None:
    """A collector that is down costs a run one line, not four per batch of spans.

    The OTLP exporter warns of each retry; the SDK's processor then says once a
    batch that it gave up. The retries are not shown, and the give-up is shown
    once.
    """
    logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.ERROR)
    logging.getLogger("opentelemetry.sdk.trace.export").addFilter(_Once())


__all__ = ["DEFAULT_LINGER", "Watching", "add_watch_options", "metrics_address",
           "quiet_exporter_logs", "run_watched", "watching"]
