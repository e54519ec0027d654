"""SIGINT and SIGTERM at the moments around a run: while the tool loads, and again
and again while an interrupted run shuts down.

The command is the console script's entry, as ``pyproject.toml`` declares it.
Each ends with exit 130 and exactly one "asyncovf: interrupted (SIG…)" line:
never a traceback, never "Exception ignored", never killed by the signal. An
interrupted run still aborts its leases and logs out, however many signals
follow the first.

No test waits for time: the moments are read off the process (its caught
signals in ``/proc/<pid>/status``) and off the simulator's counters.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from tests.faults.support import ROOT, FaultRun, cli_environment
from tests.vcsim.harness import Counters

pytestmark = [pytest.mark.faults]

DEADLINE = 60.0  # seconds for anything to happen; generous, never what a test asserts


def console_command() -> list[str]:
    """What the installed ``asyncovf`` runs, per pyproject.toml's ``[project.scripts]``."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["asyncovf"].split(":")
    return [sys.executable, "-c",
            f"import sys; from {module} import {function}; sys.exit({function}())"]


def caught_signals(pid: int) -> int:
    """The process's caught-signal mask (bit N-1 is signal N); 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def handles(pid: int, signum: int) -> bool:
    return bool(caught_signals(pid) & (1 << (signum - 1)))


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert process.poll() is None, "the process ended before the moment came"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.001)


def signal_until_exit(process: subprocess.Popen[bytes],
                      signals: Iterator[signal.Signals]) -> int:
    """Send ``signals``, one after another, until the process exits; how many went."""
    sent = 0
    deadline = time.monotonic() + DEADLINE
    while process.poll() is None:
        assert time.monotonic() < deadline, f"still running after {sent} signals"
        try:
            process.send_signal(next(signals))
        except ProcessLookupError:
            break
        sent += 1
        time.sleep(0.002)  # a signal every few ms: the process runs between them
    return sent


def assert_one_interrupt(status: int | None, stderr: str, names: tuple[str, ...]) -> None:
    assert status == 130, f"exit {status}: {stderr[-2000:]}"
    lines = [line for line in stderr.splitlines() if line.startswith("asyncovf: interrupted (")]
    assert len(lines) == 1, stderr[-2000:]
    assert any(f"interrupted ({name})" in lines[0] for name in names), lines
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "Exception ignored" not in stderr, stderr[-2000:]


def cycle(*signals: signal.Signals) -> Iterator[signal.Signals]:
    while True:
        yield from signals


# --- while the tool loads ------------------------------------------------------


def start_loading(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """The console script with a batch that does not exist: a run that got past
    loading the tool would end with exit 2 and the error, not with 130. Returns
    once the process catches SIGTERM: the console's handlers are in place (SIGINT
    is taken first), and the tool is loading."""
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [*console_command(), "run", str(tmp_path / "missing.yaml"),
             "--server", "https://127.0.0.1:9", "--user", "u", "--password", "p"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)
    wait_for(lambda: handles(process.pid, signal.SIGTERM), process)
    return process, stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_the_tool_loads_ends_it_with_130_and_one_line(
    tmp_path: Path, sig: signal.Signals,
) -> None:
    process, stderr = start_loading(tmp_path)
    assert handles(process.pid, signal.SIGINT)
    process.send_signal(sig)
    status = process.wait(timeout=DEADLINE)
    text = stderr.read_text()
    assert_one_interrupt(status, text, (sig.name,))
    assert "missing.yaml" not in text  # stopped before the command started


def test_signal_after_signal_from_the_moment_the_handlers_are_in_place_to_the_exit(
    tmp_path: Path,
) -> None:
    process, stderr = start_loading(tmp_path)
    sent = signal_until_exit(process, cycle(signal.SIGINT, signal.SIGTERM))
    assert sent >= 1
    assert_one_interrupt(process.wait(timeout=DEADLINE), stderr.read_text(),
                         ("SIGINT", "SIGTERM"))


# --- while an interrupted run shuts down ---------------------------------------


@contextmanager
def started_run(run: FaultRun, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``asyncovf run`` of two VMs whose leases never become ready, against the
    simulator: the process and its stderr file; killed at the end if still running."""
    batch = tmp_path / "batch.yaml"
    batch.write_text(f"defaults:\n  source: {run.package_path}\n  cluster: DC0_C0\n"
                     f"  datastore: LocalDS_0\n"
                     f'vms:\n  - name: "{run.prefix}-{{index}}"\n    count: 2\n')
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [*console_command(), "run", str(batch), "--ca-file", str(run.vcsim.ca_file),
             "--concurrency", "2", "--progress", "plain", "--report",
             str(tmp_path / "report.json")],
            env=cli_environment(run), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        yield process, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_counters(run: FaultRun, process: subprocess.Popen[bytes],
                      condition: Callable[[Counters], bool]) -> None:
    wait_for(lambda: condition(run.vcsim.counters()), process)


