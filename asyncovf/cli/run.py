"""``asyncovf run BATCH``: every VM of a batch file through a bounded pool, or its dry run."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Final

import anyio

from asyncovf.cli.exits import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    exit_code_for,
    exit_status,
)
from asyncovf.cli.groups import (
    RunFlags,
    _bandwidth,
    _concurrency,
    _error_rate_limit,
    _non_negative_int,
    _positive_float,
    _positive_int,
    _ramp,
    _size,
    add_connection_options,
    add_debug_options,
    add_source_limits,
    add_threshold_option,
    connection_settings,
    run_settings,
    source_settings,
)
from asyncovf.cli.output import (
    announce_interrupt,
    report_error,
    report_missed_thresholds,
    unless_unread,
)
from asyncovf.cli.watching import Watching, add_watch_options, run_watched
from asyncovf.engine.batch import JobStatus
from asyncovf.engine.dryrun import dry_run
from asyncovf.engine.options import STRATEGIES, RunSettings
from asyncovf.engine.plan import BatchPlan, load_batch, parse_shard
from asyncovf.engine.run import BatchRun, open_sources
from asyncovf.errors import AsyncOvfError, InputError, UsageError
from asyncovf.interrupt import run_until_signal
from asyncovf.ovf.package import Package
from asyncovf.printable import printable
from asyncovf.progress import ProgressDisplay
from asyncovf.quantity import quantity
from asyncovf.report import (
    RunInfo,
    build_report,
    pull_warnings,
    seed_lines,
    summary_table,
    totals_line,
    write_report,
)
from asyncovf.vsphere.connection import ConnectionSettings

#: How a batch words the flags it shares with ``import``.
FLAGS: Final = RunFlags(
    job_retries_default=1,
    parallel_disks="upload up to N disks of one VM at once (never with delta disks; default 1)",
    lease_timeout="how long to wait for a lease to become ready (default 300)",
    keep_failed="leave half-imported VMs in place after failures",
    no_verify_manifest="do not check manifest digests while uploading",
    create_folders="create missing VM folders the batch names",
    on_conflict="when a VM of that name exists (default fail)",
    job_retries="retry a failed job from scratch N times (default %(default)s)",
    report="write the JSON run report here",
    pull="let the ESXi hosts fetch the disks from http(s) sources themselves; the "
         "manifest's digests are then not checked (a job's pull: key wins)",
)


#: Set by Kubernetes in each pod of an Indexed Job: the pod's index, 0-based.
COMPLETION_INDEX: Final = "JOB_COMPLETION_INDEX"
#: Ours, for ``--shard auto``: the number of shards, the Job's ``completions``
#: (Kubernetes does not tell a pod how many there are).
SHARD_COUNT: Final = "ASYNCOVF_SHARD_COUNT"


def shard_option(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``--shard K/N`` as (K, N); ``--shard auto`` from the environment of a pod of
    a Kubernetes Indexed Job: shard ``JOB_COMPLETION_INDEX`` + 1 of
    ``ASYNCOVF_SHARD_COUNT``. Raises InputError, one line naming the variable."""
    if text != "auto":
        return parse_shard(text)
    env = os.environ if environ is None else environ
    index = _whole_number(env, COMPLETION_INDEX, "Kubernetes sets it in each pod of an "
                          "Indexed Job; elsewhere give --shard K/N")
    count = _whole_number(env, SHARD_COUNT, "set it to the Job's completions")
    if count < 1:
        raise InputError(f"--shard auto: {SHARD_COUNT}={count}: there must be at least 1 shard")
    if index >= count:
        raise InputError(f"--shard auto: {COMPLETION_INDEX}={index} is out of range for "
                         f"{SHARD_COUNT}={count} (0 to {count - 1}); set {SHARD_COUNT} to "
                         "the Job's completions")
    return index + 1, count


