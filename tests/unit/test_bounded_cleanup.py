"""The one shielded, bounded cleanup idiom and the interrupt budget it shares."""

from __future__ import annotations

import math

import anyio
import pytest

from asyncovf.vsphere.cleanup import (
    CleanupBudget,
    Stage,
    bounded_cleanup,
    current_budget,
    shielded,
)

pytestmark = pytest.mark.anyio


async def test_a_failed_cleanup_is_recorded_in_one_line_never_raised() -> None:
    errors: list[str] = []
    with bounded_cleanup("abort of lease lease-1", errors) as outcome:
        raise RuntimeError("refused")
    assert errors == ["abort of lease lease-1 failed: refused"]
    assert outcome.error == errors[0] and not outcome.ok and not outcome.timed_out


async def test_a_cleanup_that_cannot_finish_ends_at_its_bound() -> None:
    errors: list[str] = []
    never = anyio.Event()
    with bounded_cleanup("logout from vc", errors, timeout=0.05) as outcome:
        await never.wait()
    assert outcome.timed_out and errors == ["logout from vc timed out (after 0.05 s)"]


async def test_a_cleanup_finishes_though_its_caller_is_cancelled() -> None:
    entered = anyio.Event()
    finished = anyio.Event()
    release = anyio.Event()

    async def cleanup() -> None:
        with bounded_cleanup("removal"):
            entered.set()
            await release.wait()
            finished.set()

    async with anyio.create_task_group() as group:
        group.start_soon(cleanup)
        await entered.wait()
        group.cancel_scope.cancel()  # the caller's cancellation does not reach the body
        release.set()
    assert finished.is_set()


async def test_the_budget_gives_lease_cleanup_less_time_than_logout_and_close() -> None:
    budget = CleanupBudget()
    assert budget.limit(Stage.LEASE) == math.inf and not budget.interrupted
    budget.interrupt(within=10)
    assert budget.limit(Stage.LEASE) < budget.limit(Stage.LOGOUT) < budget.limit(Stage.CLOSE)
    assert budget.limit(Stage.CLOSE) == budget.deadline
    first = budget.deadline
    budget.interrupt(within=10)  # a second signal never extends it
    assert budget.deadline == first


async def test_an_interrupt_cuts_a_cleanup_under_way_to_the_budget() -> None:
    # A cleanup with its own 60 s bound is waiting on a frozen server; the
    # interrupt pulls its deadline in, so it ends with the budget, not in 60 s.
    budget = CleanupBudget()
    token = current_budget.set(budget)
    errors: list[str] = []
    entered = anyio.Event()
    try:
        async def frozen_abort() -> None:
            with bounded_cleanup("abort of lease lease-2", errors, timeout=60):
                entered.set()
                await anyio.Event().wait()

        async with anyio.create_task_group() as group:
            group.start_soon(frozen_abort)
            await entered.wait()
            budget.interrupt(within=Stage.LEASE.value + 0.05)
    finally:
        current_budget.reset(token)
    assert errors == ["abort of lease lease-2 timed out (the interrupt's time was up)"]


async def test_after_an_interrupt_a_shielded_call_starts_with_the_budget() -> None:
    budget = CleanupBudget()
    token = current_budget.set(budget)
    try:
        budget.interrupt(within=Stage.LEASE.value)  # nothing left for the lease stage
        with shielded(120) as scope:
            await anyio.Event().wait()
    finally:
        current_budget.reset(token)
    assert scope.cancelled_caught
