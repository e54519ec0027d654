"""The progress display, on a fake clock: what it says of a run, and that it fits.

Drawing is a pure function of a :class:`Snapshot`; the display's books come from
:meth:`ProgressDisplay.update` alone. No test reads the wall clock or races a
sleep: time is a number the test moves.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest
from rich.cells import cell_len
from rich.console import Console

from asyncovf.engine.batch import JobResult, JobStatus
from asyncovf.engine.phases import JobState, Phase
from asyncovf.engine.plan import JobSpec
from asyncovf.progress import (
    InFlight,
    ProgressDisplay,
    Snapshot,
    duration,
    heartbeat_line,
    render,
)
from asyncovf.vsphere.inventory import PlacementRequest

MiB = 2**20


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def job(index: int, name: str | None = None, source: str = "a.ova") -> JobResult:
    return JobResult(JobSpec(index=index, name=name or f"web-{index:03d}", source=source,
                             placement=PlacementRequest(cluster="C"), origin="test"))


def start(display: ProgressDisplay, result: JobResult, clock: Clock, *, total: int = 0,
          done: int = 0, phase: Phase = Phase.UPLOAD) -> None:
    result.status = JobStatus.RUNNING
    result.started = clock.now
    result.attempts = 1
    result.state = JobState(name=result.name, phase=phase, bytes_total=total, bytes_done=done)
    display.update(result)


def progress(display: ProgressDisplay, result: JobResult, done: int) -> None:
    assert result.state is not None
    result.state.bytes_done = done
    display.update(result)


def finish(display: ProgressDisplay, result: JobResult, clock: Clock, status: JobStatus,
           *, error: str | None = None) -> None:
    result.bytes = result.state.bytes_done if result.state else 0
    result.status, result.error, result.finished = status, error, clock.now
    result.state = None
    display.update(result)


def plain(results: list[JobResult], clock: Clock, **kwargs: object) -> tuple[ProgressDisplay,
                                                                                io.StringIO]:
    stream = io.StringIO()
    display = ProgressDisplay(results, stream=stream, live=False, clock=clock,
                              **kwargs)  # type: ignore[arg-type]
    return display, stream


def lines_of(snapshot: Snapshot, width: int = 80) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(render(snapshot, width=width))
    return capture.get().splitlines()


# -- the ETA is from bytes, not jobs ------------------------------------------------------------

def test_the_eta_is_the_bytes_left_over_the_measured_rate() -> None:
    clock = Clock()
    results = [job(i) for i in range(4)]
    display, _ = plain(results, clock, heartbeat=0)
    with display:
        start(display, results[0], clock, total=100 * MiB)
        start(display, results[1], clock, total=100 * MiB)
        clock.now += 5
        progress(display, results[0], 100 * MiB)
        finish(display, results[0], clock, JobStatus.IMPORTED)
        progress(display, results[1], 50 * MiB)
        clock.now += 5
        snapshot = display.snapshot()
    # Four jobs of one source, 100 MiB each: a job not started yet counts as its source's size.
    assert (snapshot.bytes_done, snapshot.bytes_total) == (150 * MiB, 400 * MiB)
    assert snapshot.rate == pytest.approx(15 * MiB)
    assert snapshot.eta == pytest.approx(250 / 15)  # one job of four in 10 s would say 30 s
    assert snapshot.elapsed == 10 and snapshot.done == 1


def test_the_eta_is_unknown_until_a_rate_is_measured() -> None:
    snapshot = Snapshot(elapsed=1, jobs=2, finished={}, bytes_done=0, bytes_total=MiB, rate=None)
    assert snapshot.eta is None and duration(snapshot.eta) == "—"
    assert "ETA —" in heartbeat_line(snapshot)
    stalled = Snapshot(elapsed=60, jobs=2, finished={}, bytes_done=0, bytes_total=MiB, rate=0.0)
    assert stalled.eta is None


def test_the_rate_follows_the_last_window_not_the_whole_run() -> None:
    clock = Clock()
    results = [job(0)]
    display, _ = plain(results, clock, heartbeat=0, rate_window=20.0)
    with display:
        start(display, results[0], clock, total=10_000 * MiB)
        for second in range(1, 61):  # 100 MiB/s for a minute, then 10 MiB/s
            clock.now += 1
            progress(display, results[0], second * 100 * MiB)
            display.snapshot()
        sent = 6000 * MiB
        for _ in range(30):
            clock.now += 1
            sent += 10 * MiB
            progress(display, results[0], sent)
            display.snapshot()
        snapshot = display.snapshot()
    assert snapshot.rate == pytest.approx(10 * MiB)
    assert snapshot.eta == pytest.approx((10_000 * MiB - sent) / (10 * MiB))


def test_sizes_unknown_yet_are_estimated_by_source_then_by_the_average() -> None:
    clock = Clock()
    results = [job(0, source="big.ova"), job(1, source="big.ova"), job(2, source="small.ova"),
               job(3, source="other.ova")]
    display, _ = plain(results, clock, heartbeat=0)
    with display:
        start(display, results[0], clock, total=300 * MiB)
        start(display, results[2], clock, total=100 * MiB)
        snapshot = display.snapshot()
    # big.ova twice, small.ova once, other.ova unknown: the average of the known ones.
    assert snapshot.bytes_total == (300 + 300 + 100 + 200) * MiB


# -- what it shows ------------------------------------------------------------------------------

def in_flight(name: str, *, still: float = 0.0, done: int = 0, total: int = 100 * MiB,
              running: float = 60.0, phase: str = "upload") -> InFlight:
    return InFlight(name=name, phase=phase, attempt=1, bytes_done=done, bytes_total=total,
                    running=running, still=still)


def test_stalled_jobs_come_first_then_the_slowest() -> None:
    snapshot = Snapshot(
        elapsed=120, jobs=10, finished={"imported": 2}, bytes_done=0, bytes_total=0, rate=None,
        in_flight=(in_flight("fast", done=90 * MiB), in_flight("slow", done=10 * MiB),
                   in_flight("waiting", phase="lease_wait"),
                   in_flight("stuck", still=45, done=50 * MiB),
                   in_flight("stuck-longer", still=90, done=80 * MiB)),
        stall_after=30)
    assert [j.name for j in snapshot.ordered()] == ["stuck-longer", "stuck", "slow", "fast",
                                                    "waiting"]
    lines = lines_of(snapshot)
    rows = [line.split()[0] for line in lines[4:9]]
    assert rows == ["stuck-longer", "stuck", "slow", "fast", "waiting"]
    assert lines[2] == "5 running  2 stalled" and lines[4].rstrip().endswith("1m30s")
    assert "(2 stalled)" in heartbeat_line(snapshot)


def test_a_job_that_stops_moving_is_stalled_after_n_seconds() -> None:
    clock = Clock()
    results = [job(0), job(1)]
    display, _ = plain(results, clock, heartbeat=0, stall_after=30.0)
    with display:
        start(display, results[0], clock, total=100 * MiB)
        start(display, results[1], clock, total=100 * MiB)
        for _ in range(40):
            clock.now += 1
            progress(display, results[0], results[0].state.bytes_done + MiB)  # type: ignore[union-attr]
        progress(display, results[1], 0)  # an update that moves nothing
        snapshot = display.snapshot()
    stalled = [j.name for j in snapshot.in_flight if snapshot.stalled(j)]
    assert stalled == ["web-001"] and snapshot.ordered()[0].name == "web-001"
    assert snapshot.ordered()[0].still == 40


def test_the_display_shows_elapsed_bytes_done_of_total_ramp_and_eta() -> None:
    snapshot = Snapshot(elapsed=245, jobs=200, finished={"imported": 10, "failed": 1},
                        bytes_done=3 * 2**30, bytes_total=12 * 2**30, rate=40 * MiB,
                        ramp=(2, 4, 16))
    assert lines_of(snapshot) == [
        "11/200 jobs  10 imported  1 failed",
        "4m05s elapsed  3.00 GiB of 12.00 GiB  40.0 MiB/s  ETA 3m50s",
        "0 running  ramp 2/4: 16 workers"]
    assert heartbeat_line(snapshot) == (
        "progress: 4m05s elapsed, 11/200 jobs (1 failed), 0 running, 3072/12288 MiB, "
        "40.0 MiB/s, ETA 3m50s, ramp 2/4: 16 workers")


def test_the_last_three_failures_are_shown_one_line_each() -> None:
    clock = Clock()
    results = [job(i) for i in range(5)]
    display, _ = plain(results, clock, heartbeat=0)
    with display:
        for result in results:
            start(display, result, clock)
            finish(display, result, clock, JobStatus.FAILED,
                   error=f"lease for {result.name} not ready\nafter 300 s")
        snapshot = display.snapshot()
    assert snapshot.failures == tuple(f"web-00{i}: lease for web-00{i} not ready\nafter 300 s"
                                      for i in (2, 3, 4))
    failures = [line for line in lines_of(snapshot) if line.startswith("failed ")]
    assert failures == [f"failed web-00{i}: lease for web-00{i} not ready\\nafter 300 s"
                        for i in (2, 3, 4)]


HOSTILE = "[bold]evil\x1b]52;c;aGk=\x07" + "\u202e" + "x" * 200 + "漢字" * 30


def test_everything_fits_80_columns_and_untrusted_text_is_escaped() -> None:
    snapshot = Snapshot(
        elapsed=100_000, jobs=100_000, finished={"imported": 99_000, "skipped": 100,
                                                 "failed": 500, "aborted": 300},
        bytes_done=900 * 2**40, bytes_total=1000 * 2**40, rate=1e12,
        in_flight=tuple(in_flight(HOSTILE + str(i), still=3600 * i, done=10**13,
                                  total=10**14, phase="mark_as_template")
                        for i in range(25)),
        failures=(HOSTILE + ": " + HOSTILE,) * 3, ramp=(10, 12, 1024), stall_after=30)
    lines = lines_of(snapshot)
    assert all(cell_len(line) <= 80 for line in lines), [cell_len(line) for line in lines]
    text = "\n".join(lines)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "[bold]evil\\x1b]52" in text  # shown as written: neither markup nor a control
    assert "… 5 more" in text
    assert sum(1 for line in lines if line.startswith("failed ")) == 3


# -- the plain display --------------------------------------------------------------------------

def test_plain_prints_a_line_per_finished_job_naming_a_replaced_vm() -> None:
    clock = Clock()
    results = [job(0)]
    display, stream = plain(results, clock, heartbeat=0)
    with display:
        start(display, results[0], clock, total=MiB, done=MiB)
        clock.now += 2
        results[0].vm, results[0].replaced = "vm-77", "vm-12"
        finish(display, results[0], clock, JobStatus.IMPORTED)
    assert stream.getvalue() == "[1/1] web-000: imported vm-77 (replaced vm-12) 1.0 MiB 2.00 s\n"


def test_plain_heartbeat_comes_from_updates_once_due() -> None:
    clock = Clock()
    results = [job(0), job(1)]
    display, stream = plain(results, clock, heartbeat=10.0)
    with display:
        start(display, results[0], clock, total=100 * MiB)
        for second in range(1, 26):
            clock.now += 1
            progress(display, results[0], second * 2 * MiB)
    beats = stream.getvalue().splitlines()
    assert beats == [
        "progress: 10s elapsed, 0/2 jobs, 1 running, 20/200 MiB, 2.0 MiB/s, ETA 1m30s",
        "progress: 20s elapsed, 0/2 jobs, 1 running, 40/200 MiB, 2.0 MiB/s, ETA 1m20s",
    ]


@pytest.mark.anyio
async def test_plain_heartbeat_is_steady_while_nothing_moves() -> None:
    """``async with``: the heartbeat keeps its own time, with no update to carry it."""
    clock = Clock()
    results = [job(0)]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 3:
            await anyio.sleep_forever()
        clock.now += seconds + 0.5  # a late wake-up must not shift the schedule

    display, stream = plain(results, clock, heartbeat=10.0, sleep=sleep)
    async with display:
        start(display, results[0], clock, total=100 * MiB, phase=Phase.LEASE_WAIT)
        while len(slept) <= 3:
            await anyio.lowlevel.checkpoint()
    beats = stream.getvalue().splitlines()
    assert [beat.split(",")[0] for beat in beats] == [
        "progress: 10s elapsed", "progress: 20s elapsed", "progress: 30s elapsed"]
    assert slept == [10.0, 9.5, 9.5, 9.5]
    assert all("ETA —" in beat for beat in beats)


@pytest.mark.anyio
async def test_an_error_in_the_run_passes_through_the_heartbeat() -> None:
    display, _ = plain([job(0)], Clock(), heartbeat=10.0)
    with pytest.raises(KeyError):
        async with display:
            raise KeyError("boom")


def test_a_live_display_draws_from_its_snapshot() -> None:
    clock = Clock()
    results = [job(0), job(1)]
    stream = io.StringIO()
    display = ProgressDisplay(results, stream=stream, live=True, clock=clock,
                              ramp=lambda: (1, 3, 4))
    start(display, results[0], clock, total=100 * MiB, done=10 * MiB)
    console = Console(file=io.StringIO(), width=80, color_system=None)
    with console.capture() as capture:
        console.print(display)
    text = capture.get()
    assert "0/2 jobs" in text and "ramp 1/3: 4 workers" in text and "web-000" in text


@pytest.mark.anyio
async def test_a_cancelled_run_stops_its_heartbeat_and_is_cancelled() -> None:
    async def sleep(_: float) -> None:
        await anyio.sleep_forever()

    display, stream = plain([job(0)], Clock(), heartbeat=10.0, sleep=sleep)
    with anyio.CancelScope() as scope:
        async with display:
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught and stream.getvalue() == ""
