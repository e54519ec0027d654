"""Run a module as ``python -m benchmarks.peak MODULE ARGS…`` and report its peak RSS.

The kernel's per-child ``ru_maxrss`` is useless here: Linux carries the
parent's high-water mark across fork and exec, so a child of a benchmark that
built a 256 MiB package "peaks" at 256 MiB before running a line. ``VmHWM``
in ``/proc/self/status`` belongs to the new program alone; we print it on exit.
"""

from __future__ import annotations

import atexit
import runpy
import sys

MARKER = "PEAK_RSS_KIB"


def _report() -> None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write(f"\n{MARKER} {line.split()[1]}\n")


if __name__ == "__main__":
    module, *rest = sys.argv[1:]
    sys.argv = [module, *rest]
    atexit.register(_report)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
