"""``asyncovf cleanup`` on the command line, before anything reaches vCenter: reports
are arguments (several merge), the old ``--report`` spelling still reads one with a
warning, counts say "1 VM", and the password is asked for on a terminal only.

``--dry-run`` with reports never logs in, so these need no vCenter.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONNECTION_VARIABLES = ("VSPHERE_", "GOVC_", "VMWARE_")


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONNECTION_VARIABLES)}
    env.update(variables)
    return env


CONNECTED = {"VSPHERE_SERVER": "vc.invalid", "VSPHERE_USER": "u", "VSPHERE_PASSWORD": "pw"}


def report(path: Path, *jobs: tuple[str, str, str | None]) -> str:
    path.write_text(json.dumps({"version": 1, "jobs": [
        {"name": name, "status": status, "vm": vm} for name, status, vm in jobs]}))
    return str(path)


def cleanup(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asyncovf", "cleanup", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)


def test_several_reports_given_as_arguments_are_cleaned_up_together(tmp_path: Path) -> None:
    first = report(tmp_path / "r-1.json", ("web-1", "imported", "vm-1"),
                   ("web-2", "failed", None))
    second = report(tmp_path / "r-2.json", ("web-3", "imported", "vm-3"))
    done = cleanup(first, second, "--dry-run", env=environment(**CONNECTED))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{first}, {second}: 2 VMs the run imported; 1 other job left alone",
        "vm-1  web-1",
        "vm-3  web-3",
        "dry run: 2 VMs would be removed; nothing was removed",
    ]


def test_the_old_report_flag_still_reads_a_report_and_warns_that_it_goes(
    tmp_path: Path
) -> None:
    first = report(tmp_path / "r-1.json", ("web-1", "imported", "vm-1"))
    second = report(tmp_path / "r-2.json", ("web-2", "imported", "vm-2"))
    done = cleanup(first, "--report", second, "--dry-run", env=environment(**CONNECTED))
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "asyncovf: WARNING: 'cleanup --report REPORT' is deprecated and goes in the next "
        "release (a flag names a file the command writes); give the reports as arguments: "
        f"asyncovf cleanup {second}\n")
    assert done.stdout.splitlines()[0] == f"{first}, {second}: 2 VMs the run imported"


def test_one_vm_is_counted_in_the_singular(tmp_path: Path) -> None:
    one = report(tmp_path / "r.json", ("web-1", "imported", "vm-1"))
    done = cleanup(one, "--dry-run", env=environment(**CONNECTED))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{one}: 1 VM the run imported"
    assert done.stdout.splitlines()[-1] == "dry run: 1 VM would be removed; nothing was removed"


def test_without_a_terminal_a_missing_password_is_one_line_and_exit_2(tmp_path: Path) -> None:
    one = report(tmp_path / "r.json", ("web-1", "imported", "vm-1"))
    done = cleanup(one, "--dry-run", env=environment(GOVC_URL="https://vc.invalid/sdk",
                                                      GOVC_USERNAME="u"))
    assert done.returncode == 2
    assert done.stderr == ("asyncovf: error: missing --password (or VSPHERE_PASSWORD, "
                           "GOVC_PASSWORD, VMWARE_PASSWORD)\n")


def on_a_terminal(report: str, answer: bytes) -> tuple[int, str]:
    """``asyncovf cleanup REPORT --dry-run`` on a pty, answering its password prompt:
    the exit status and everything the terminal showed."""
    import fcntl
    import pty
    import termios

    leader, follower = pty.openpty()

    def take_terminal() -> None:  # the pty becomes the child's controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        [sys.executable, "-m", "asyncovf", "cleanup", report, "--dry-run"],
        stdin=follower, stdout=follower, stderr=follower, cwd=ROOT, start_new_session=True,
        preexec_fn=take_terminal,
        env=environment(VMWARE_HOST="vc.invalid", VMWARE_USER="u"))
    os.close(follower)
    seen = b""

    def read() -> bytes:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, f"the command is stuck; it showed {seen!r}"
        try:
            return os.read(leader, 1024)
        except OSError:  # EIO: the child has closed the terminal
            return b""

    try:
        while b"password for u at vc.invalid: " not in seen:
            chunk = read()
            assert chunk, seen
            seen += chunk
        os.write(leader, answer)
        while chunk := read():
            seen += chunk
        status = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(leader)
    return status, seen.decode()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="a pty made the controlling terminal with TIOCSCTTY")


@linux_only
def test_on_a_terminal_the_password_is_asked_for_and_not_echoed(tmp_path: Path) -> None:
    one = report(tmp_path / "r.json", ("web-1", "imported", "vm-1"))
    status, shown = on_a_terminal(one, b"typed-secret\n")
    assert status == 0, shown
    assert "dry run: 1 VM would be removed" in shown
    assert "typed-secret" not in shown


@linux_only
def test_ctrl_c_at_the_password_prompt_stops_at_once_with_130(tmp_path: Path) -> None:
    one = report(tmp_path / "r.json", ("web-1", "imported", "vm-1"))
    status, shown = on_a_terminal(one, b"\x03")
    assert status == 130, shown
    assert "interrupted" in shown and "dry run" not in shown


def test_the_old_output_flag_is_read_as_json_and_warns_that_it_goes(tmp_path: Path) -> None:
    one = report(tmp_path / "r.json", ("web-1", "imported", "vm-1"))
    done = cleanup(one, "--output", str(tmp_path / "out.json"), "--dry-run",
                   env=environment(**CONNECTED))
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "asyncovf: WARNING: 'cleanup --output FILE' is deprecated and goes in the next "
        "release (an output flag is named after its format); use --json "
        f"{tmp_path / 'out.json'}\n")
