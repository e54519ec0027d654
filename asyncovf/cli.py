"""The ``asyncovf`` command line.

Exit codes: 0 success; 1 an import failed; 2 usage error or input rejected
before anything was created on vCenter; 130 interrupted. Errors are one line on
stderr; ``--debug`` adds the traceback. Passwords are never printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Final

import anyio

from asyncovf.engine.job import ImportOptions, JobState
from asyncovf.errors import (
    AsyncOvfError,
    InputError,
    InvalidLoginError,
    TLSVerificationError,
)
from asyncovf.importer import ConnectionSettings, Importer
from asyncovf.interrupt import run_until_signal
from asyncovf.ovf.package import check_files, open_package
from asyncovf.vsphere.inventory import PlacementRequest

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

log = logging.getLogger("asyncovf")


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


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="full tracebacks and debug logs")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log each phase")
    parser = argparse.ArgumentParser(
        prog="asyncovf",
        description="Import OVF/OVA appliances into VMware vCenter, one or hundreds at a time.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = commands.add_parser("import", help="import one OVF directory, .ovf or .ova",
                              description="Import one appliance into vCenter.", parents=[common])
    imp.add_argument("source", help="OVA file, OVF file, or directory holding one .ovf")
    imp.add_argument("--name", required=True, help="name of the new VM")
    _add_connection_options(imp)
    _add_placement_options(imp)
    opts = imp.add_argument_group("import")
    opts.add_argument("--deployment", help="deployment option id (default: the descriptor's)")
    opts.add_argument("--disk-provisioning",
                      help="thin, thick, eagerZeroedThick, … (default: vCenter's)")
    opts.add_argument("--no-verify-manifest", action="store_true",
                      help="do not check the manifest's digests while uploading")
    opts.add_argument("--keep-failed", action="store_true",
                      help="leave a half-imported VM in place after a failure (for debugging)")
    opts.add_argument("--lease-timeout", type=float, default=300.0, metavar="SECONDS",
                      help="how long to wait for the lease to become ready (default 300)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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


async def _import_command(args: argparse.Namespace) -> int:
    progress = _ProgressLine()
    state = JobState(name=args.name)
    started = time.monotonic()

    async def work() -> JobState:
        connection = ConnectionSettings.from_options(
            server=args.server, username=args.user, password=args.password,
            insecure=args.insecure, ca_file=args.ca_file,
        )
        package = await open_package(args.source)
        for warning in package.warnings:
            log.warning("%s", warning)
        check_files(package, verify_manifest=not args.no_verify_manifest)
        request = PlacementRequest(
            datacenter=args.datacenter, cluster=args.cluster, resource_pool=args.resource_pool,
            host=args.host, datastore=args.datastore, folder=args.folder,
        )
        options = ImportOptions(
            deployment=args.deployment,
            disk_provisioning=args.disk_provisioning,
            verify_manifest=not args.no_verify_manifest,
            keep_failed=args.keep_failed,
            lease_ready_timeout=args.lease_timeout,
        )
        async with Importer(connection) as importer:
            placement = await importer.resolve(request)
            return await importer.import_package(package, args.name, placement, options,
                                                 on_progress=progress, state=state)

    outcome = await run_until_signal(
        work, on_signal=lambda name: log.warning("%s: aborting the import", name))
    progress.close()
    for warning in state.warnings:
        log.warning("vCenter: %s", warning)
    for problem in state.cleanup_errors:
        print(f"asyncovf: cleanup: {problem}", file=sys.stderr)
    if outcome.interrupted:
        print(f"asyncovf: interrupted ({outcome.signal_name}); {state.name}: "
              f"{state.phase.value}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.error is not None:
        _report_error(outcome.error, args.debug)
        return exit_code_for(outcome.error, touched_vcenter=state.touched_vcenter)
    elapsed = time.monotonic() - started
    print(f"imported {state.name} as {state.vm} "
          f"({state.bytes_done} bytes in {elapsed:.1f} s)")
    return EXIT_OK


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
