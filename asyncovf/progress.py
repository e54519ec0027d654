"""Progress: a live display on a terminal, plain log lines and a heartbeat otherwise.

:class:`ProgressDisplay` is a batch's: the engine calls its
:meth:`~ProgressDisplay.update` (synchronously, cheaply) on every job change,
and the display keeps its own books from those calls alone — jobs finished,
jobs in flight, when each last moved, the last failures — so drawing never
walks every job. What it shows is a :class:`Snapshot` of one moment, and
drawing one (:func:`render`, :func:`heartbeat_line`) is a pure function of it:
the rate is measured over the last :data:`RATE_WINDOW` seconds, the ETA is the
bytes left over that rate, and a job whose bytes and phase have not moved for
``stall_after`` seconds is *stalled* and listed first. The terminal display
redraws on its own clock, so a burst of updates costs nothing extra; the plain
one prints a heartbeat line every ``heartbeat`` seconds. :class:`ProgressLine`
is one import's: a single line redrawn in place.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, TextIO

import anyio
from anyio.abc import TaskGroup
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from asyncovf.engine.batch import JobResult, JobStatus
from asyncovf.engine.phases import JobState
from asyncovf.printable import printable
from asyncovf.quantity import quantity, size

log = logging.getLogger(__name__)

_DONE = (JobStatus.IMPORTED, JobStatus.SKIPPED, JobStatus.FAILED, JobStatus.ABORTED)
_STYLE = {"imported": "green", "skipped": "cyan", "failed": "bold red", "aborted": "yellow"}
#: The rate is the bytes sent over about this many seconds, no longer: a run's
#: pace changes (a ramp step, a slow datastore) and the ETA must follow.
RATE_WINDOW: Final = 20.0
#: A rate measured over less than this is noise: the ETA waits for it.
_MIN_SPAN: Final = 2.0
WIDTH: Final = 80
#: "(step from 1, steps, workers allowed)" of the ramp in force, or None.
RampStep = tuple[int, int, int]


@dataclass(frozen=True)
class InFlight:
    """One running job as the display shows it."""

    name: str
    phase: str
    attempt: int
    bytes_done: int
    bytes_total: int
    #: Seconds since the job started.
    running: float
    #: Seconds since its bytes or its phase last moved.
    still: float


@dataclass(frozen=True)
class Snapshot:
    """A run's progress at one moment: everything the display draws, nothing more."""

    elapsed: float
    jobs: int
    #: Finished jobs by status value ("imported", "failed", ...).
    finished: Mapping[str, int]
    bytes_done: int
    #: Bytes the whole run will send: known sizes, and for jobs whose size is not
    #: known yet that of a job of the same source (or the average one).
    bytes_total: int
    #: Bytes per second over the last window; None until measured.
    rate: float | None
    in_flight: tuple[InFlight, ...] = ()
    #: The last failures, oldest first: "name: error".
    failures: tuple[str, ...] = ()
    ramp: RampStep | None = None
    stall_after: float = 30.0

    @property
    def done(self) -> int:
        return sum(self.finished.values())

    @property
    def eta(self) -> float | None:
        """Seconds until the bytes left are sent at the measured rate; None if unknown."""
        left = max(0, self.bytes_total - self.bytes_done)
        if left == 0:
            return 0.0
        if not self.rate:
            return None
        return left / self.rate

    def stalled(self, job: InFlight) -> bool:
        return job.still >= self.stall_after

    def ordered(self) -> list[InFlight]:
        """Stalled jobs first (longest first), then the slowest uploads, then the rest."""
        def key(job: InFlight) -> tuple[int, float]:
            if self.stalled(job):
                return 0, -job.still
            if job.bytes_done:
                return 1, job.bytes_done / max(job.running, 1e-9)
            return 2, -job.running
        return sorted(self.in_flight, key=key)


