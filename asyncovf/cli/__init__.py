"""The ``asyncovf`` command line.

Exit codes are in ``exits`` (0, 1, 2, 3, 4, 130 and 141 for a reader gone).
Errors are one line on stderr; ``--debug`` adds the traceback. Passwords are
never printed.

One module per command (``import_``, ``run``, ``spec``, ``report``,
``cleanup``), each declaring its own options; the options several commands
take are declared once in ``groups``, the exit codes are in ``exits``, the
signals in ``signals``. This module is :func:`main` and :func:`console` only,
and imports nothing that loads pyVmomi, aiohttp, lxml, rich or asyncio: the
console script takes SIGINT and SIGTERM first, then loads the tool.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from asyncovf.cli.exits import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from asyncovf.cli.signals import (
    SIGNALS,
    Handler,
    Interruption,
    raise_stopped,
    signals_blocked,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; SIGINT or SIGTERM at any point ends it with 130.

    The signals are the console script's :class:`~asyncovf.cli.signals.Interruption`'s
    (called from a library or a test, :func:`main` installs one for its own
    duration, and puts the handlers it found back). A signal while the tool
    loads ends the command before it starts; one during a command stops it
    (the watched run of ``import``, ``run`` and ``cleanup`` aborts its leases
    and logs out first); later ones are absorbed. Either way: exit 130, one
    "interrupted" line on stderr, no traceback.
    """
    interruption = Interruption.installed
    previous: dict[signal.Signals, Handler] = {}
    if interruption is None:
        interruption = Interruption()
        previous = interruption.take_signals()
    try:
        status = _command(argv, interruption)
    finally:
        if previous:
            with signals_blocked():
                for signum, handler in previous.items():
                    if handler is not None:  # None: not set from Python, nothing to put back
                        signal.signal(signum, handler)
    if status != EXIT_INTERRUPTED and (status is None or interruption.signal_name is not None):
        # Stopped before the command could say so: said here, once.
        print(f"asyncovf: interrupted ({interruption.signal_name or 'SIGINT'})",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return status


def _command(argv: Sequence[str] | None, interruption: Interruption) -> int | None:
    """The command's status; None when a signal stopped it before it had one."""
    try:
        # The tool loads here, a signal meanwhile only noted: pyVmomi, aiohttp,
        # lxml, rich and asyncio take a moment.
        import logging

        from asyncovf.cli import cleanup, import_, report, run, spec
        from asyncovf.cli.loop import run_command
        from asyncovf.cli.parser import build_parser
        from asyncovf.printable import PrintableFormatter
        from asyncovf.telemetry.watch import TraceIdFilter

        if interruption.signal_name is not None:
            return None  # nothing was started
        parser = build_parser()
        args = parser.parse_args(argv)
        args.debug = getattr(args, "debug", False)
        args.verbose = getattr(args, "verbose", False)
        # Log lines carry names and messages from packages and vCenter: one line each.
        handler = logging.StreamHandler(sys.stderr)
        # A traced job's lines end in its trace id: a log line, a report row and a trace join.
        handler.addFilter(TraceIdFilter())
        handler.setFormatter(PrintableFormatter(
            "asyncovf: %(levelname)s: %(message)s%(trace_suffix)s"))
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.INFO if args.verbose
            else logging.WARNING,
            handlers=[handler],
        )
        commands = {"import": import_.command, "run": run.command, "spec": spec.command,
                    "cleanup": cleanup.command}
        if args.command == "report":
            with interruption.stopping(raise_stopped):
                status: int | None = report.command(args)
        elif args.command in commands:
            status = run_command(commands[args.command], args, interruption)
        else:
            parser.error(f"unknown command {args.command}")
            return EXIT_USAGE  # pragma: no cover - parser.error exits
        # What stdout still buffers is written here, not at the interpreter's exit,
        # where a broken pipe would be "Exception ignored" and exit 120.
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        return None  # raised by Terminated, or by Python's own handler where ours is not
    except BrokenPipeError:
        # The reader went away (``asyncovf spec X | head``): stop quietly, as Unix
        # tools do. Every command writes its report and logs out before it prints,
        # so nothing is lost but the rest of the printing.
        _discard_unread_output()
        return EXIT_BROKEN_PIPE


def _discard_unread_output() -> None:
    """Point a stream whose pipe is broken at devnull, so that the interpreter's final
    flush of what is still buffered does not raise again (the pattern of Python's
    ``signal`` documentation, "Note on SIGPIPE")."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass  # not a real file (a test's capture): nothing will flush it at exit


def console() -> NoReturn:
    """The console script (and ``python -m asyncovf``): :func:`main`, then exit.

    SIGINT and SIGTERM are taken on the first line, before the tool loads
    (:class:`~asyncovf.cli.signals.Interruption`), and ignored once the
    command has ended: there is nothing left for a signal to stop while the
    interpreter shuts down.
    """
    Interruption.for_process()
    status = main()
    if Interruption.installed is not None:  # the main thread's, which alone may ignore them
        with signals_blocked():
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
    sys.exit(status)


__all__ = ["console", "main"]
