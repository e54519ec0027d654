"""Ctrl-C and SIGTERM as cancellation.

The first SIGINT or SIGTERM cancels the work; the work's own shielded cleanup
(lease Abort, VM removal, Logout) then runs to completion within its bounds.
A second signal only reminds the operator that cleanup is under way: killing
the process mid-cleanup is exactly what would leave leases and VMs behind.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    """What the work returned or raised, and whether a signal cancelled it."""

    value: T | None = None
    error: BaseException | None = None
    interrupted: bool = False
    signal_name: str | None = None


SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


async def run_until_signal(
    work: Callable[[], Awaitable[T]],
    *,
    on_signal: Callable[[str], None] | None = None,
) -> Outcome[T]:
    """Run ``work``; the first SIGINT/SIGTERM cancels it. Never raises work's errors.

    The signals are watched before ``work`` starts, and on the way out the
    handlers that were there before are put back (asyncio would leave the
    defaults, and SIGTERM's default kills the process on the spot, even while
    the caller is still writing its report).
    """
    outcome: Outcome[T] = Outcome()
    work_scope = anyio.CancelScope()

    async def watch_signals(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        try:
            with anyio.open_signal_receiver(*SIGNALS) as signals:
                task_status.started()
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not outcome.interrupted:
                        outcome.interrupted = True
                        outcome.signal_name = name
                        if on_signal is not None:
                            on_signal(name)
                        work_scope.cancel()
                    else:
                        log.warning("%s again: still aborting leases and logging out, "
                                    "which takes at most a few seconds", name)
        finally:
            for signum, handler in previous.items():
                if handler is not None:
                    signal.signal(signum, handler)

    async def run_work() -> None:
        try:
            with work_scope:
                outcome.value = await work()
        except Exception as exc:
            outcome.error = exc

    async with anyio.create_task_group() as group:
        await group.start(watch_signals)
        await run_work()
        group.cancel_scope.cancel()
    return outcome


__all__ = ["SIGNALS", "Outcome", "run_until_signal"]
