"""SIGINT and SIGTERM to ``asyncovf run`` at randomized points across the import lifecycle.

Each point is a real subprocess run against its own lane's simulator. The
point is a lifecycle event, chosen at random from a seed: start-up (the
batch file is a pipe, so the test knows when the tool reads it: the signal
comes while it does, or a random moment after), a Login, CreateImportSpec,
ImportVApp or the finished mark's ReconfigVM_Task in flight (the harness holds
that one call 400 ms), a lease waiting to be ready, an upload moving (throttled; the
signal when the server has read a random number of bytes), a Complete in
flight, a finished import, a Logout in flight. The harness's counters say
when the event happened; the signal follows at once.

After every point: exit status 130, "interrupted (SIG…)" on stderr and no
traceback, the report written (once the run had started) with every job
imported or aborted, and the invariants on the server's side: Login =
Logout, no session left, ImportVApp = Complete + Abort, no lease open, and
exactly the VMs the report calls imported in the inventory.

A run always has one job whose lease never becomes ready (the "anchor"), so
no run can finish before its signal: every point is a real interruption.

Reproduce a run with ``ASYNCOVF_SIGNAL_SEED=<seed>`` (every failure names it).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncovf.vsphere.connection import ConnectionSettings
from tests.factory import DiskSpec, build_package
from tests.integration.inspect import list_vms
from tests.vcsim.harness import Counters, Vcsim, start_vcsim

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
LANES = 3  # simulators, each running its share of the points one after another
JOBS = 5  # per run, the last one being the anchor
HOLD_MS = 400  # how long the harness holds the call a point waits for
KINDS = ("startup", "login", "spec", "import", "lease_wait", "upload", "complete", "mark",
         "imported", "logout")


def seed_from_environment() -> int:
    text = os.environ.get("ASYNCOVF_SIGNAL_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**31)


@dataclass
class Point:
    """One interrupted run: where the signal lands, and what came of it."""

    number: int
    kind: str
    signal: signal.Signals
    concurrency: int
    nth: int  # which call, lease, byte count or import the point waits for
    pause: float  # extra seconds after the event
    fraction: float  # upload: how far into the nth upload; startup: < 0.5 while reading
    prefix: str = ""
    problems: list[str] = field(default_factory=list)
    observed: str = ""
    run_started: bool = False  # a Login had been sent when the signal went

    def describe(self) -> str:
        event = f"{self.kind} #{self.nth}"
        if self.kind == "startup":
            if self.fraction < 0.5:
                return (f"point {self.number}: {self.signal.name} at startup, reading the "
                        f"batch, concurrency {self.concurrency}")
            event = "startup, batch read"
        elif self.kind == "upload":
            event += f" at {self.fraction:.0%}"
        return (f"point {self.number}: {self.signal.name} at {event} (+{self.pause:.3f} s), "
                f"concurrency {self.concurrency}")


def plan_points(seed: int, count: int, sig: signal.Signals) -> list[Point]:
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]  # every kind, several times
    rng.shuffle(kinds)
    points = []
    for number, kind in enumerate(kinds):
        pause = rng.uniform(0.0, 0.3) if kind == "startup" else rng.uniform(0.0, 0.05)
        concurrency = rng.randint(1, 3)
        nth = rng.randint(1, JOBS - 1)
        if kind == "login":
            nth = rng.randint(1, concurrency)  # each worker logs in once
        elif kind == "spec":
            nth = 1  # once per group: the first job asks, the others wait for its answer
        elif kind == "logout":
            # Workers log out when the jobs run out; the anchor's never does by itself.
            concurrency = rng.randint(2, 3)
            nth = rng.randint(1, concurrency - 1)
        points.append(Point(number=number, kind=kind, signal=sig, concurrency=concurrency,
                            nth=nth, pause=pause, fraction=rng.uniform(0.05, 0.9),
                            prefix=f"sig{seed % 10_000}-{number:02d}"))
    return points


def faults_for(point: Point, anchor: str) -> dict[str, Any]:
    """The harness rules of a point: the anchor, and the hold its event needs."""
    method = {"login": "Login", "spec": "CreateImportSpec", "import": "ImportVApp",
              "complete": "HttpNfcLeaseComplete", "mark": "ReconfigVM_Task",
              "logout": "Logout"}.get(point.kind)
    soap = [{"method": method, "nth": point.nth, "delay_ms": HOLD_MS}] if method else []
    # Throttled uploads: a signal mid-upload has plenty of room to land.
    nfc = [{"throttle_bps": 400_000}] if point.kind == "upload" else []
    return {"soap": soap, "nfc": nfc,
            "lease": {"vm": anchor, "initializing_reads": 1_000_000}}


def trigger_for(point: Point, disk_bytes: int) -> Callable[[Counters], bool]:
    """When the point's event has happened, judged by the harness's counters."""
    held = {"login": "Login", "spec": "CreateImportSpec", "import": "ImportVApp",
            "complete": "HttpNfcLeaseComplete", "mark": "ReconfigVM_Task", "logout": "Logout"}
    if point.kind in held:
        method = held[point.kind]
        return lambda c: c.delayed(method) >= 1 and c.started(method) > c.calls(method)
    if point.kind == "lease_wait":
        return lambda c: c.leases_created >= point.nth + 1  # the anchor's, or a later one
    if point.kind == "upload":
        # Somewhere inside one of the first nth uploads (never past the last byte).
        target = int(disk_bytes * (point.nth - 1 + point.fraction))
        return lambda c: c.nfc_bytes >= target
    if point.kind == "imported":
        return lambda c: c.ok("HttpNfcLeaseComplete") >= point.nth
    raise AssertionError(f"no trigger for {point.kind}")  # startup: see _signal_at_startup


class Lane:
    """One simulator and the points it runs, one after another."""

    def __init__(self, directory: Path, disk_bytes: int) -> None:
        self.directory = directory
        self.disk_bytes = disk_bytes
        self.vcsim: Vcsim = start_vcsim()
        self.sessions_before = 0
        self.connection = ConnectionSettings(
            server=self.vcsim.url, username=self.vcsim.username,
            password=self.vcsim.password, ca_file=str(self.vcsim.ca_file))

    def close(self) -> None:
        self.vcsim.stop()

    def run(self, point: Point) -> None:
        try:
            self._run(point)
        except Exception as exc:  # a broken point is a failure, not a crash of the lane
            point.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.vcsim.reset_counters()

    def _run(self, point: Point) -> None:
        anchor = f"{point.prefix}-{JOBS}"
        batch = self.directory / f"{point.prefix}.yaml"
        report = self.directory / f"{point.prefix}.json"
        text = (f'defaults:\n  source: ./photon.ova\n  cluster: DC0_C0\n  datastore: LocalDS_0\n'
                f'vms:\n  - name: "{point.prefix}-{{index}}"\n    count: {JOBS}\n')
        if point.kind == "startup":
            # The batch file is a pipe: once the tool opens it, it is up and
            # reading its input. (Before that, the interpreter itself starts.)
            os.mkfifo(batch)
        else:
            batch.write_text(text)
        self.vcsim.reset_counters()
        # Sessions logged in and not out survive a reset: count this run's only.
        self.sessions_before = self.vcsim.counters().sessions_live
        self.vcsim.set_faults(**faults_for(point, anchor))
        env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
        env.update(VSPHERE_SERVER=self.vcsim.url, VSPHERE_USER=self.vcsim.username,
                   VSPHERE_PASSWORD=self.vcsim.password)
        process = subprocess.Popen(
            [sys.executable, "-m", "asyncovf", "run", str(batch), "--ca-file",
             str(self.vcsim.ca_file), "--concurrency", str(point.concurrency), "--report",
             str(report), "--progress", "plain"],
            env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if point.kind == "startup":
                reached = self._signal_at_startup(point, process, batch, text)
            else:
                reached = self._wait_for(trigger_for(point, self.disk_bytes), process)
                if reached:
                    time.sleep(point.pause)
                    self._signal(point, process)
            if not reached:
                process.kill()
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        if not reached:
            point.problems.append(f"the event never happened; exit {process.returncode}: "
                                  f"{stderr[-1500:]}")
            return
        self._check(point, process.returncode, stdout, stderr, report)

    def _signal(self, point: Point, process: subprocess.Popen[str]) -> None:
        counters = self.vcsim.counters()
        point.run_started = counters.started("Login") > 0
        point.observed = (f"Login {counters.calls('Login')}/{counters.started('Login')}, "
                          f"ImportVApp {counters.calls('ImportVApp')}, "
                          f"NFC {counters.nfc_bytes} B, "
                          f"Complete {counters.calls('HttpNfcLeaseComplete')}")
        if process.poll() is not None:
            point.problems.append("the run ended before the signal")
        process.send_signal(point.signal)

    def _signal_at_startup(self, point: Point, process: subprocess.Popen[str], batch: Path,
                           text: str) -> bool:
        """Signal while the batch file is read, or a moment after it was."""
        deadline = time.monotonic() + 20
        while True:
            try:  # succeeds once the tool has the pipe open for reading
                fd = os.open(batch, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
        with os.fdopen(fd, "w") as pipe:
            if point.fraction < 0.5:
                self._signal(point, process)  # while reading the batch
            pipe.write(text)
        if point.fraction >= 0.5:
            time.sleep(point.pause)  # opening sources, starting workers, logging in…
            self._signal(point, process)
        return True

    def _wait_for(self, trigger: Callable[[Counters], bool],
                  process: subprocess.Popen[str]) -> bool:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            if trigger(self.vcsim.counters()):
                return True
            time.sleep(0.01)
        return False

    def _check(self, point: Point, status: int | None, stdout: str, stderr: str,
               report: Path) -> None:
        problems = point.problems
        if status != 130:
            problems.append(f"exit status {status}, not 130")
        if f"interrupted ({point.signal.name})" not in stderr:
            problems.append(f"stderr does not say 'interrupted ({point.signal.name})'")
        if "Traceback" in stderr:
            problems.append("a traceback on stderr")
        imported: set[str] = set()
        if report.exists():
            data = json.loads(report.read_text())
            if data["run"]["interrupted"] != point.signal.name:
                problems.append(f"report: interrupted = {data['run']['interrupted']!r}")
            statuses = {job["name"]: job["status"] for job in data["jobs"]}
            if len(statuses) != JOBS or not set(statuses.values()) <= {"imported", "aborted"}:
                problems.append(f"report: job statuses {statuses}")
            if statuses.get(f"{point.prefix}-{JOBS}") != "aborted":
                problems.append("report: the anchor job was not aborted")
            imported = {name for name, s in statuses.items() if s == "imported"}
        elif point.kind != "startup" or point.run_started:
            problems.append("no report, though the run had started")
        counters = self._settled()
        if counters.sessions_live != self.sessions_before:
            problems.append(f"{counters.sessions_live - self.sessions_before} session(s) not "
                            "logged out")
        if counters.ok("Login") != counters.ok("Logout"):
            problems.append(f"Login {counters.ok('Login')} != Logout {counters.ok('Logout')}")
        if counters.leases_open:
            problems.append(f"{counters.leases_open} lease(s) still open")
        ended = counters.ok("HttpNfcLeaseComplete") + counters.ok("HttpNfcLeaseAbort")
        if counters.ok("ImportVApp") != ended:
            problems.append(f"ImportVApp {counters.ok('ImportVApp')} != Complete + Abort "
                            f"{ended}")
        names = {vm.name for vm in anyio.run(list_vms, self.connection)
                 if vm.name.startswith(point.prefix + "-")}
        if names != imported:
            problems.append(f"inventory {sorted(names)} != imported {sorted(imported)}")
        if problems:
            problems.append(f"stderr: {stderr[-1200:]}")

    def _settled(self) -> Counters:
        """Counters once no call is in flight in the simulator (held calls finish late)."""
        deadline = time.monotonic() + 10
        while True:
            counters = self.vcsim.counters()
            if all(m.get("started", 0) <= m.get("calls", 0) for m in counters.methods.values()) \
                    or time.monotonic() > deadline:
                return counters
            time.sleep(0.02)


def run_points(tmp_path: Path, points: list[Point]) -> list[Point]:
    package = build_package(tmp_path, "photon", disks=(DiskSpec(16, 128 * 1024),))
    with tarfile.open(package.path) as tar:
        disk_bytes = tar.getmember(package.disk_names[0]).size  # what one import uploads
    lanes: list[Lane] = []
    lock = threading.Lock()

    def lane_work(index: int) -> None:
        directory = tmp_path / f"lane{index}"
        directory.mkdir()
        (directory / "photon.ova").symlink_to(tmp_path / "photon.ova")
        lane = Lane(directory, disk_bytes)
        with lock:
            lanes.append(lane)
        for point in points[index::LANES]:
            lane.run(point)

    try:
        with ThreadPoolExecutor(LANES) as pool:
            for future in [pool.submit(lane_work, i) for i in range(LANES)]:
                future.result()
    finally:
        for lane in lanes:
            lane.close()
    return points


def check_points(seed: int, points: list[Point]) -> None:
    print(f"ASYNCOVF_SIGNAL_SEED={seed}")
    for point in points:
        print(f"{point.describe()}: {'; '.join(point.problems) or 'ok'} [{point.observed}]")
    failed = [p for p in points if p.problems]
    assert not failed, (
        f"ASYNCOVF_SIGNAL_SEED={seed}: {len(failed)} of {len(points)} points failed:\n"
        + "\n".join(f"  {p.describe()}: {'; '.join(p.problems)}" for p in failed))


def test_sigint_at_24_random_points_leaves_nothing_behind(tmp_path: Path) -> None:
    seed = seed_from_environment()
    with seed_named_on_failure(seed):
        points = run_points(tmp_path, plan_points(seed, 24, signal.SIGINT))
    check_points(seed, points)


def test_sigterm_is_treated_like_sigint_at_20_random_points(tmp_path: Path) -> None:
    seed = seed_from_environment()
    with seed_named_on_failure(seed):
        points = run_points(tmp_path, plan_points(seed + 1, 20, signal.SIGTERM))
    check_points(seed, points)


@contextlib.contextmanager
def seed_named_on_failure(seed: int) -> Iterator[None]:
    """A run that breaks before its points are checked still names its seed."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"ASYNCOVF_SIGNAL_SEED={seed} reproduces this run")
        raise
