"""``asyncovf cleanup``: power off and destroy the VMs a run created, or those a prefix names.

The removing is :mod:`asyncovf.engine.cleaner`'s; reading run reports and writing the
cleanup report, :mod:`asyncovf.report`'s. This module turns the command line into
targets, and prints what it would remove and what became of each VM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

import anyio

from asyncovf.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, exit_code_for
from asyncovf.cli.groups import (
    _positive_int,
    add_connection_options,
    add_debug_options,
    connection_settings,
)
from asyncovf.cli.output import report_error
from asyncovf.engine.cleaner import (
    Cleaner,
    CleanupSettings,
    CleanupTarget,
    RemovalResult,
    RemovalStatus,
    counts,
    list_by_prefix,
)
from asyncovf.errors import AsyncOvfError, UsageError
from asyncovf.interrupt import run_until_signal
from asyncovf.printable import printable
from asyncovf.quantity import quantity
from asyncovf.report import cleanup_document, read_reports, write_report
from asyncovf.vsphere.cleanup import INTERRUPT_BUDGET

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "cleanup", help="power off and destroy the VMs a run created",
        usage="%(prog)s REPORT [REPORT ...] [options]\n"
              "       %(prog)s --name-prefix PREFIX [--yes] [options]",
        description="Power off and destroy exactly the VMs a run created (the jobs its "
                    "report says 'imported'), or every VM whose name starts with a prefix, "
                    "with a bounded pool of workers. A VM is removed only if its id still "
                    "carries the name it had; a VM already gone is reported, not an error.")
    add_debug_options(parser)
    # Reports are read, so they are arguments: a flag names a file the command writes.
    parser.add_argument("reports", nargs="*", metavar="REPORT",
                        help="a report that 'asyncovf run --report' wrote (several for the "
                             "shards of a run): remove its imported VMs; acts without --yes")
    # The old spelling, read as an argument with a warning until the next release.
    parser.add_argument("--report", dest="report_option", action="append", default=[],
                        metavar="REPORT", help=argparse.SUPPRESS)
    parser.add_argument("--include-skipped", action="store_true",
                        help="also remove the VMs the reports call skipped (a restarted "
                             "shard's report says so of what its killed pod finished)")
    parser.add_argument("--name-prefix", metavar="PREFIX",
                        help="instead of reports: every VM whose name starts with PREFIX; "
                             "lists them, and removes them only with --yes")
    parser.add_argument("--yes", action="store_true",
                        help="remove what --name-prefix lists (a report acts without it)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be removed; remove nothing")
    scope = parser.add_argument_group("scope of --name-prefix (paths, names or ids)")
    scope.add_argument("--datacenter", help="only VMs in this datacenter")
    scope.add_argument("--folder", help="only VMs in this VM folder (and below)")
    add_connection_options(parser)
    parser.add_argument("--concurrency", type=_positive_int, default=8, metavar="N",
                        help="workers, each with its own session (default 8)")
    parser.add_argument("--json", metavar="FILE",
                        help="write what was removed, already gone, skipped or failed as JSON")
    # The old spelling of --json, accepted with a warning until the next release.
    parser.add_argument("--output", dest="json_option", metavar="FILE", help=argparse.SUPPRESS)


async def command(args: argparse.Namespace) -> int:
    """``asyncovf cleanup``: 0 every target gone, 1 one is not, 2 bad input, 130 interrupted.

    A report names its VMs exactly (id and name), so it acts at once; a name
    prefix is broad, so it only lists until ``--yes`` is given.
    """
    targets: list[CleanupTarget] | None = None
    if args.report_option:
        log.warning("'cleanup --report REPORT' is deprecated and goes in the next release "
                    "(a flag names a file the command writes); give the reports as "
                    "arguments: asyncovf cleanup %s", printable(" ".join(args.report_option)))
        args.reports = [*args.reports, *args.report_option]
    if args.json_option is not None:
        log.warning("'cleanup --output FILE' is deprecated and goes in the next release "
                    "(an output flag is named after its format); use --json %s",
                    printable(args.json_option))
        args.json = args.json or args.json_option
    try:
        if args.reports and args.name_prefix is not None:
            raise UsageError("give run reports or --name-prefix, not both")
        if not args.reports and args.name_prefix is None:
            raise UsageError("say what to remove: run reports (asyncovf cleanup REPORT "
                             "[REPORT ...]) or --name-prefix PREFIX")
        if args.include_skipped and not args.reports:
            raise UsageError("--include-skipped reads run reports: give them")
        if args.name_prefix is None and (args.datacenter or args.folder):
            raise UsageError("--datacenter and --folder scope --name-prefix; "
                             "a report names its VMs exactly")
        if args.name_prefix is not None and not args.name_prefix:
            raise UsageError("--name-prefix must not be empty: it would match every VM")
        if args.reports:
            selected = await anyio.to_thread.run_sync(partial(
                read_reports, args.reports, include_skipped=args.include_skipped))
            targets = list(selected.targets)
            print(f"{printable(', '.join(args.reports))}: "
                  f"{quantity(len(targets), 'VM')} the run imported"
                  + (" or skipped" if args.include_skipped else "")
                  + (f"; {quantity(selected.left_alone, 'other job')} left alone"
                     if selected.left_alone else ""))
        connection = connection_settings(args)
    except AsyncOvfError as exc:
        report_error(exc, args.debug)
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
            report_error(outcome.error, args.debug)
            return exit_code_for(outcome.error)
        if not listed:
            print("nothing to remove" + (f": no VM's name starts with {args.name_prefix!r}"
                                         if targets is None else ""))
            return EXIT_OK
        print(preview(listed))
        if args.dry_run:
            print(f"dry run: {quantity(len(listed), 'VM')} would be removed; nothing was removed")
            return EXIT_OK
        print(f"asyncovf: {quantity(len(listed), 'VM')} "
              f"{'matches' if len(listed) == 1 else 'match'} --name-prefix "
              f"{printable(repr(args.name_prefix))}; nothing was removed: add --yes to power "
              f"{'it' if len(listed) == 1 else 'them'} off and destroy "
              f"{'it' if len(listed) == 1 else 'them'}",
              file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        await anyio.to_thread.run_sync(write_report, args.json, cleanup_document(
            cleaner, selection=selection, interrupted=outcome.signal_name))
    if cleaner.login_errors and not cleaner.sessions_opened and not outcome.interrupted:
        report_error(cleaner.login_errors[0], args.debug)  # once, not once per VM
        print(f"asyncovf: nothing was removed ({quantity(len(cleaner.results), 'VM')} targeted)",
              file=sys.stderr)
        return exit_code_for(cleaner.login_errors[0])
    print(summary(cleaner.results))
    if outcome.interrupted:
        print(f"asyncovf: interrupted ({outcome.signal_name})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.error is not None:
        report_error(outcome.error, args.debug)
        return EXIT_FAILED
    left = [r for r in cleaner.results if not r.gone]
    if left:
        print(f"asyncovf: {len(left)} of {quantity(len(cleaner.results), 'VM')} "
              f"{'is' if len(left) == 1 else 'are'} not removed (see above)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def preview(targets: Sequence[CleanupTarget]) -> str:
    """What would be removed, one VM a line."""
    width = max([len(printable(t.vm)) for t in targets] + [2])
    return "\n".join(f"{printable(t.vm):<{width}}  {printable(t.name)}" for t in targets)


#: Problems first: they are what the operator has to act on.
_ORDER: Final = (RemovalStatus.FAILED, RemovalStatus.SKIPPED, RemovalStatus.INTERRUPTED,
                 RemovalStatus.PENDING, RemovalStatus.REMOVED, RemovalStatus.ALREADY_GONE)


def summary(results: Sequence[RemovalResult], *, limit: int = 50) -> str:
    """One line per VM (every problem, then up to ``limit`` others), then the totals."""
    rows = sorted(results, key=lambda r: (_ORDER.index(r.status), r.target.name))
    problems = [r for r in rows if not r.gone]
    shown = problems + [r for r in rows if r.gone][:limit]
    names = {id(r): printable(r.target.name) for r in shown}
    width = max([len(name) for name in names.values()] + [4])
    lines = []
    for r in shown:
        note = printable(r.detail) if r.detail else ("powered off first" if r.powered_off else "")
        lines.append(f"{r.status.label:<12}  {printable(r.target.vm):<10}  "
                     f"{names[id(r)]:<{width}}" + (f"  {note}" if note else ""))
    if len(shown) < len(rows):
        lines.append(f"… and {len(rows) - len(shown)} more (see --json)")
    total = counts(results)
    lines.append(f"{quantity(total['targeted'], 'VM')} targeted: " + ", ".join(
        f"{total[s.value]} {s.label}" for s in _ORDER if s is not RemovalStatus.PENDING))
    return "\n".join(lines)


__all__ = ["add_parser", "command", "preview", "summary"]