def _whole_number(env: Mapping[str, str], name: str, hint: str) -> int:
    value = env.get(name, "").strip()
    if not value:
        raise InputError(f"--shard auto: {name} is not set ({hint})")
    shown = printable(value if len(value) <= 40 else value[:40] + "…")
    if not re.fullmatch(r"[0-9]+", value):
        raise InputError(f"--shard auto: {name}='{shown}' is not a whole number")
    if len(value) > 9:
        raise InputError(f"--shard auto: {name}='{shown}' is too large")
    return int(value)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run", help="import every VM of a batch file",
        description="Import the VMs a batch file (YAML, or CSV rows) describes, with a "
                    "bounded pool of workers, each with its own vCenter session.")
    add_debug_options(parser)
    add_source_limits(parser)
    parser.add_argument("batch", help="batch file (.yaml/.yml, or .csv with one VM per row)")
    add_connection_options(parser)
    pool = parser.add_argument_group("pool")
    pool.add_argument("--concurrency", type=_concurrency, default=(8, None),
                      metavar="N|auto[:MAX]",
                      help="workers, each with its own session (default 8); auto: start "
                           "low and follow what vCenter can take, up to MAX (default 64)")
    pool.add_argument("--ramp", type=_ramp, metavar="SCHEDULE",
                      help="load test: grow the workers over the run, e.g. 4:64 (doubling), "
                           "4:64:4 (linear) or 4,8,16,64; overrides --concurrency")
    pool.add_argument("--ramp-interval", type=_positive_float, default=30.0, metavar="SECONDS",
                      help="time at each step of --ramp (default 30)")
    pool.add_argument("--max-per-host", type=_positive_int, metavar="N",
                      help="uploads in flight per ESXi host")
    pool.add_argument("--max-per-datastore", type=_positive_int, metavar="N",
                      help="uploads in flight per datastore")
    pool.add_argument("--bandwidth", type=_bandwidth, metavar="RATE",
                      help="total upload bandwidth, e.g. 200M (bytes/s)")
    FLAGS.add(pool, "--parallel-disks")
    pool.add_argument("--chunk-size", type=_size, metavar="SIZE",
                      help="upload chunk, e.g. 256K (default: 1M, smaller above 16 workers "
                           "to bound memory)")
    pool.add_argument("--shard", metavar="K/N|auto",
                      help="run only shard K of N (1-based, round robin over the file); "
                           f"auto: shard {COMPLETION_INDEX}+1 of {SHARD_COUNT}, as in a "
                           "Kubernetes Indexed Job")
    behaviour = parser.add_argument_group("behaviour")
    FLAGS.add(behaviour, "--on-conflict", "--job-retries")
    behaviour.add_argument("--upload-retries", type=_non_negative_int, default=3, metavar="N",
                           help="retry a failed file upload N times (default 3)")
    behaviour.add_argument("--timeout", type=float, metavar="SECONDS",
                           help="bound the whole run; unfinished jobs are aborted")
    behaviour.add_argument("--job-timeout", type=float, metavar="SECONDS",
                           help="bound each job (including its retries)")
    FLAGS.add(behaviour, "--lease-timeout", "--keep-failed", "--create-folders",
              "--no-verify-manifest", "--pull")
    behaviour.add_argument("--spec-per-vm", action="store_true",
                           help="ask vCenter for every VM's import spec (CreateImportSpec), "
                                "for a load test of that call; by default once per group of "
                                "identical VMs, each VM's spec derived from it")
    behaviour.add_argument("--strategy", choices=STRATEGIES, default="import",
                           help="import every VM (default), or import one seed VM per group "
                                "of identical VMs and clone the others from it (a batch "
                                "entry's strategy: key wins)")
    rate, window = RunSettings.max_error_rate, RunSettings.error_window
    assert rate is not None  # by default the breaker can trip
    behaviour.add_argument("--max-error-rate", type=_error_rate_limit, default=rate,
                           metavar="RATE",
                           help="stop taking new jobs once more than RATE of the last "
                                "--error-window finished jobs failed, and exit 4 (default "
                                f"{rate:g}, i.e. {rate * 100:g}%%; off: never)")
    behaviour.add_argument("--error-window", type=_positive_int, default=window, metavar="N",
                           help="the finished jobs the circuit breaker looks at "
                                f"(default {window})")
    behaviour.add_argument("--dry-run", action="store_true",
                           help="resolve placement, check names and run CreateImportSpec; "
                                "create nothing")
    output = parser.add_argument_group("output")
    FLAGS.add(output, "--report")
    output.add_argument("--progress", choices=["auto", "live", "plain"], default="auto",
                        help="live display (terminal) or plain log lines (default auto)")
    add_threshold_option(output, what="the run")
    add_watch_options(parser)


