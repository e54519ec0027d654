"""The ``asyncovf`` command line.

Exit codes: 0 success; 1 an import failed; 2 usage error or input rejected
before anything was created on vCenter; 130 interrupted (SIGINT or SIGTERM,
alike). Errors are one line on stderr; ``--debug`` adds the traceback.
Passwords are never printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final

import anyio

from asyncovf.cleanup import (
    Cleaner,
    CleanupSettings,
    CleanupTarget,
    cleanup_document,
    list_by_prefix,
    preview,
    read_reports,
)
from asyncovf.cleanup import summary as cleanup_summary
from asyncovf.engine.dryrun import dry_run
from asyncovf.engine.limits import parse_bandwidth, parse_size
from asyncovf.engine.phases import JobState
from asyncovf.engine.plan import BatchPlan, JobSpec, load_batch, parse_batch, parse_shard
from asyncovf.engine.pool import (
    BatchRunner,
    JobStatus,
    OnConflict,
    RunSettings,
    check_job,
    parse_ramp,
)
from asyncovf.engine.run import BatchRun, open_sources
from asyncovf.errors import (
    AsyncOvfError,
    InputError,
    InvalidLoginError,
    TLSVerificationError,
    UsageError,
)
from asyncovf.interrupt import run_until_signal
from asyncovf.ovf.blobs import HttpSourceSettings
from asyncovf.ovf.package import Package, check_files
from asyncovf.ovf.source import open_package
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES
from asyncovf.progress import ProgressDisplay
from asyncovf.report import RunInfo, build_report, summary_table, totals_line, write_report
from asyncovf.spec import IP_ALLOCATION_POLICIES, IP_PROTOCOLS, options_document
from asyncovf.vsphere.cleanup import INTERRUPT_BUDGET
from asyncovf.vsphere.connection import ConnectionSettings

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_THRESHOLD: Final = 3  # a load-test threshold failed
EXIT_BREAKER: Final = 4  # the circuit breaker stopped the run
EXIT_INTERRUPTED: Final = 130

log = logging.getLogger("asyncovf")


def exit_status(*, interrupted: bool = False, rejected: bool = False, breaker: bool = False,
                threshold: bool = False, failed: bool = False) -> int:
    """Every command's exit status: the first that applies, in the order 130, 2, 4, 3, 1.

    An interrupt says most about the run (the rest may not have had its
    chance), then input we rejected before creating anything (fix it and run
    again), then the run-level verdicts of a load test, then failed jobs.
    """
    for applies, code in ((interrupted, EXIT_INTERRUPTED), (rejected, EXIT_USAGE),
                          (breaker, EXIT_BREAKER), (threshold, EXIT_THRESHOLD),
                          (failed, EXIT_FAILED)):
        if applies:
            return code
    return EXIT_OK


def exit_code_for(error: BaseException, *, touched_vcenter: bool = False) -> int:
    """2 when our input was wrong and nothing was created on vCenter, else 1."""
    if touched_vcenter:
        return EXIT_FAILED
    if isinstance(error, InputError | InvalidLoginError | TLSVerificationError):
        return EXIT_USAGE
    return EXIT_FAILED


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (defaults from VSPHERE_* environment)")
    group.add_argument("--server", help="vCenter URL or host [VSPHERE_SERVER]")
    group.add_argument("--user", help="user name [VSPHERE_USER]")
    group.add_argument("--password", help="password [VSPHERE_PASSWORD]; prefer the variable")
    group.add_argument("--insecure", action="store_true", default=None,
                       help="do not verify vCenter's TLS certificate "
                            "[VSPHERE_ALLOW_UNVERIFIED_SSL]")
    group.add_argument("--ca-file", help="PEM bundle of CAs to trust for vCenter")


def _add_placement_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "placement (inventory paths, names or ids; default: the only one there is)")
    group.add_argument("--datacenter")
    group.add_argument("--cluster")
    group.add_argument("--resource-pool")
    group.add_argument("--host")
    group.add_argument("--datastore")
    group.add_argument("--folder")
    group.add_argument("--create-folders", action="store_true",
                       help="create the --folder path if it does not exist")


SOURCE_HELP = "OVA file, OVF file, directory holding one .ovf, or an http(s) URL of .ova/.ovf"


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="full tracebacks and debug logs")
    common = argparse.ArgumentParser(add_help=False, parents=[debug])
    limits = argparse.ArgumentParser(add_help=False)
    limits.add_argument("--max-descriptor-size", type=_positive_int, metavar="BYTES",
                        default=DEFAULT_MAX_DESCRIPTOR_BYTES,
                        help="refuse descriptors larger than this "
                             f"(default {DEFAULT_MAX_DESCRIPTOR_BYTES // 2**20} MiB)")
    limits.add_argument("--source-ca-file", metavar="PEM",
                        help="CA bundle to trust for https:// package sources "
                             "(default: the system's)")
    limits.add_argument("--source-insecure", action="store_true",
                        help="do not verify the certificates of https:// package sources")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log each phase")
    parser = argparse.ArgumentParser(
        prog="asyncovf",
        description="Import OVF/OVA appliances into VMware vCenter, one or hundreds at a time.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = commands.add_parser("import", help="import one OVF directory, .ovf or .ova",
                              description="Import one appliance into vCenter.",
                              parents=[common, limits])
    imp.add_argument("source", help=SOURCE_HELP)
    imp.add_argument("--name", help="name of the new VM (default: the --options document's "
                                     "Name, else the descriptor's)")
    _add_connection_options(imp)
    _add_placement_options(imp)
    opts = imp.add_argument_group("import")
    opts.add_argument("--deployment", help="deployment option id (default: the descriptor's)")
    opts.add_argument("--disk-provisioning",
                      help="thin, thick, eagerZeroedThick, … (default: vCenter's)")
    opts.add_argument("--options", metavar="FILE",
                      help="options document (JSON, as 'asyncovf spec' or govc import.spec "
                           "prints); explicit flags win")
    opts.add_argument("--locale", help="locale for the descriptor's messages (e.g. de_DE)")
    opts.add_argument("--hidden", action="store_true",
                      help="allow setting properties the vendor did not mark user-configurable")
    opts.add_argument("--net", action="append", type=_key_value, metavar="OVFNETWORK=TARGET",
                      help="map an OVF network to a port group, distributed port group or "
                           "opaque network (repeatable)")
    opts.add_argument("--prop", action="append", type=_key_value, metavar="KEY=VALUE",
                      help="set a vApp property (full class.key.instance key; repeatable)")
    opts.add_argument("--annotation", metavar="TEXT", help="the VM's annotation (notes)")
    opts.add_argument("--ip-allocation-policy", choices=IP_ALLOCATION_POLICIES,
                      help="how the appliance gets its IP addresses (default: vCenter's)")
    opts.add_argument("--ip-protocol", choices=IP_PROTOCOLS, help="IPv4 or IPv6")
    post = imp.add_argument_group(
        "after the import (in this order; a failed step removes the VM)")
    post.add_argument("--extra-config", action="append", type=_key_value, metavar="KEY=VALUE",
                      help="add an extra config (.vmx) key (repeatable)")
    post.add_argument("--inject-ovf-env", action="store_true", default=None,
                      help="write the OVF environment (properties) into guestinfo.ovfEnv")
    post.add_argument("--hardware-version", metavar="VERSION",
                      help="upgrade the virtual hardware, e.g. vmx-19 or 19")
    post.add_argument("--mark-as-template", action="store_true", default=None,
                      help="turn the VM into a template (not with --power-on)")
    post.add_argument("--power-on", action="store_true", default=None,
                      help="power the VM on")
    post.add_argument("--wait-for-ip", action="store_true", default=None,
                      help="wait until the guest reports an IP address (needs --power-on)")
    post.add_argument("--ip-timeout", type=_positive_float, metavar="SECONDS",
                      help="how long --wait-for-ip waits (default 300)")
    opts.add_argument("--no-verify-manifest", action="store_true",
                      help="do not check the manifest's digests while uploading")
    opts.add_argument("--keep-failed", action="store_true",
                      help="leave a half-imported VM in place after a failure (for debugging)")
    opts.add_argument("--parallel-disks", type=_positive_int, default=1, metavar="N",
                      help="upload up to N disks at once (never with delta disks; default 1)")
    opts.add_argument("--lease-timeout", type=float, default=300.0, metavar="SECONDS",
                      help="how long to wait for the lease to become ready (default 300)")
    opts.add_argument("--on-conflict", choices=[c.value for c in OnConflict], default="fail",
                      help="when a VM of that name exists: fail, skip it if its import "
                           "finished, or replace it (default fail)")
    opts.add_argument("--job-retries", type=_non_negative_int, default=0, metavar="N",
                      help="retry a failed import from scratch N times (default 0)")
    opts.add_argument("--report", metavar="FILE",
                      help="write the JSON run report here (the schema of 'run --report')")

    spec = commands.add_parser(
        "spec", help="print the options document of an appliance (no vCenter needed)",
        parents=[debug, limits],
        description="Print the options document for an appliance as JSON, in govc's "
                    "import.spec format: edit it and pass it to 'import --options' or a "
                    "batch entry's 'options:'.")
    spec.add_argument("source", help=SOURCE_HELP)
    spec.add_argument("--verbose", action="store_true",
                      help="add property types and labels, disks, hardware per deployment "
                           "option, EULAs and package facts")
    spec.add_argument("--deployment", help="show the document for this deployment option")
    spec.add_argument("--hidden", action="store_true",
                      help="also list properties the vendor did not mark user-configurable")

    run = commands.add_parser(
        "run", help="import every VM of a batch file", parents=[common, limits],
        description="Import the VMs a batch file (YAML, or CSV rows) describes, with a "
                    "bounded pool of workers, each with its own vCenter session.")
    run.add_argument("batch", help="batch file (.yaml/.yml, or .csv with one VM per row)")
    _add_connection_options(run)
    pool = run.add_argument_group("pool")
    pool.add_argument("--concurrency", type=_positive_int, default=8, metavar="N",
                      help="workers, each with its own session (default 8)")
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
    pool.add_argument("--parallel-disks", type=_positive_int, default=1, metavar="N",
                      help="upload up to N disks of one VM at once (never with delta disks; "
                           "default 1)")
    pool.add_argument("--chunk-size", type=_size, metavar="SIZE",
                      help="upload chunk, e.g. 256K (default: 1M, smaller above 16 workers "
                           "to bound memory)")
    pool.add_argument("--shard", metavar="K/N",
                      help="run only shard K of N (1-based, round robin over the file)")
    behaviour = run.add_argument_group("behaviour")
    behaviour.add_argument("--on-conflict", choices=[c.value for c in OnConflict],
                           default="fail", help="when a VM of that name exists (default fail)")
    behaviour.add_argument("--job-retries", type=_non_negative_int, default=1, metavar="N",
                           help="retry a failed job from scratch N times (default 1)")
    behaviour.add_argument("--upload-retries", type=_non_negative_int, default=3, metavar="N",
                           help="retry a failed file upload N times (default 3)")
    behaviour.add_argument("--timeout", type=float, metavar="SECONDS",
                           help="bound the whole run; unfinished jobs are aborted")
    behaviour.add_argument("--job-timeout", type=float, metavar="SECONDS",
                           help="bound each job (including its retries)")
    behaviour.add_argument("--lease-timeout", type=float, default=300.0, metavar="SECONDS",
                           help="how long to wait for a lease to become ready (default 300)")
    behaviour.add_argument("--keep-failed", action="store_true",
                           help="leave half-imported VMs in place after failures")
    behaviour.add_argument("--create-folders", action="store_true",
                           help="create missing VM folders the batch names")
    behaviour.add_argument("--no-verify-manifest", action="store_true",
                           help="do not check manifest digests while uploading")
    behaviour.add_argument("--dry-run", action="store_true",
                           help="resolve placement, check names and run CreateImportSpec; "
                                "create nothing")
    output = run.add_argument_group("output")
    output.add_argument("--report", metavar="FILE", help="write the JSON run report here")
    output.add_argument("--progress", choices=["auto", "live", "plain"], default="auto",
                        help="live display (terminal) or plain log lines (default auto)")

    report = commands.add_parser(
        "report", help="draw a run report: timeline, in-flight, throughput, latency, errors",
        parents=[debug],
        description="Read the JSON that 'asyncovf run --report' wrote and draw what a load "
                    "tester wants: every job's phases on a timeline, imports in flight and "
                    "upload throughput over time, p50/p90/p99/max latency per phase, failed "
                    "jobs by kind and, for a --ramp run, median latency per concurrency step. "
                    "Charts need the report extra: pip install 'asyncovf[report]'.")
    report.add_argument("results", metavar="RESULTS.json", help="a run report")
    report.add_argument("--html", metavar="FILE", help="one self-contained HTML page")
    report.add_argument("--png", metavar="FILE", help="all charts in one PNG")
    report.add_argument("--json", metavar="FILE",
                        help="the computed statistics as JSON ('-' for stdout)")

    cleanup = commands.add_parser(
        "cleanup", help="power off and destroy the VMs a run created", parents=[common],
        usage="%(prog)s REPORT [REPORT ...] [options]\n"
              "       %(prog)s --name-prefix PREFIX [--yes] [options]",
        description="Power off and destroy exactly the VMs a run created (the jobs its "
                    "report says 'imported'), or every VM whose name starts with a prefix, "
                    "with a bounded pool of workers. A VM is removed only if its id still "
                    "carries the name it had; a VM already gone is reported, not an error.")
    # Reports are read, so they are arguments: '--report FILE' always writes one.
    cleanup.add_argument("reports", nargs="*", metavar="REPORT",
                         help="a report that 'asyncovf run --report' wrote (several for the "
                              "shards of a run): remove its imported VMs; acts without --yes")
    cleanup.add_argument("--report", dest="report_option", action="append",
                         help=argparse.SUPPRESS)
    cleanup.add_argument("--name-prefix", metavar="PREFIX",
                         help="instead of reports: every VM whose name starts with PREFIX; "
                              "lists them, and removes them only with --yes")
    cleanup.add_argument("--yes", action="store_true",
                         help="remove what --name-prefix lists (a report acts without it)")
    cleanup.add_argument("--dry-run", action="store_true",
                         help="list what would be removed; remove nothing")
    scope = cleanup.add_argument_group("scope of --name-prefix (paths, names or ids)")
    scope.add_argument("--datacenter", help="only VMs in this datacenter")
    scope.add_argument("--folder", help="only VMs in this VM folder (and below)")
    _add_connection_options(cleanup)
    cleanup.add_argument("--concurrency", type=_positive_int, default=8, metavar="N",
                         help="workers, each with its own session (default 8)")
    cleanup.add_argument("--output", metavar="FILE",
                         help="write what was removed, already gone, skipped or failed as JSON")
    return parser


def _source_settings(args: argparse.Namespace) -> HttpSourceSettings:
    return HttpSourceSettings(ca_file=args.source_ca_file, insecure=args.source_insecure)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _ramp(text: str) -> tuple[int, ...]:
    try:
        return parse_ramp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must not be negative")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number")
    return value


def _key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may contain ``=``, and may be empty)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key.strip(), value


def _size(text: str) -> int:
    try:
        return parse_size(text, "chunk size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bandwidth(text: str) -> float:
    try:
        return parse_bandwidth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; SIGINT or SIGTERM at any point ends it with 130.

    While imports run, :func:`run_until_signal` turns either signal into an
    orderly cancellation. Before that (reading the batch, opening sources) and
    after it (writing the report), SIGTERM does what Ctrl-C does there — the
    same exit status and message, and no traceback.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(f"asyncovf: interrupted ({_interrupted_by[-1] if _interrupted_by else 'SIGINT'})",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: SIGTERMs received outside a watched run (for the message: Ctrl-C is the default).
_interrupted_by: list[str] = []


def _terminate_like_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside a watched run: whatever SIGINT's handler does now."""
    _interrupted_by.append(signal.Signals(signum).name)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # asyncio's cancels the main task; Python's raises
    else:
        raise KeyboardInterrupt


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="asyncovf: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "import":
        return anyio.run(_import_command, args)
    if args.command == "run":
        return anyio.run(_run_command, args)
    if args.command == "spec":
        return anyio.run(_spec_command, args)
    if args.command == "report":
        return _report_command(args)
    if args.command == "cleanup":
        return anyio.run(_cleanup_command, args)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # pragma: no cover - parser.error exits