def duration(seconds: float | None) -> str:
    """``42s``, ``4m05s``, ``2h05m``; ``—`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"



def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate / 2**20:.1f} MiB/s"


def _ramp(ramp: RampStep | None) -> str:
    if ramp is None:
        return ""
    step, steps, workers = ramp
    workers_text = quantity(workers, "worker")
    return f"ramp {step}/{steps}: {workers_text}" if steps > 1 else workers_text


def _fit(text: str, width: int, style: str = "") -> Text:
    """One line of ``width`` cells at most: cut with an ellipsis, never wrapped."""
    line = Text(text, style=style, no_wrap=True, overflow="ellipsis")
    line.truncate(width, overflow="ellipsis")
    return line


def render(snapshot: Snapshot, *, max_rows: int = 20, width: int = WIDTH) -> Group:
    """The live display of ``snapshot``: totals, time, jobs in flight, last failures.

    Every line fits ``width`` cells; untrusted text (names, errors) is escaped.
    """
    s = snapshot
    in_flight = s.ordered()
    stalled = sum(1 for job in in_flight if s.stalled(job))
    counts = Text.assemble(
        (f"{s.done}/{s.jobs} jobs", "bold"),
        *((f"  {s.finished[k]} {k}", _STYLE.get(k, "")) for k in _STYLE if s.finished.get(k)),
        no_wrap=True, overflow="ellipsis")
    counts.truncate(width, overflow="ellipsis")
    times = _fit(f"{duration(s.elapsed)} elapsed  {size(s.bytes_done)} of "
                 f"{size(s.bytes_total)}  {_rate(s.rate)}  ETA {duration(s.eta)}", width)
    ramp = _ramp(s.ramp)
    workers = Text.assemble(f"{len(in_flight)} running",
                            (f"  {stalled} stalled", "bold yellow") if stalled else "",
                            f"  {ramp}" if ramp else "", no_wrap=True, overflow="ellipsis")
    workers.truncate(width, overflow="ellipsis")
    parts: list[Text | Table] = [counts, times, workers]
    if in_flight:
        table = Table(box=None, pad_edge=False, width=width, show_edge=False)
        table.add_column("VM", ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column("phase", width=16, no_wrap=True, overflow="ellipsis")
        table.add_column("try", justify="right", width=3, no_wrap=True)
        table.add_column("MiB", justify="right", width=11, no_wrap=True)
        table.add_column("%", justify="right", width=3, no_wrap=True)
        table.add_column("stalled", justify="right", width=7, no_wrap=True)
        for job in in_flight[:max_rows]:
            percent = f"{job.bytes_done * 100 // job.bytes_total}" if job.bytes_total else "-"
            mib = f"{job.bytes_done // 2**20}/{job.bytes_total // 2**20}"
            stuck = s.stalled(job)
            # Text, not a string: rich would read markup ("[bold]") in a VM's name.
            table.add_row(Text(printable(job.name)), job.phase, str(job.attempt), mib, percent,
                          Text(duration(job.still), style="bold yellow") if stuck else "")
        if len(in_flight) > max_rows:
            table.add_row(f"… {len(in_flight) - max_rows} more", "", "", "", "", "")
        parts.append(table)
    parts.extend(_fit(f"failed {printable(failure)}", width, "red") for failure in s.failures)
    return Group(*parts)


def heartbeat_line(snapshot: Snapshot) -> str:
    """The plain display's periodic line: elapsed, jobs, MiB, rate, ETA (one line)."""
    s = snapshot
    in_flight = s.in_flight
    stalled = sum(1 for job in in_flight if s.stalled(job))
    failed = s.finished.get("failed", 0)
    ramp = _ramp(s.ramp)
    return (f"progress: {duration(s.elapsed)} elapsed, {s.done}/{s.jobs} jobs"
            + (f" ({failed} failed)" if failed else "")
            + f", {len(in_flight)} running"
            + (f" ({stalled} stalled)" if stalled else "")
            + f", {s.bytes_done / 2**20:.0f}/{s.bytes_total / 2**20:.0f} MiB"
            + f", {_rate(s.rate)}, ETA {duration(s.eta)}"
            + (f", {ramp}" if ramp else ""))


@dataclass
class _Moved:
    """When a running job last moved: its bytes and phase then."""

    bytes_done: int
    phase: str
    at: float