async def command(args: argparse.Namespace) -> int:
    """``asyncovf run BATCH``: exit 0 all done, 1 any failed, 2 rejected input, 3 a
    ``--threshold`` failed, 130 interrupted."""
    try:
        # Before the file is read: a pod that cannot tell its shard says so at once.
        sharding = shard_option(args.shard) if args.shard else None
        concurrency, adaptive = args.concurrency
        if adaptive is not None and args.ramp:
            raise UsageError("--concurrency auto and --ramp exclude each other: auto finds "
                             "the concurrency itself, a ramp prescribes it")
        # Checked now and then, so that Ctrl-C stops a large file's validation.
        plan = await anyio.to_thread.run_sync(partial(
            load_batch, args.batch, checkpoint=anyio.from_thread.check_cancelled))
        shard = None
        if sharding is not None:
            number, total = sharding
            plan, shard = plan.shard(number, total), f"{number}/{total}"
        connection = connection_settings(args, batch=plan.connection)
    except AsyncOvfError as exc:
        report_error(exc, args.debug)
        return EXIT_USAGE
    if not plan.jobs:
        print(f"asyncovf: shard {shard} of {args.batch} has no jobs", file=sys.stderr)
        return EXIT_OK

    settings = replace(
        run_settings(args, concurrency=concurrency),
        max_per_host=args.max_per_host,
        max_per_datastore=args.max_per_datastore,
        bandwidth=args.bandwidth,
        job_timeout=args.job_timeout,
        upload_attempts=args.upload_retries + 1,
        chunk_size=args.chunk_size,
        ramp=args.ramp or (),
        ramp_interval=args.ramp_interval,
        adaptive=adaptive is not None,
        spec_per_vm=args.spec_per_vm,
        strategy=args.strategy,
        max_error_rate=args.max_error_rate,
        error_window=args.error_window,
    )
    packages, source_errors = await open_sources(plan, verify_manifest=settings.verify_manifest,
                                                 max_descriptor_bytes=args.max_descriptor_size,
                                                 http=source_settings(args))

    if args.dry_run:
        return await _dry_run(args, connection, plan, packages, source_errors, settings)

    return await run_watched(args, partial(_run, args, connection, plan, packages,
                                           source_errors, settings, shard))