def _report_error(error: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    message = str(error) if isinstance(error, AsyncOvfError) else f"{type(error).__name__}: {error}"
    print(f"asyncovf: error: {message}", file=sys.stderr)


class _ProgressLine:
    """A one-line progress display on a terminal; phase log lines otherwise."""

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
                log.info("%s: %s", state.name, phase)
        if self.tty and (now - self._last_draw > 0.1 or phase != "upload"):
            self._last_draw = now
            percent = state.bytes_done * 100 // state.bytes_total if state.bytes_total else 0
            print(f"\r{state.name}: {phase:<10} {percent:3d}% "
                  f"{state.bytes_done / 2**20:8.1f}/{state.bytes_total / 2**20:.1f} MiB",
                  end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and self._last_phase:
            print(file=sys.stderr)


def _import_job(args: argparse.Namespace, default_name: str) -> JobSpec:
    """The single import as a batch entry, so it is validated exactly like one.

    The name: ``--name``, else the options document's ``Name``, else the
    descriptor's (what govc and ovftool do).
    """
    entry: dict[str, Any] = {"source": args.source}
    for key in ("datacenter", "cluster", "resource_pool", "host", "datastore", "folder",
                "deployment", "disk_provisioning", "ip_allocation_policy", "ip_protocol",
                "annotation", "locale", "power_on", "wait_for_ip", "ip_timeout",
                "inject_ovf_env", "mark_as_template", "hardware_version"):
        if getattr(args, key, None) is not None:
            entry[key] = getattr(args, key)
    for key, flag in (("network_mapping", "net"), ("properties", "prop"),
                      ("extra_config", "extra_config")):
        if getattr(args, flag):
            entry[key] = dict(getattr(args, flag))
    if args.hidden:
        entry["hidden"] = True
    origin = "command line"
    document: Any = None
    if args.options:
        origin = args.options
        try:
            with open(args.options, encoding="utf-8") as handle:
                document = entry["options"] = json.load(handle)
        except OSError as exc:
            raise UsageError(f"--options {args.options}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"--options {args.options}:{exc.lineno}: not JSON: {exc.msg}") \
                from None
    from_options = document.get("Name") if isinstance(document, dict) else None
    entry["name"] = args.name or (from_options if isinstance(from_options, str) and from_options
                                  else default_name)
    plan = parse_batch({"vms": [entry]}, file=origin, base=Path.cwd())
    return plan.jobs[0]


async def _import_command(args: argparse.Namespace) -> int:
    """``asyncovf import SOURCE``: one job through the same worker pool and job as ``run``."""
    try:
        connection = ConnectionSettings.from_options(
            server=args.server, username=args.user, password=args.password,
            insecure=args.insecure, ca_file=args.ca_file,
        )
        package = await open_package(args.source,
                                     max_descriptor_bytes=args.max_descriptor_size,
                                     http=_source_settings(args))
        for warning in package.warnings:
            log.warning("%s", warning)
        check_files(package, verify_manifest=not args.no_verify_manifest)
        job = await anyio.to_thread.run_sync(_import_job, args, package.descriptor.entity.name)
        check_job(job, package.descriptor)  # before logging in: refused on the descriptor
    except AsyncOvfError as exc:
        _report_error(exc, args.debug)
        return exit_code_for(exc)
    settings = RunSettings(concurrency=1, verify_manifest=not args.no_verify_manifest,
                           keep_failed=args.keep_failed, parallel_disks=args.parallel_disks,
                           lease_ready_timeout=args.lease_timeout,
                           create_folders=args.create_folders,
                           on_conflict=OnConflict(args.on_conflict),
                           job_retries=args.job_retries)
    runner = BatchRunner(connection, (job,), {job.source: package}, settings)
    progress = _ProgressLine()
    runner.on_update = lambda result: progress(result.state) if result.state else None
    outcome = await run_until_signal(runner.run, on_signal=_announce_interrupt(
        "aborting the import"))
    progress.close()
    result = runner.results[0]
    if args.report:
        write_report(args.report, build_report(runner, RunInfo(
            batch=None, concurrency=1, interrupted=outcome.signal_name)))
    for warning in result.warnings:
        log.warning("vCenter: %s", warning)
    for problem in result.cleanup_errors:
        print(f"asyncovf: cleanup: {problem}", file=sys.stderr)
    if outcome.error is not None:  # a bug: the job itself never raises
        _report_error(outcome.error, args.debug)
    if outcome.interrupted:
        phase = result.phases[-1][1] if result.phases else result.status.value
        print(f"asyncovf: interrupted ({outcome.signal_name}); {result.name}: {phase}",
              file=sys.stderr)
        return exit_status(interrupted=True)
    rejected = result.input_error
    if runner.login_errors and not runner.sessions_opened:
        error = runner.login_errors[0]
        print(f"asyncovf: error: {error}", file=sys.stderr)
        rejected = exit_code_for(error) == EXIT_USAGE  # a wrong password, an untrusted CA
    elif result.status is JobStatus.SKIPPED:
        print(f"skipped {result.name}: it exists as {result.vm} (--on-conflict skip)")
    elif result.status is JobStatus.IMPORTED:
        elapsed = (result.finished or time.monotonic()) - (result.started or runner.started)
        address = f", IP address {result.ip_address}" if result.ip_address else ""
        print(f"imported {result.name} as {result.vm}{address} "
              f"({result.bytes} bytes in {elapsed:.1f} s)")
    else:
        print(f"asyncovf: error: {result.error}", file=sys.stderr)
    return exit_status(rejected=rejected, failed=outcome.error is not None or result.status
                       not in (JobStatus.IMPORTED, JobStatus.SKIPPED))


def _announce_interrupt(what: str) -> Callable[[str], None]:
    """The first signal's message: what is stopped, and the bound on cleaning up."""
    def announce(name: str) -> None:
        log.warning("%s: %s; every lease is aborted and every session logged out "
                    "within %g s", name, what, INTERRUPT_BUDGET)
    return announce


async def _spec_command(args: argparse.Namespace) -> int:
    """``asyncovf spec SOURCE``: the options document as JSON on stdout."""
    try:
        package = await open_package(args.source, max_descriptor_bytes=args.max_descriptor_size,
                                     http=_source_settings(args), measure_compressed=False)
        document = options_document(package.descriptor, package=package, verbose=args.verbose,
                                    deployment=args.deployment, hidden=args.hidden)
    except (AsyncOvfError, ValueError) as exc:
        _report_error(exc, args.debug)
        return EXIT_USAGE
    for warning in package.warnings:
        log.warning("%s", warning)
    try:
        signature = package.signature()
    except AsyncOvfError as exc:
        log.warning("%s", exc)
    else:
        if signature is not None:
            if "Package" in document:  # --verbose
                document["Package"]["Signature"] = signature.describe()
            (log.info if signature.valid else log.warning)("%s: %s", args.source,
                                                          signature.describe())
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return EXIT_OK


def _report_command(args: argparse.Namespace) -> int:
    """``asyncovf report RESULTS.json``: statistics always, pictures if matplotlib is there."""
    from asyncovf.loadreport import analysis

    if not (args.html or args.png or args.json):
        args.json = "-"
    try:
        report = analysis.load_run_report(args.results)
        if args.json:
            text = json.dumps(analysis.statistics(report), indent=2) + "\n"
            if args.json == "-":
                sys.stdout.write(text)
            else:
                Path(args.json).write_text(text, encoding="utf-8")
        if args.html or args.png:
            from asyncovf.loadreport import charts

            if args.html:
                Path(args.html).write_text(charts.render_html(report), encoding="utf-8")
                print(f"report: {args.html}", file=sys.stderr)
            if args.png:
                charts.write_png(report, args.png)
                print(f"report: {args.png}", file=sys.stderr)
    except (AsyncOvfError, OSError) as exc:
        _report_error(exc, args.debug)
        return EXIT_USAGE
    return EXIT_OK


async def _run_command(args: argparse.Namespace) -> int:
    """``asyncovf run BATCH``: exit 0 all done, 1 any failed, 2 rejected input, 130 interrupted."""
    try:
        plan = await anyio.to_thread.run_sync(load_batch, args.batch)
        shard = None
        if args.shard:
            number, total = parse_shard(args.shard)
            plan, shard = plan.shard(number, total), f"{number}/{total}"
        connection = ConnectionSettings.from_options(
            server=args.server, username=args.user, password=args.password,
            insecure=args.insecure, ca_file=args.ca_file, batch=plan.connection,
        )
    except AsyncOvfError as exc:
        _report_error(exc, args.debug)
        return EXIT_USAGE
    if not plan.jobs:
        print(f"asyncovf: shard {shard} of {args.batch} has no jobs", file=sys.stderr)
        return EXIT_OK

    settings = RunSettings(
        concurrency=args.concurrency,
        max_per_host=args.max_per_host,
        max_per_datastore=args.max_per_datastore,
        bandwidth=args.bandwidth,
        job_retries=args.job_retries,
        on_conflict=OnConflict(args.on_conflict),
        job_timeout=args.job_timeout,
        keep_failed=args.keep_failed,
        verify_manifest=not args.no_verify_manifest,
        upload_attempts=args.upload_retries + 1,
        lease_ready_timeout=args.lease_timeout,
        chunk_size=args.chunk_size,
        create_folders=args.create_folders,
        parallel_disks=args.parallel_disks,
        ramp=args.ramp or (),
        ramp_interval=args.ramp_interval,
    )
    packages, source_errors = await open_sources(plan, verify_manifest=settings.verify_manifest,
                                                 max_descriptor_bytes=args.max_descriptor_size,
                                                 http=_source_settings(args))

    if args.dry_run:
        return await _dry_run(args, connection, plan, packages, source_errors, settings)

    batch = BatchRun(connection, plan, packages, source_errors, settings)
    timed_out = False

    async def work() -> None:
        nonlocal timed_out
        # Before the first import: each cause once, naming its VMs. Their jobs fail
        # without an attempt, and without a progress line each.
        for cause in await batch.check():
            print(f"asyncovf: error: {cause}", file=sys.stderr)
        display = ProgressDisplay(batch.to_run, live={"auto": None, "live": True,
                                                      "plain": False}[args.progress])
        batch.on_update = display.update
        with display:
            if args.timeout is None:
                await batch.run()
                return
            with anyio.move_on_after(args.timeout) as scope:
                await batch.run()
            timed_out = scope.cancelled_caught

    outcome = await run_until_signal(
        work, on_signal=_announce_interrupt("stopping: no new jobs; aborting leases in flight"))
    # Jobs the run never reached: interrupted, or the checks could not be made.
    batch.settle(None if batch.checked else outcome.error)

    report = build_report(batch.runner, RunInfo(batch=args.batch,
                                                concurrency=settings.concurrency,
                                                shard=shard, interrupted=outcome.signal_name))
    if args.report:
        write_report(args.report, report)
    print(summary_table(batch.results))
    print(totals_line(report))
    if outcome.error is not None:
        _report_error(outcome.error, args.debug)
    if outcome.interrupted:
        print(f"asyncovf: interrupted ({outcome.signal_name})", file=sys.stderr)
    if timed_out:
        print(f"asyncovf: run timeout: stopped after {args.timeout:g} s", file=sys.stderr)
    failed = [r for r in batch.results if r.status in (JobStatus.FAILED, JobStatus.ABORTED)]
    # Raised by the checks, an error is theirs (a wrong password, an untrusted
    # certificate are our input); raised by the pool, a bug.
    checks_refused = (outcome.error is not None and not batch.checked
                      and exit_code_for(outcome.error) == EXIT_USAGE)
    every_input_refused = bool(failed) and all(r.input_error for r in failed) and not any(
        r.status is JobStatus.IMPORTED for r in batch.results)
    return exit_status(interrupted=outcome.interrupted,
                       rejected=checks_refused or every_input_refused,
                       failed=bool(failed) or timed_out or outcome.error is not None)


async def _dry_run(args: argparse.Namespace, connection: ConnectionSettings, plan: BatchPlan,
                   packages: dict[str, Package], source_errors: dict[str, str],
                   settings: RunSettings) -> int:
    outcome = await run_until_signal(
        lambda: dry_run(connection, plan, packages, source_errors, settings))
    if outcome.interrupted:
        print(f"asyncovf: interrupted ({outcome.signal_name})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.error is not None or outcome.value is None:
        _report_error(outcome.error or RuntimeError("dry run did not finish"), args.debug)
        return exit_code_for(outcome.error or RuntimeError())
    failing = 0
    for finding in outcome.value:
        names = finding.jobs[0] + (f" … {finding.jobs[-1]} ({len(finding.jobs)} VMs)"
                                   if len(finding.jobs) > 1 else "")
        verdict = "ERROR" if finding.errors else "ok"
        print(f"{verdict:<5} {names}: {finding.source} -> {finding.placement}")
        # A cause of the whole group is said once; one of some of its VMs names them.
        for error in finding.errors:
            print(f"      error: {error.describe(finding.jobs)}")
        for warning in finding.warnings:
            print(f"      warning: {warning.describe(finding.jobs)}")
        failing += len(finding.failing)
    print(f"dry run: {len(plan.jobs)} VMs in {len(outcome.value)} groups; {failing} would "
          "fail; nothing was created")
    return EXIT_USAGE if failing else EXIT_OK


async def _cleanup_command(args: argparse.Namespace) -> int:
    """``asyncovf cleanup``: 0 every target gone, 1 one is not, 2 bad input, 130 interrupted.

    A report names its VMs exactly (id and name), so it acts at once; a name
    prefix is broad, so it only lists until ``--yes`` is given.
    """
    targets: list[CleanupTarget] | None = None
    try:
        if args.report_option:
            raise UsageError("cleanup reads run reports as arguments ('--report FILE' writes "
                             "one): asyncovf cleanup " + " ".join(args.report_option))
        if args.reports and args.name_prefix is not None:
            raise UsageError("give run reports or --name-prefix, not both")
        if not args.reports and args.name_prefix is None:
            raise UsageError("say what to remove: run reports (asyncovf cleanup REPORT "
                             "[REPORT ...]) or --name-prefix PREFIX")
        if args.name_prefix is None and (args.datacenter or args.folder):
            raise UsageError("--datacenter and --folder scope --name-prefix; "
                             "a report names its VMs exactly")
        if args.name_prefix is not None and not args.name_prefix:
            raise UsageError("--name-prefix must not be empty: it would match every VM")
        if args.reports:
            selected = await anyio.to_thread.run_sync(read_reports, args.reports)
            targets = list(selected.targets)
            print(f"{', '.join(args.reports)}: {len(targets)} VMs the run imported"
                  + (f"; {selected.left_alone} other jobs left alone"
                     if selected.left_alone else ""))
        connection = ConnectionSettings.from_options(
            server=args.server, username=args.user, password=args.password,
            insecure=args.insecure, ca_file=args.ca_file,
        )
    except AsyncOvfError as exc:
        _report_error(exc, args.debug)
        return EXIT_USAGE
    selection: dict[str, Any] = (
        {"reports": args.reports} if args.reports else
        {"name_prefix": args.name_prefix, "datacenter": args.datacenter, "folder": args.folder})
    act = not args.dry_run and (targets is not None or args.yes)
    listed: list[CleanupTarget] = targets or []
    cleaner: Cleaner | None = None

    async def work() -> None:
        nonlocal listed, cleaner
        if targets is None:
            listed = await list_by_prefix(connection, args.name_prefix,
                                          datacenter=args.datacenter, folder=args.folder)
        if act and listed:
            cleaner = Cleaner(connection, listed, CleanupSettings(concurrency=args.concurrency))
            await cleaner.run()

    outcome = await run_until_signal(work, on_signal=lambda name: log.warning(
        "%s: stopping: no new removals; every session is logged out within %g s", name,
        INTERRUPT_BUDGET))
    if cleaner is None:  # listed only, or nothing to remove
        if outcome.interrupted:
            print(f"asyncovf: interrupted ({outcome.signal_name}); nothing was removed",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        if outcome.error is not None:
            _report_error(outcome.error, args.debug)
            return exit_code_for(outcome.error)
        if not listed:
            print("nothing to remove" + (f": no VM's name starts with {args.name_prefix!r}"
                                         if targets is None else ""))
            return EXIT_OK
        print(preview(listed))
        if args.dry_run:
            print(f"dry run: {len(listed)} VMs would be removed; nothing was removed")
            return EXIT_OK
        print(f"asyncovf: {len(listed)} VMs match --name-prefix {args.name_prefix!r}; "
              "nothing was removed: add --yes to power them off and destroy them",
              file=sys.stderr)
        return EXIT_USAGE
    if args.output:
        await anyio.to_thread.run_sync(write_report, args.output, cleanup_document(
            cleaner, selection=selection, interrupted=outcome.signal_name))
    if cleaner.login_errors and not cleaner.sessions_opened and not outcome.interrupted:
        _report_error(cleaner.login_errors[0], args.debug)  # once, not once per VM
        print(f"asyncovf: nothing was removed ({len(cleaner.results)} VMs targeted)",
              file=sys.stderr)
        return exit_code_for(cleaner.login_errors[0])
    print(cleanup_summary(cleaner.results))
    if outcome.interrupted:
        print(f"asyncovf: interrupted ({outcome.signal_name})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.error is not None:
        _report_error(outcome.error, args.debug)
        return EXIT_FAILED
    left = [r for r in cleaner.results if not r.gone]
    if left:
        print(f"asyncovf: {len(left)} of {len(cleaner.results)} VMs are not removed "
              "(see above)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
