"""Run ``asyncovf`` as a child process and measure it: wall time, CPU, peak RSS.

Peak RSS is the child's own ``VmHWM``, printed by :mod:`benchmarks.peak` as
it exits — the tool's own, not the benchmark driver's (which Linux's
``ru_maxrss`` would carry over) nor vcsim's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peak import MARKER
from tests.vcsim.harness import Vcsim

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    stderr: str


def run_measured(module: str, args: list[str], vcsim: Vcsim | None = None) -> ChildRun:
    env = dict(os.environ)
    if vcsim is not None:
        env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
                   VSPHERE_PASSWORD=vcsim.password)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.peak", module, *args],
                               env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read().decode("utf-8", "replace")  # drains while it runs
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    peaks = [line.split()[1] for line in stderr.splitlines() if line.startswith(MARKER)]
    peak = int(peaks[-1]) / 1024 if peaks else float("nan")
    return ChildRun(process.returncode, seconds, usage.ru_utime + usage.ru_stime, peak, stderr)


def batch_file(directory: Path, source: Path, count: int, name: str = "bench") -> Path:
    path = directory / f"{name}-{count}.yaml"
    path.write_text(
        "defaults:\n"
        f"  source: {source}\n"
        "  cluster: DC0_C0\n"
        "  datastore: LocalDS_0\n"
        "vms:\n"
        f'  - name: "{name}-{count}-{{index:04d}}"\n'
        f"    count: {count}\n"
    )
    return path


def run_batch(vcsim: Vcsim, batch: Path, concurrency: int, *extra: str) -> ChildRun:
    result = run_measured("asyncovf", ["run", str(batch), "--concurrency",
                           str(concurrency), "--progress", "plain", "--ca-file",
                           str(vcsim.ca_file), *extra], vcsim)
    if result.returncode != 0:
        raise SystemExit(f"asyncovf run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


def idle_baseline() -> ChildRun:
    """The floor: the interpreter with the CLI and everything it imports, doing nothing."""
    return run_measured("asyncovf", ["--help"])


__all__ = ["ChildRun", "batch_file", "idle_baseline", "run_batch", "run_measured"]
