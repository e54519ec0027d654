"""Progress: a live display on a terminal, plain log lines otherwise.

:class:`ProgressDisplay` is a batch's: the engine calls its
:meth:`~ProgressDisplay.update` (synchronously, cheaply) on every job change;
the terminal display redraws on its own clock, so a burst of updates from
hundreds of jobs costs nothing extra. :class:`ProgressLine` is one import's:
a single line redrawn in place.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from asyncovf.engine.batch import JobResult, JobStatus
from asyncovf.engine.phases import JobState
from asyncovf.printable import printable

log = logging.getLogger(__name__)

_DONE = (JobStatus.IMPORTED, JobStatus.SKIPPED, JobStatus.FAILED, JobStatus.ABORTED)
_STYLE = {"imported": "green", "skipped": "cyan", "failed": "bold red", "aborted": "yellow"}


class ProgressDisplay:
    """Live table of in-flight jobs with totals, throughput and ETA."""

    def __init__(self, results: Sequence[JobResult], *, stream: TextIO | None = None,
                 live: bool | None = None, max_rows: int = 20) -> None:
        self.results = results
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.max_rows = max_rows
        self.started = time.monotonic()
        self._finished = 0
        self._console = Console(file=self.stream, highlight=False)
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        self.started = time.monotonic()
        if self.live:
            self._live = Live(self, console=self._console, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    # The engine's callback.
    def update(self, result: JobResult) -> None:
        if self.live or result.status not in _DONE:
            return
        self._finished += 1
        seconds = (result.finished or time.monotonic()) - (result.started or self.started)
        detail = f" ({printable(result.error)})" if result.error else ""
        tries = f", {result.attempts} attempts" if result.attempts > 1 else ""
        print(f"[{self._finished}/{len(self.results)}] {printable(result.name)}: "
              f"{result.status.value} {printable(result.vm or '')} "
              f"{result.bytes / 2**20:.1f} MiB {seconds:.2f} s{tries}{detail}",
              file=self.stream, flush=True)

    # rich calls this on each refresh.
    def __rich__(self) -> Group:
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        done = [r for r in self.results if r.status in _DONE]
        running = [r for r in self.results if r.status is JobStatus.RUNNING]
        counts = {status.value: 0 for status in _DONE}
        for r in done:
            counts[r.status.value] += 1
        sent = sum(r.bytes for r in done) + sum(
            r.state.bytes_done for r in running if r.state is not None)
        rate = len(done) / elapsed
        remaining = len(self.results) - len(done)
        eta = f"{remaining / rate:.0f} s" if rate > 0 and remaining else "-"
        header = Text.assemble(
            (f"{len(done)}/{len(self.results)} jobs ", "bold"),
            *((f"{counts[k]} {k}  ", _STYLE[k]) for k in counts if counts[k]),
            f"| {len(running)} running | {sent / 2**20 / elapsed:.1f} MiB/s | "
            f"{rate:.1f} imports/s | ETA {eta}",
        )
        table = Table(box=None, pad_edge=False, show_header=bool(running))
        for column in ("VM", "phase", "try", "MiB", "%"):
            table.add_column(column, justify="right" if column in ("try", "MiB", "%") else "left")
        for r in running[: self.max_rows]:
            state = r.state
            phase = state.phase.value if state is not None else "start"
            done_bytes = state.bytes_done if state is not None else 0
            total = state.bytes_total if state is not None else 0
            percent = f"{done_bytes * 100 // total}" if total else "-"
            # Text, not a string: rich would read markup ("[bold]") in a VM's name.
            table.add_row(Text(printable(r.name)), phase, str(r.attempts),
                          f"{done_bytes / 2**20:.1f}", percent)
        if len(running) > self.max_rows:
            table.add_row(f"… {len(running) - self.max_rows} more", "", "", "", "")
        return Group(header, table)


class ProgressLine:
    """One import's progress: a line redrawn in place on a terminal, phase log lines otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last_phase = ""
        self._last_draw = 0.0

    def __call__(self, state: JobState) -> None:
        phase = state.phase.value
        now = time.monotonic()
        if phase != self._last_phase:
            self._last_phase = phase
            if not self.tty:
                log.info("%s: %s", printable(state.name), phase)
        if self.tty and (now - self._last_draw > 0.1 or phase != "upload"):
            self._last_draw = now
            percent = state.bytes_done * 100 // state.bytes_total if state.bytes_total else 0
            print(f"\r{printable(state.name)}: {phase:<10} {percent:3d}% "
                  f"{state.bytes_done / 2**20:8.1f}/{state.bytes_total / 2**20:.1f} MiB",
                  end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and self._last_phase:
            print(file=sys.stderr)


__all__ = ["ProgressDisplay", "ProgressLine"]