async def check_nothing_left(run: FaultRun) -> None:
    counters = await run.settled()
    assert counters.leases_open == 0, "a lease is still open"
    assert counters.sessions_live == 0, "a session was not logged out"
    assert counters.ok("Login") == counters.ok("Logout")
    assert counters.started("HttpNfcLeaseAbort") >= 1


def interrupt_while_aborting(run: FaultRun, tmp_path: Path, first: signal.Signals,
                             then: signal.Signals) -> tuple[int, str]:
    """The first signal once both leases wait; two more while an Abort is held."""
    run.vcsim.set_faults(lease={"initializing_reads": 1_000_000},
                         soap=[{"method": "HttpNfcLeaseAbort", "delay_ms": 2000}])
    with started_run(run, tmp_path) as (process, stderr):
        wait_for_counters(run, process, lambda c: c.leases_created >= 2)
        process.send_signal(first)
        wait_for_counters(run, process,
                          lambda c: c.started("HttpNfcLeaseAbort") > c.calls("HttpNfcLeaseAbort"))
        process.send_signal(then)
        process.send_signal(then)
        return process.wait(timeout=DEADLINE), stderr.read_text()


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(("first", "then"), [
    (signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM),
    (signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT),
], ids=lambda s: s.name)
async def test_a_second_and_third_signal_while_leases_are_aborted_are_absorbed(
    fault_run: FaultRun, tmp_path: Path, first: signal.Signals, then: signal.Signals,
) -> None:
    status, stderr = await anyio.to_thread.run_sync(
        interrupt_while_aborting, fault_run, tmp_path, first, then)
    assert_one_interrupt(status, stderr, (first.name,))
    await check_nothing_left(fault_run)


def interrupt_until_exit(run: FaultRun, tmp_path: Path, sig: signal.Signals) -> tuple[int, str]:
    """The first signal once both leases wait, then one every few milliseconds:
    through the aborts, the (slow) logouts, the report, the "interrupted" line and
    the event loop's closing, to the exit."""
    run.vcsim.set_faults(lease={"initializing_reads": 1_000_000},
                         soap=[{"method": "Logout", "delay_ms": 300}])
    with started_run(run, tmp_path) as (process, stderr):
        wait_for_counters(run, process, lambda c: c.leases_created >= 2)
        signal_until_exit(process, cycle(sig))
        return process.wait(timeout=DEADLINE), stderr.read_text()


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
async def test_signals_from_the_first_to_the_exit_leave_one_line_and_nothing_behind(
    fault_run: FaultRun, tmp_path: Path, sig: signal.Signals,
) -> None:
    status, stderr = await anyio.to_thread.run_sync(interrupt_until_exit, fault_run,
                                                    tmp_path, sig)
    assert_one_interrupt(status, stderr, (sig.name,))
    assert (tmp_path / "report.json").exists()
    await check_nothing_left(fault_run)
