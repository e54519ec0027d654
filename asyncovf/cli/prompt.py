"""Asking the operator for vCenter's password on the terminal, when nothing else gives it.

Only when stdin is a terminal: a script, a pipe or a test gets the one-line
"missing --password" error instead of a prompt it cannot answer. The password
is read without echo (:func:`getpass.getpass`) and never printed.
"""

from __future__ import annotations

import getpass
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from asyncovf.cli.signals import SIGNALS


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM also raise KeyboardInterrupt where the prompt
    waits: the prompt blocks the event loop (nothing else runs yet), so the usual
    handler's cancellation would only be seen after the operator pressed Enter."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}

    def interrupt(signum: int, frame: FrameType | None) -> None:
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)  # the command's own handler notes the signal
        raise KeyboardInterrupt

    for signum in SIGNALS:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ask_password(server: str, user: str) -> str:
    """The password typed at the terminal, for ``user`` at ``server``."""
    with _signals_interrupt():
        return getpass.getpass(f"password for {user} at {server}: ")


def terminal_password_prompt() -> Callable[[str, str], str] | None:
    """:func:`ask_password` when stdin is a terminal, else None (nothing to ask)."""
    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        interactive = False
    return ask_password if interactive else None


__all__ = ["ask_password", "terminal_password_prompt"]
