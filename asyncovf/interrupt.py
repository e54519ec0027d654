"""Ctrl-C and SIGTERM as cancellation.

The first SIGINT or SIGTERM cancels the work; the work's own shielded cleanup
(lease Abort, VM removal, Logout) then runs to completion within one shared
budget (:class:`~asyncovf.vsphere.cleanup.CleanupBudget`): every lease aborted
and every session logged out within
:data:`~asyncovf.vsphere.cleanup.INTERRUPT_BUDGET` seconds of the signal, even
when vCenter stops answering. A second signal only reminds the operator that
cleanup is under way, and how long it may still take: killing the process
mid-cleanup is exactly what would leave leases and VMs behind.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

from asyncovf.vsphere.cleanup import CleanupBudget, current_budget

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
    budget = CleanupBudget()

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
                        budget.interrupt()
                        if on_signal is not None:
                            on_signal(name)
                        work_scope.cancel()
                    else:
                        left = max(0.0, budget.deadline - anyio.current_time())
                        log.warning("%s again: still aborting leases and logging out, "
                                    "for at most %.0f s more", name, left)
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

    # Set before any task of the work starts: each inherits the budget.
    token = current_budget.set(budget)
    try:
        async with anyio.create_task_group() as group:
            await group.start(watch_signals)
            await run_work()
            group.cancel_scope.cancel()
    finally:
        current_budget.reset(token)
    return outcome


__all__ = ["SIGNALS", "Outcome", "run_until_signal"]
