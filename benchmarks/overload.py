"""Imports against an overloaded vCenter: N imports of a 1 MiB OVA at each concurrency.

One simulator started with the launcher's overload model (tests/vcsim/launcher/
overload.go): with n SOAP calls in flight, each call waits ``--ms-per-call`` ×
max(0, n − ``--free-calls``) ms before it is served, and is refused with HTTP
503 when n > ``--limit``. The imports run in-process through
:func:`asyncovf.run_batch`, as ``benchmarks.orchestration`` does, but a failed
job is counted, not an error of the benchmark: the refusals the client did not
retry past fail jobs, and the table says how many. The launcher's counters give
the calls it refused and the most calls it had in flight at once.

Each concurrency runs ``--rounds`` times, each run on a simulator of its own
(one that kept earlier runs' VMs answers slower, and the run that came last
would pay for it), the order turned each round; the table shows each
concurrency's median run. Prints JSON and a Markdown table. Run:
``.venv/bin/python -m benchmarks.overload [--count 120] [--concurrency 4 8 16 64]
[--free-calls 6] [--ms-per-call 40] [--limit 12] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from asyncovf import ConnectionSettings, JobStatus, RunSettings, run_batch
from asyncovf.engine.adaptive import parse_concurrency
from benchmarks.orchestration import plan_for
from tests.factory import DiskSpec, build_package
from tests.vcsim.harness import Vcsim, running_vcsim


def tolerant_run(vcsim: Vcsim, source: Path, count: int, concurrency: str) -> dict[str, Any]:
    """``count`` imports at ``concurrency`` (``N`` or ``auto[:MAX]``), in-process; failed
    jobs counted, not asserted."""
    connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                    password=vcsim.password, ca_file=str(vcsim.ca_file))
    workers, adaptive = parse_concurrency(concurrency)
    plan = plan_for(source, f"o{concurrency.replace(':', '')}", count)
    vcsim.reset_counters()  # zeroes the counters; the flags' overload model stays
    started = time.perf_counter()
    results = anyio.run(run_batch, connection, plan,
                        RunSettings(concurrency=workers, adaptive=adaptive is not None))
    elapsed = time.perf_counter() - started
    counters = vcsim.counters()
    statuses = Counter(r.status.value for r in results)
    imported = statuses[JobStatus.IMPORTED.value]
    failed = len(results) - imported
    kinds = Counter(r.error_kind or "?" for r in results if r.status is not JobStatus.IMPORTED)
    samples: dict[str, str] = {}
    for r in results:
        if r.status is not JobStatus.IMPORTED and r.error:
            samples.setdefault(r.error_kind or "?", r.error[:300])
    return {
        "concurrency": concurrency,
        "jobs": count,
        "imported": imported,
        "failed": failed,
        "statuses": dict(statuses),
        "seconds": round(elapsed, 3),
        "imports_per_s": round(imported / elapsed, 1),
        # Attempts beyond each job's first: the job-level retries (RunSettings.job_retries).
        "job_retries": sum(max(r.attempts - 1, 0) for r in results),
        "soap_calls": counters.total_calls(),
        "calls_refused_503": counters.overload_refused,
        "calls_delayed": counters.overload_delayed,
        "wait_ms_total": round(counters.overload_wait_ms),
        "peak_calls_in_flight": counters.calls_in_flight_peak,
        "sessions_peak": counters.sessions_peak,
        "logins_refused": counters.logins_refused,
        "login_ok": counters.ok("Login"),
        "logout_ok": counters.ok("Logout"),
        "failure_kinds": dict(kinds),
        "failure_samples": samples,
    }


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput, with every run's imports/s beside it."""
    ordered = sorted(runs, key=lambda run: run["imports_per_s"])
    return {**ordered[len(ordered) // 2],
            "imports_per_s_each": [run["imports_per_s"] for run in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--concurrency", nargs="+",
                        default=["4", "8", "16", "32", "64", "auto:64"],
                        help="each N or auto[:MAX] (--concurrency auto)")
    parser.add_argument("--free-calls", type=int, default=6,
                        help="SOAP calls in flight served without waiting (C)")
    parser.add_argument("--ms-per-call", type=float, default=40.0,
                        help="the wait per call in flight past C, ms")
    parser.add_argument("--limit", type=int, default=12,
                        help="refuse a call with HTTP 503 when more than this are in flight")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each concurrency; the table shows each one's median")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    model = ["-overload-free-calls", str(args.free_calls),
             "-overload-ms-per-call", f"{args.ms_per_call:g}", "-overload-limit", str(args.limit)]
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        package = build_package(Path(tmp), "bench", disks=(DiskSpec(16, 1024 * 1024),))
        for number in range(args.rounds):
            # A fresh simulator for each run: one that kept the VMs of the runs before
            # grows slower with them, and the run that comes last would pay for it.
            # The order turns each round, for the same reason.
            order = args.concurrency[number % len(args.concurrency):] + \
                args.concurrency[:number % len(args.concurrency)]
            measured = {}
            for concurrency in order:
                with running_vcsim(extra_args=model) as vcsim:
                    measured[concurrency] = tolerant_run(vcsim, package.path, args.count,
                                                         concurrency)
            rounds.append([measured[c] for c in args.concurrency])
    rows = [median_row([round_[i] for round_ in rounds]) for i in range(len(args.concurrency))]
    result: dict[str, Any] = {
        "count": args.count,
        "rounds": args.rounds,
        "model": {"free_calls": args.free_calls, "ms_per_call": args.ms_per_call,
                  "limit": args.limit},
        "rows": rows,
        "every_round": rounds,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| concurrency | imports/s (median) | each round | failed jobs | calls refused (503) "
          "| peak calls in flight | sessions at peak |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        each = ", ".join(f"{rate:g}" for rate in row["imports_per_s_each"])
        print(f"| {row['concurrency']} | {row['imports_per_s']} | {each} | {row['failed']} | "
              f"{row['calls_refused_503']} | {row['peak_calls_in_flight']} | "
              f"{row['sessions_peak']} |")
    fixed = [row for row in rows if not str(row["concurrency"]).startswith("auto")]
    for row in rows:
        if str(row["concurrency"]).startswith("auto") and fixed:
            best = max(fixed, key=lambda r: r["imports_per_s"])
            print(f"\n{row['concurrency']}: {row['imports_per_s'] / best['imports_per_s']:.0%} "
                  f"of the best fixed concurrency ({best['concurrency']}: "
                  f"{best['imports_per_s']} imports/s)")


if __name__ == "__main__":
    main()
