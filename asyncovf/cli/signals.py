"""The command line's SIGINT and SIGTERM, from its first line to its exit.

One :class:`Interruption` takes both signals for the whole process: the first
stops the command, every later one is absorbed, and the command ends with
exit 130 and one "interrupted" line. Nothing a signal does here raises into
whatever code happens to run (an import, an ``eval``, a ``__del__``, the event
loop closing), so there is no traceback and no "Exception ignored"; and no
handler is ever the default one, so nothing kills the process.

Light on purpose (the standard library's ``signal`` and little else): the
console script installs it before pyVmomi, aiohttp, lxml, rich and asyncio load.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, ClassVar, Final, TypeAlias

from asyncovf.errors import Terminated

SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

#: What ``signal.signal`` returns: a function, SIG_DFL or SIG_IGN, or None (not set from Python).
Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextmanager
def signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held back (not lost): delivered, to the handler in place
    by then, once the block ends. For swapping handlers without a gap."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Interruption:
    """SIGINT and SIGTERM during one command: the first stops it, the rest are absorbed.

    What stopping means depends on where the command is:

    * loading the tool, reading the flags: nothing runs that could be stopped
      halfway; :func:`~asyncovf.cli.main` sees the signal once the tool has
      loaded and ends with 130 before the command starts;
    * a command on the event loop, before its watched run: its task is
      cancelled (reading a large batch stops at its next checkpoint);
    * the watched run (:func:`~asyncovf.interrupt.run_until_signal`): the
      run's own handlers have the signals; they cancel the work once, then
      remind the operator that cleanup is under way;
    * after the watched run (the report is written), and once the command has
      returned: the signal is noted, never acted on;
    * a command without an event loop: :class:`~asyncovf.errors.Terminated` is raised.

    The command announces an interrupt its watched run saw, and returns 130;
    any other is announced by :func:`~asyncovf.cli.main`, once.
    """

    #: The process's own, once the console script has installed it.
    installed: ClassVar[Interruption | None] = None

    def __init__(self) -> None:
        self.signal_name: str | None = None  # the first signal this handler saw
        self._stop: Callable[[], object] | None = None

    @classmethod
    def for_process(cls) -> Interruption:
        """The process's: installed on the first call, for good (the main thread only)."""
        if cls.installed is None:
            interruption = cls()
            interruption.take_signals()
            cls.installed = interruption
        return cls.installed

    def take_signals(self) -> dict[signal.Signals, Handler]:
        """Handle SIGINT and SIGTERM here from now on; returns the handlers they had."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread can; signals are delivered to it alone
        return {signum: signal.signal(signum, self.handle) for signum in SIGNALS}

    def take_back(self, signum: int) -> None:
        """``signum`` is ours again (the watched run is over)."""
        signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: note the first signal, and stop what can be stopped."""
        if self.signal_name is not None:
            return  # absorbed: the first one is being acted on
        self.signal_name = signal.Signals(signum).name
        if self._stop is not None:
            self._stop()

    def watched(self) -> None:
        """The command's watched run takes the signals now; from here on, a signal
        that reaches :meth:`handle` (after the run) is noted, not acted on."""
        self._stop = None

    @contextmanager
    def stopping(self, stop: Callable[[], object]) -> Iterator[None]:
        """While inside, the first signal calls ``stop`` (at once if it came before)."""
        self._stop = stop
        try:
            if self.signal_name is not None:
                stop()
            yield
        finally:
            self._stop = None


def raise_stopped() -> None:
    """How a signal stops a command that runs without an event loop."""
    raise Terminated


__all__ = ["SIGNALS", "Handler", "Interruption", "raise_stopped", "signals_blocked"]
