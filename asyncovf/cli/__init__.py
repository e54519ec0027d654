"""The ``asyncovf`` command line.

Exit codes are in ``exits`` (0, 1, 2, 3, 4, 130 and 141 for a reader gone).
Errors are one line on stderr; ``--debug`` adds the traceback. Passwords are
never printed.

One module per command (``import_``, ``run``, ``spec``, ``report``,
``cleanup``), each declaring its own options; the options several commands
take are declared once in ``groups``, the exit codes are in ``exits``. This
module is :func:`main` only, and imports nothing that loads pyVmomi, aiohttp,
lxml or rich: :func:`main` catches SIGTERM first, then loads the tool.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from asyncovf.cli.exits import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from asyncovf.errors import Terminated


class _Interruption:
    """What interrupted a command outside a watched run: SIGINT, unless SIGTERM came.

    Each :func:`main` call has its own, so its message names its own signal.
    """

    def __init__(self) -> None:
        self.signal_name = "SIGINT"

    def terminate_like_interrupt(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM outside a watched run: whatever SIGINT's handler does now."""
        self.signal_name = signal.Signals(signum).name
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)  # asyncio's cancels the main task
        else:
            raise Terminated  # what Python's own handler raises


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; SIGINT or SIGTERM at any point ends it with 130.

    While imports run, :func:`~asyncovf.interrupt.run_until_signal` turns
    either signal into an orderly cancellation. Before that (loading the tool,
    reading the batch, opening sources) and after it (writing the report),
    SIGTERM does what Ctrl-C does there — the same exit status and message,
    and no traceback.
    """
    interruption = _Interruption()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, interruption.terminate_like_interrupt)
    try:
        # The tool loads here, under the handler: pyVmomi, aiohttp, lxml and rich take a moment.
        import anyio

        from asyncovf.cli import cleanup, import_, report, run, spec
        from asyncovf.cli.parser import build_parser
        from asyncovf.printable import PrintableFormatter

        parser = build_parser()
        args = parser.parse_args(argv)
        args.debug = getattr(args, "debug", False)
        args.verbose = getattr(args, "verbose", False)
        # Log lines carry names and messages from packages and vCenter: one line each.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PrintableFormatter("asyncovf: %(levelname)s: %(message)s"))
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.INFO if args.verbose
            else logging.WARNING,
            handlers=[handler],
        )
        if args.command == "import":
            status = anyio.run(import_.command, args)
        elif args.command == "run":
            status = anyio.run(run.command, args)
        elif args.command == "spec":
            status = anyio.run(spec.command, args)
        elif args.command == "report":
            status = report.command(args)
        elif args.command == "cleanup":
            status = anyio.run(cleanup.command, args)
        else:
            parser.error(f"unknown command {args.command}")
            return EXIT_USAGE  # pragma: no cover - parser.error exits
        # What stdout still buffers is written here, not at the interpreter's exit,
        # where a broken pipe would be "Exception ignored" and exit 120.
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        print(f"asyncovf: interrupted ({interruption.signal_name})", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``asyncovf spec X | head``): stop quietly, as Unix
        # tools do. Every command writes its report and logs out before it prints,
        # so nothing is lost but the rest of the printing.
        _discard_unread_output()
        return EXIT_BROKEN_PIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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

    Once a command has ended there is nothing left for a signal to stop, so the
    process ignores SIGINT and SIGTERM while the interpreter shuts down: a second
    Ctrl-C after "interrupted" cannot kill it or print a traceback.
    """
    status = main()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    sys.exit(status)


__all__ = ["console", "main"]
