"""``asyncovf import SOURCE``: one appliance, through the same worker pool and job as ``run``.

(The module is ``import_``: ``import`` is a keyword.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Final

import anyio

from asyncovf.cli.exits import EXIT_USAGE, exit_code_for, exit_status
from asyncovf.cli.groups import (
    SOURCE_HELP,
    RunFlags,
    _key_value,
    _positive_float,
    add_connection_options,
    add_debug_options,
    add_placement_options,
    add_source_limits,
    connection_settings,
    run_settings,
    source_settings,
)
from asyncovf.cli.output import announce_interrupt, report_error
from asyncovf.engine.batch import JobStatus
from asyncovf.engine.plan import JobSpec, parse_batch
from asyncovf.engine.pool import BatchRunner
from asyncovf.engine.resolve import check_job
from asyncovf.errors import AsyncOvfError, UsageError
from asyncovf.interrupt import run_until_signal
from asyncovf.ovf.package import check_files
from asyncovf.ovf.source import open_package
from asyncovf.progress import ProgressLine
from asyncovf.report import RunInfo, build_report, write_report
from asyncovf.spec import IP_ALLOCATION_POLICIES, IP_PROTOCOLS

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
    opts = parser.add_argument_group("import")
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
    post = parser.add_argument_group(
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
    # Listed under "import", after the options of the VM itself.
    FLAGS.add(opts, "--no-verify-manifest", "--keep-failed", "--parallel-disks",
              "--lease-timeout", "--on-conflict", "--job-retries", "--report")


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


async def command(args: argparse.Namespace) -> int:
    """``asyncovf import SOURCE``: one job through the same worker pool and job as ``run``."""
    try:
        connection = connection_settings(args)
        package = await open_package(args.source,
                                     max_descriptor_bytes=args.max_descriptor_size,
                                     http=source_settings(args))
        for warning in package.warnings:
            log.warning("%s", warning)
        check_files(package, verify_manifest=not args.no_verify_manifest)
        job = await anyio.to_thread.run_sync(_import_job, args, package.descriptor.entity.name)
        check_job(job, package.descriptor)  # before logging in: refused on the descriptor
    except AsyncOvfError as exc:
        report_error(exc, args.debug)
        return exit_code_for(exc)
    settings = run_settings(args, concurrency=1)
    runner = BatchRunner(connection, (job,), {job.source: package}, settings)
    progress = ProgressLine()
    runner.on_update = lambda result: progress(result.state) if result.state else None
    outcome = await run_until_signal(runner.run, on_signal=announce_interrupt(
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
        report_error(outcome.error, args.debug)
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


__all__ = ["FLAGS", "add_parser", "command"]
