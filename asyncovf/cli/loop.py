"""The event loop a command runs on, and how a signal reaches the command on it.

Before its watched run (:func:`~asyncovf.interrupt.run_until_signal`) a
command is cancelled by the first signal. The watched run takes the signals
from :class:`~asyncovf.cli.signals.Interruption` and gives them back when it
ends; asyncio would first put the defaults back (SIGTERM's kills the process
on the spot, SIGINT's raises KeyboardInterrupt wherever the code is), so the
loop gives them back to the interruption with the signals held meanwhile:
no moment without a handler of ours.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVarTuple

import anyio

from asyncovf.cli.signals import SIGNALS, Interruption, signals_blocked

Ts = TypeVarTuple("Ts")


class CommandLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, telling ``interruption`` when a watched run takes the signals
    and handing them back to it, without a gap, when the run ends."""

    def __init__(self, interruption: Interruption) -> None:
        super().__init__()
        self._interruption = interruption

    def add_signal_handler(self, sig: int, callback: Callable[[*Ts], object],
                           *args: *Ts) -> None:
        if sig in SIGNALS:
            self._interruption.watched()
        super().add_signal_handler(sig, callback, *args)

    def remove_signal_handler(self, sig: int) -> bool:
        if sig not in SIGNALS:
            return super().remove_signal_handler(sig)
        with signals_blocked():
            removed = super().remove_signal_handler(sig)  # the default, for a moment
            if removed:
                self._interruption.take_back(sig)
        return removed


def run_command(command: Callable[[argparse.Namespace], Awaitable[int]],
                args: argparse.Namespace, interruption: Interruption) -> int | None:
    """``command(args)`` on a :class:`CommandLoop`: its status, or None when a signal
    cancelled it before it could return one."""

    async def cancellable() -> int | None:
        loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope, interruption.stopping(
                lambda: loop.call_soon_threadsafe(scope.cancel)):
            return await command(args)
        return None  # cancelled

    status: int | None = anyio.run(
        cancellable, backend="asyncio",
        backend_options={"loop_factory": lambda: CommandLoop(interruption)})
    return status


__all__ = ["CommandLoop", "run_command"]
