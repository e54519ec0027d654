"""``asyncovf import SOURCE``: one appliance, through the same worker pool and job as ``run``.

(The module is ``import_``: ``import`` is a keyword.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio

from asyncovf.cli.exits import EXIT_USAGE, exit_code_for, exit_status
from asyncovf.cli.groups import (
    SOURCE_HELP,
    CommandLine,
    RunFlags,
    add_connection_options,
    add_debug_options,
    add_placement_options,
    add_source_limits,
    add_vm_options,
    connection_settings,
    run_settings,
    source_settings,
)
from asyncovf.cli.output import announce_interrupt, report_error
from asyncovf.cli.watching import Watching, add_watch_options, run_watched
from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import (
    OPTIONS,
    Kind,
    RunSettings,
    Stage,
    document_values,
    read_options,
)
from asyncovf.engine.plan import PLACEMENT_KEYS, JobSpec, check_vm_name
from asyncovf.engine.pool import BatchRunner
from asyncovf.engine.pull import PULL_DIGESTS, PULL_NOT_USED
from asyncovf.engine.resolve import check_job
from asyncovf.errors import AsyncOvfError, UsageError
from asyncovf.interrupt import run_until_signal
from asyncovf.ovf.package import Package, check_files
from asyncovf.ovf.source import open_package
from asyncovf.printable import counted, printable
from asyncovf.progress import ProgressLine
from asyncovf.quantity import size
from asyncovf.report import RunInfo, build_report, write_report
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest

log = logging.getLogger(__name__)

#: How one import words the flags it shares with ``run``.
FLAGS: Final = RunFlags(
    job_retries_default=0,
    parallel_disks="upload up to N disks at once (never with delta disks; default 1)",
    lease_timeout="how long to wait for the lease to become ready (default 300)",
    keep_failed="leave a half-imported VM in place after a failure (for debugging)",
    no_verify_manifest="do not check the manifest's digests while uploading",
    create_folders="create the --folder path if it does not exist",
    on_conflict="when a VM of that name exists: fail, skip it if its import finished, or "
                "replace it (default fail)",
    job_retries="retry a failed import from scratch N times (default %(default)s)",
    report="write the JSON run report here (the schema of 'run --report')",
    pull="let the ESXi host fetch the disks from an http(s) source itself; the manifest's "
         "digests are then not checked",
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("import", help="import one OVF directory, .ovf or .ova",
                                 description="Import one appliance into vCenter.")
    add_debug_options(parser)
    add_source_limits(parser)
    parser.add_argument("source", help=SOURCE_HELP)
    parser.add_argument("--name", help="name of the new VM (default: the --options document's "
                                       "Name, else the descriptor's)")
    add_connection_options(parser)
    FLAGS.add(add_placement_options(parser), "--create-folders")
    opts = add_vm_options(parser)[Stage.IMPORT]
    opts.add_argument("--options", metavar="FILE",
                      help="options document (JSON, as 'asyncovf spec' or govc import.spec "
                           "prints); explicit flags win")
    # Listed under "import", after the options of the VM itself.
    FLAGS.add(opts, "--no-verify-manifest", "--keep-failed", "--parallel-disks",
              "--lease-timeout", "--on-conflict", "--job-retries", "--report", "--pull")
    add_watch_options(parser)


def read_options_document(path: str) -> dict[str, Any]:
    """The JSON object of ``--options FILE``, or a one-line UsageError."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as exc:
        raise UsageError(f"--options {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--options {path}:{exc.lineno}: not JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--options {path}: not UTF-8 text: {exc.reason}") from None
    if not isinstance(document, dict):
        raise UsageError(f"--options {path}: expected a JSON object (what 'asyncovf spec' "
                         "prints)")
    return document


def import_job(args: argparse.Namespace, default_name: str) -> JobSpec:
    """The single import as a job: the flags over the ``--options`` document, read
    by the one options reader a batch entry goes through.

    The name: ``--name``, else the options document's ``Name``, else the
    descriptor's (what govc and ovftool do).
    """
    values: dict[str, Any] = {}
    document: dict[str, Any] = {}
    if args.options:
        document = read_options_document(args.options)
        values = document_values(document, lambda key, message: UsageError(
            f"--options {args.options}: {key}: {message}"))
    from_document = set(values)
    for option in OPTIONS:
        given = getattr(args, option.key, None) if option.has_flag else None
        if given is not None:
            values[option.key] = dict(given) if option.kind is Kind.PAIRS else given
            from_document.discard(option.key)
    options = read_options(values, CommandLine(args.options, frozenset(from_document)))
    named = document.get("Name")
    name = args.name or (named if isinstance(named, str) and named else default_name)
    try:
        check_vm_name(name)
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None
    source = args.source
    if "://" not in source and not Path(source).is_absolute():
        source = str((Path.cwd() / source).resolve())
    placement = PlacementRequest(**{key: getattr(args, key) for key in PLACEMENT_KEYS})
    return JobSpec(index=0, name=name, source=source, placement=placement,
                   origin="command line", options=options)