@dataclass
class _Books:
    """What the display knows of the run, from :meth:`ProgressDisplay.update` alone."""

    finished: Counter[str] = field(default_factory=Counter)
    finished_bytes: int = 0
    running: dict[int, JobResult] = field(default_factory=dict)
    moved: dict[int, _Moved] = field(default_factory=dict)
    #: Jobs not seen yet, by source; sizes learnt, by source.
    unseen: Counter[str] = field(default_factory=Counter)
    sizes: dict[str, int] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)
    #: Jobs counted as finished.
    counted: set[int] = field(default_factory=set)
    failures: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    #: (time, bytes done) over the last window, oldest first.
    samples: deque[tuple[float, int]] = field(default_factory=deque)


class ProgressDisplay:
    """A batch's progress: a live table on a terminal; otherwise a line per finished job
    and a heartbeat line every ``heartbeat`` seconds.

    ``clock`` (monotonic seconds, as :attr:`JobResult.started`) and ``sleep`` are
    the display's only reads of time. ``ramp`` tells the ramp step in force
    (:attr:`~asyncovf.engine.pool.BatchRunner.ramp_step`). Use it as a context
    manager; ``async with`` also runs the heartbeat on its own clock (without it,
    the heartbeat is printed by the updates that come after it is due).
    """

    def __init__(self, results: Sequence[JobResult], *, stream: TextIO | None = None,
                 live: bool | None = None, max_rows: int = 20, heartbeat: float = 10.0,
                 stall_after: float = 30.0, rate_window: float = RATE_WINDOW,
                 ramp: Callable[[], RampStep | None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        self.results = results
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.max_rows = max_rows
        self.heartbeat = heartbeat
        self.stall_after = stall_after
        self.rate_window = rate_window
        self.ramp = ramp
        self.clock = clock
        self._sleep = sleep
        self.started = clock()
        self._next_beat = self.started + heartbeat
        self._books = _Books()
        for result in results:
            if result.status in _DONE:
                self._finish(result)
            else:
                self._books.unseen[result.spec.source] += 1
        self._console = Console(file=self.stream, highlight=False)
        self._live: Live | None = None
        self._beats: TaskGroup | None = None

    def __enter__(self) -> ProgressDisplay:
        self.started = self.clock()
        self._next_beat = self.started + self.heartbeat
        self._books.samples.clear()
        self._books.samples.append((self.started, self._books.finished_bytes))
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

    async def __aenter__(self) -> ProgressDisplay:
        self.__enter__()
        if not self.live and self.heartbeat > 0:
            self._beats = anyio.create_task_group()
            await self._beats.__aenter__()
            self._beats.start_soon(self._beat_on_time, name="progress heartbeat")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._beats is not None:
                beats, self._beats = self._beats, None
                beats.cancel_scope.cancel()
                # Not told of ``exc``: the run's own exception goes on as it is,
                # not wrapped in a group with the heartbeat's cancellation.
                await beats.__aexit__(None, None, None)
        finally:
            self.__exit__(exc_type, exc, tb)

    async def _beat_on_time(self) -> None:
        try:
            while True:
                await self._sleep(max(0.0, self._next_beat - self.clock()))
                self._beat(self.clock())
        except BrokenPipeError:
            return  # its reader has gone: the run goes on without a heartbeat

    def _beat(self, now: float) -> None:
        if now < self._next_beat:
            return
        # Steady: the next one is due an interval after this one was, not after now.
        self._next_beat += self.heartbeat * max(1, int((now - self._next_beat) // self.heartbeat)
                                                + 1)
        print(heartbeat_line(self.snapshot(now)), file=self.stream, flush=True)

    # The engine's callback.
    def update(self, result: JobResult) -> None:
        books = self._books
        index = result.spec.index
        source = result.spec.source
        if index not in books.seen:
            books.seen.add(index)
            books.unseen[source] -= 1
            if books.unseen[source] <= 0:
                del books.unseen[source]
        now = self.clock()
        if result.status is JobStatus.RUNNING:
            books.running[index] = result
            state = result.state
            if state is not None:
                if state.bytes_total:
                    books.sizes[source] = state.bytes_total
                moved = books.moved.get(index)
                if (moved is None or moved.bytes_done != state.bytes_done
                        or moved.phase != state.phase.value):
                    books.moved[index] = _Moved(state.bytes_done, state.phase.value, now)
        elif result.status in _DONE and index not in books.counted:
            self._finish(result)
            self._print_finished(result, now)
        if not self.live and self.heartbeat > 0:
            if not books.samples or now - books.samples[-1][0] >= 1.0:
                self.snapshot(now)  # a sample for the rate: the heartbeat's is too sparse
            self._beat(now)

    def _finish(self, result: JobResult) -> None:
        books = self._books
        index = result.spec.index
        books.counted.add(index)
        books.running.pop(index, None)
        books.moved.pop(index, None)
        books.finished[result.status.value] += 1
        books.finished_bytes += result.bytes
        if result.status is JobStatus.IMPORTED and result.bytes:
            books.sizes.setdefault(result.spec.source, result.bytes)
        if result.status is JobStatus.FAILED:
            books.failures.append(f"{result.name}: {result.error or 'failed'}")

    def _print_finished(self, result: JobResult, now: float) -> None:
        if self.live:
            return
        seconds = (result.finished or now) - (result.started or self.started)
        detail = f" ({printable(result.error)})" if result.error else ""
        tries = f", {result.attempts} attempts" if result.attempts > 1 else ""
        replaced = f" (replaced {printable(result.replaced)})" if result.replaced else ""
        print(f"[{sum(self._books.finished.values())}/{len(self.results)}] "
              f"{printable(result.name)}: {result.status.value} {printable(result.vm or '')}"
              f"{replaced} {result.bytes / 2**20:.1f} MiB {seconds:.2f} s{tries}{detail}",
              file=self.stream, flush=True)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The run as of ``now`` (default: the clock); takes a sample for the rate."""
        now = self.clock() if now is None else now
        books = self._books
        known = list(books.sizes.values())
        average = sum(known) // len(known) if known else 0
        done = total = books.finished_bytes
        in_flight = []
        for index, result in list(books.running.items()):
            state = result.state
            job_done = state.bytes_done if state is not None else 0
            job_total = state.bytes_total if state is not None else 0
            done += job_done
            total += max(job_done, job_total or books.sizes.get(result.spec.source, average))
            started = result.started if result.started is not None else self.started
            moved = books.moved.get(index)
            in_flight.append(InFlight(
                name=result.name, phase=state.phase.value if state is not None else "start",
                attempt=result.attempts, bytes_done=job_done, bytes_total=job_total,
                running=now - started, still=now - (moved.at if moved else started)))
        total += sum(count * books.sizes.get(source, average)
                     for source, count in list(books.unseen.items()))
        return Snapshot(elapsed=now - self.started, jobs=len(self.results),
                        finished=dict(books.finished), bytes_done=done, bytes_total=total,
                        rate=self._measure(now, done), in_flight=tuple(in_flight),
                        failures=tuple(books.failures),
                        ramp=self.ramp() if self.ramp is not None else None,
                        stall_after=self.stall_after)

    def _measure(self, now: float, done: int) -> float | None:
        """Bytes per second over the last window, with ``done`` bytes at ``now``."""
        samples = self._books.samples
        if not samples or now > samples[-1][0]:
            samples.append((now, done))
        # Keep one sample at or before the window's start: the rate spans it all.
        while len(samples) > 2 and samples[1][0] <= now - self.rate_window:
            samples.popleft()
        first_at, first_done = samples[0]
        if now - first_at < _MIN_SPAN:
            return None
        return max(0.0, (done - first_done) / (now - first_at))

    # rich calls this on each refresh.
    def __rich__(self) -> Group:
        return render(self.snapshot(), max_rows=self.max_rows, width=self._console.width)


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


__all__ = ["InFlight", "ProgressDisplay", "ProgressLine", "RampStep", "Snapshot", "duration",
           "heartbeat_line", "render", "size"]