async def _run(args: argparse.Namespace, connection: ConnectionSettings, plan: BatchPlan,
               packages: dict[str, Package], source_errors: dict[str, str],
               settings: RunSettings, shard: str | None, watch: Watching) -> int:
    batch = BatchRun(connection, plan, packages, source_errors, settings,
                     watcher=watch.watcher)
    timed_out = False

    async def work() -> None:
        nonlocal timed_out
        # Before the first import: each cause once, naming its VMs. Their jobs fail
        # without an attempt, and without a progress line each. A reader gone
        # (``2>&1 | head``) must not stop the run: its lines are dropped instead.
        say = unless_unread(lambda line: print(line, file=sys.stderr))
        for cause in await batch.check():
            say(f"asyncovf: error: {printable(cause)}")
        display = ProgressDisplay(batch.to_run, live={"auto": None, "live": True,
                                                      "plain": False}[args.progress],
                                  ramp=lambda: batch.runner.ramp_step)
        # A progress line whose reader went away (``2>&1 | head``) must not fail its job.
        batch.on_update = unless_unread(display.update)
        async with display:  # its own timer: the plain heartbeat goes on while nothing moves
            if args.timeout is None:
                await batch.run()
                return
            with anyio.move_on_after(args.timeout) as scope:
                await batch.run()
            timed_out = scope.cancelled_caught

    outcome = await run_until_signal(
        work, on_signal=announce_interrupt("stopping: no new jobs; aborting leases in flight"))
    if outcome.interrupted:
        watch.linger = 0  # the operator wants out, not one more scrape
    # Jobs the run never reached: interrupted, or the checks could not be made.
    batch.settle(None if batch.checked else outcome.error)

    report = build_report(batch.runner, RunInfo(batch=args.batch,
                                                concurrency=settings.concurrency,
                                                shard=shard, interrupted=outcome.signal_name))
    # The report first: a print below that meets a broken pipe ends the command (exit
    # 141), and by then every session is logged out and the report written.
    if args.report:
        write_report(args.report, report)
    print(summary_table(batch.results))
    for line in seed_lines(report):
        print(line)
    print(totals_line(report))
    for warning in pull_warnings(report):
        print(f"asyncovf: warning: {warning}", file=sys.stderr)
    for result in batch.results:
        if result.replaced:  # in live mode only a warning line said so, amid the display
            print(f"replaced {printable(result.name)}: destroyed {printable(result.replaced)}")
    if outcome.error is not None:
        report_error(outcome.error, args.debug)
    if outcome.interrupted:
        print(f"asyncovf: interrupted ({outcome.signal_name})", file=sys.stderr)
    if timed_out:
        print(f"asyncovf: run timeout: stopped after {args.timeout:g} s", file=sys.stderr)
    tripped = batch.runner.breaker.tripped
    if tripped is not None:
        untried = sum(r.error_kind == "not started" for r in batch.results)
        print(f"asyncovf: circuit breaker: {tripped}; took no new job "
              f"({quantity(untried, 'job')} not started)", file=sys.stderr)
    missed = report_missed_thresholds(report, args.threshold)
    failed = [r for r in batch.results if r.status in (JobStatus.FAILED, JobStatus.ABORTED)]
    # Raised by the checks, an error is theirs (a wrong password, an untrusted
    # certificate are our input); raised by the pool, a bug.
    checks_refused = (outcome.error is not None and not batch.checked
                      and exit_code_for(outcome.error) == EXIT_USAGE)
    every_input_refused = bool(failed) and all(r.input_error for r in failed) and not any(
        r.status is JobStatus.IMPORTED for r in batch.results)
    return exit_status(interrupted=outcome.interrupted,
                       rejected=checks_refused or every_input_refused,
                       breaker=tripped is not None, threshold=missed,
                       failed=bool(failed) or timed_out or outcome.error is not None)


async def _dry_run(args: argparse.Namespace, connection: ConnectionSettings, plan: BatchPlan,
                   packages: dict[str, Package], source_errors: dict[str, str],
                   settings: RunSettings) -> int:
    """``run --dry-run``: what would fail, said once per group of alike VMs; nothing is created."""
    outcome = await run_until_signal(
        lambda: dry_run(connection, plan, packages, source_errors, settings))
    if outcome.interrupted:
        print(f"asyncovf: interrupted ({outcome.signal_name})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.error is not None or outcome.value is None:
        report_error(outcome.error or RuntimeError("dry run did not finish"), args.debug)
        return exit_code_for(outcome.error or RuntimeError())
    failing = 0
    for finding in outcome.value:
        names = finding.jobs[0] + (f" … {finding.jobs[-1]} ({len(finding.jobs)} VMs)"
                                   if len(finding.jobs) > 1 else "")
        verdict = "ERROR" if finding.errors else "ok"
        print(f"{verdict:<5} {printable(names)}: {printable(finding.source)} -> "
              f"{printable(finding.placement)}")
        # A cause of the whole group is said once; one of some of its VMs names them.
        for error in finding.errors:
            print(f"      error: {printable(error.describe(finding.jobs))}")
        for warning in finding.warnings:
            print(f"      warning: {printable(warning.describe(finding.jobs))}")
        failing += len(finding.failing)
    print(f"dry run: {quantity(len(plan.jobs), 'VM')} in "
          f"{quantity(len(outcome.value), 'group')}; {failing} would fail; nothing was created")
    return EXIT_USAGE if failing else EXIT_OK


__all__ = ["COMPLETION_INDEX", "FLAGS", "SHARD_COUNT", "add_parser", "command",
           "shard_option"]