async def command(args: argparse.Namespace) -> int:
    """``asyncovf import SOURCE``: one job through the same worker pool and job as ``run``."""
    try:
        connection = connection_settings(args)
        package = await open_package(args.source,
                                     max_descriptor_bytes=args.max_descriptor_size,
                                     http=source_settings(args))
        for warning in counted(package.warnings):
            log.warning("%s", warning)
        check_files(package, verify_manifest=not args.no_verify_manifest)
        job = await anyio.to_thread.run_sync(import_job, args, package.descriptor.entity.name)
        check_job(job, package.descriptor)  # before logging in: refused on the descriptor
    except AsyncOvfError as exc:
        report_error(exc, args.debug)
        return exit_code_for(exc)
    settings = run_settings(args, concurrency=1)
    return await run_watched(args, partial(_import, args, connection, job, package, settings))


async def _import(args: argparse.Namespace, connection: ConnectionSettings, job: JobSpec,
                  package: Package, settings: RunSettings, watch: Watching) -> int:
    runner = BatchRunner(connection, (job,), {job.source: package}, settings,
                         watcher=watch.watcher)
    progress = ProgressLine()
    runner.on_update = lambda result: progress(result.state) if result.state else None
    outcome = await run_until_signal(runner.run, on_signal=announce_interrupt(
        "aborting the import"))
    if outcome.interrupted:
        watch.linger = 0  # the operator wants out, not one more scrape
    progress.close()
    result = runner.results[0]
    # The report first: a print below that meets a broken pipe ends the command (exit
    # 141), and by then the session is logged out and the report written.
    if args.report:
        write_report(args.report, build_report(runner, RunInfo(
            batch=None, concurrency=1, interrupted=outcome.signal_name)))
    for warning in counted(result.warnings):
        log.warning("%s" if warning.startswith(PULL_NOT_USED) else "vCenter: %s", warning)
    for problem in result.cleanup_errors:
        print(f"asyncovf: cleanup: {printable(problem)}", file=sys.stderr)
    if outcome.error is not None:  # a bug: the job itself never raises
        report_error(outcome.error, args.debug)
    if outcome.interrupted:
        phase = result.phases[-1][1] if result.phases else result.status.value
        print(f"asyncovf: interrupted ({outcome.signal_name}); {printable(result.name)}: {phase}",
              file=sys.stderr)
        return exit_status(interrupted=True)
    rejected = result.input_error
    if runner.login_errors and not runner.sessions_opened:
        error = runner.login_errors[0]
        print(f"asyncovf: error: {printable(error)}", file=sys.stderr)
        rejected = exit_code_for(error) == EXIT_USAGE  # a wrong password, an untrusted CA
    elif result.status is JobStatus.SKIPPED:
        print(f"skipped {printable(result.name)}: it exists as {printable(result.vm)} "
              "(--on-conflict skip)")
    elif result.status is JobStatus.IMPORTED:
        elapsed = (result.finished or time.monotonic()) - (result.started or runner.started)
        address = f", IP address {printable(result.ip_address)}" if result.ip_address else ""
        replaced = f" (replaced {printable(result.replaced)})" if result.replaced else ""
        pulled = f"; digests: {PULL_DIGESTS}" if result.pulled else ""
        print(f"imported {printable(result.name)} as {printable(result.vm)}{replaced}{address} "
              f"({size(result.bytes)} in {elapsed:.1f} s{pulled})")
    else:
        print(f"asyncovf: error: {printable(result.error)}", file=sys.stderr)
    return exit_status(rejected=rejected, failed=outcome.error is not None or result.status
                       not in (JobStatus.IMPORTED, JobStatus.SKIPPED))


__all__ = ["FLAGS", "add_parser", "command", "import_job", "read_options_document"]
