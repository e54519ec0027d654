"""The launcher's overloaded vCenter (tests/vcsim/launcher/overload.go), driven with
plain SOAP calls through VCenterSession.

With n SOAP calls in flight each call waits ``overload_ms_per_call`` ×
max(0, n − ``overload_free_calls``) ms before it is served, and past
``overload_limit`` it is refused with HTTP 503. The calls here are held in
flight by a delay rule on RetrievePropertiesEx, so that they overlap for sure;
nothing is timed: the launcher's counters say what it did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from asyncovf.errors import TransportError
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.session import RetryPolicy, VCenterSession
from tests.integration.test_launcher_clones import counters, counters_when
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CALLS = 6  # calls sent at once
HOLD_MS = 2000  # each is held this long by a delay rule, so that they all overlap


@asynccontextmanager
async def overloaded(vcsim: Vcsim, connection: ConnectionSettings, *, hold_ms: int = HOLD_MS,
                     **behaviour: Any) -> AsyncIterator[VCenterSession]:
    """A session (one connection per call, no retries) to a launcher behaving so, with
    every RetrievePropertiesEx held ``hold_ms``; the behaviour and rules reset at the end."""
    # No retries: a refused call is seen once, as the launcher counted it.
    async with VCenterSession(connection, connections=CALLS,
                              retry=RetryPolicy(attempts=1)) as session:
        try:
            await anyio.to_thread.run_sync(lambda: vcsim.behave(**behaviour))
            await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
                soap=[{"method": "RetrievePropertiesEx", "delay_ms": hold_ms}]))
            yield session
        finally:
            await anyio.to_thread.run_sync(vcsim.reset_counters)


async def burst(session: VCenterSession, calls: int = CALLS) -> list[BaseException | None]:
    """``calls`` cheap reads sent at once; each one's error, or None."""
    outcomes: list[BaseException | None] = [None] * calls

    async def read(index: int) -> None:
        try:
            await session.retrieve(session.content.rootFolder, ["name"])
        except TransportError as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as group:
        for index in range(calls):
            group.start_soon(read, index)
    return outcomes


async def test_calls_past_the_free_ones_wait(vcsim: Vcsim,
                                             connection: ConnectionSettings) -> None:
    async with overloaded(vcsim, connection, overload_free_calls=2,
                          overload_ms_per_call=40) as session:
        outcomes = await burst(session)
        seen = await counters(vcsim)
    assert outcomes == [None] * CALLS
    assert seen.calls_in_flight_peak == CALLS
    # The third call on waited 40 ms per call over two: four calls, 400 ms in all.
    assert seen.overload_delayed >= 1 and seen.overload_wait_ms > 0
    assert seen.overload_refused == 0
    assert seen.ok("RetrievePropertiesEx") == CALLS


async def test_calls_past_the_limit_are_refused_with_503(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    async with overloaded(vcsim, connection, overload_free_calls=3,
                          overload_limit=3) as session:
        outcomes = await burst(session)
        seen = await counters(vcsim)
    refused = [error for error in outcomes if error is not None]
    # Three calls are held in flight; each later one finds them and is refused.
    assert len(refused) == CALLS - 3
    for error in refused:
        assert isinstance(error, TransportError) and error.status == 503
        assert "503" in str(error)
    assert seen.overload_refused == len(refused)
    assert seen.faults("RetrievePropertiesEx") == len(refused)
    assert seen.ok("RetrievePropertiesEx") == 3
    assert 3 < seen.calls_in_flight_peak <= CALLS  # a refused call counts as it comes
    assert seen.overload_delayed == 0  # no call was over the three free ones
    assert seen.logins_refused == 0  # the session cap is another matter


async def test_with_the_model_off_nothing_waits_or_is_refused(
        vcsim: Vcsim, connection: ConnectionSettings) -> None:
    assert (await anyio.to_thread.run_sync(vcsim.behaviour)).overload_free_calls == 0
    # Off is off: a hard limit set alone refuses nothing.
    async with overloaded(vcsim, connection, overload_free_calls=0,
                          overload_limit=3) as session:
        outcomes = await burst(session)
        seen = await counters(vcsim)
    assert outcomes == [None] * CALLS
    assert seen.calls_in_flight_peak == CALLS  # counted all the same
    assert seen.overload_delayed == 0 and seen.overload_wait_ms == 0
    assert seen.overload_refused == 0


async def test_a_reset_ends_the_waits(vcsim: Vcsim, connection: ConnectionSettings) -> None:
    # The second call would wait ten minutes behind the first, held for a minute.
    async with overloaded(vcsim, connection, hold_ms=60_000, overload_free_calls=1,
                          overload_ms_per_call=600_000) as session:
        with anyio.fail_after(30):  # a bound, not a measurement: the waits end at the reset
            async with anyio.create_task_group() as group:
                group.start_soon(burst, session, 2)
                await counters_when(vcsim, lambda c: c.overload_delayed == 1
                                    and c.started("RetrievePropertiesEx") == 2)
                await anyio.to_thread.run_sync(vcsim.reset_counters)
    behaviour = await anyio.to_thread.run_sync(vcsim.behaviour)
    assert (behaviour.overload_free_calls, behaviour.overload_ms_per_call,
            behaviour.overload_limit) == (0, 40.0, 0)
