"""The worker pool's contract, against a small fake session (no vCenter).

Every test checks what became of each item *and* that every session that
logged in was logged out (opened = closed, and the fake saw one Logout per
Login). Nothing here races sleeps: the handlers wait on events and counters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asyncovf.engine.workers import LoginFailure, Unfinished, WorkerPool
from asyncovf.errors import NotAuthenticatedError

pytestmark = pytest.mark.anyio


@dataclass
class FakeClient:
    calls: Counter[str] = field(default_factory=Counter)


class FakeSession:
    """What the pool uses of a VCenterSession: log in, log out, and its counters."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.client = FakeClient()
        self.opened = self.logged_in = False
        self.relogins = self.retries = self.renewals = 0

    async def __aenter__(self) -> FakeSession:
        self.server.login_attempts += 1
        self.server.login_started.set()
        await self.server.login_gate.wait()
        self.client.calls["Login"] += 1
        if self.server.failing_logins > 0:
            self.server.failing_logins -= 1
            raise NotAuthenticatedError("Login: incorrect user name or password")
        self.opened = self.logged_in = True
        self.server.logins += 1
        return self

    async def aclose(self) -> None:
        if self.logged_in:
            self.logged_in = False
            self.server.logouts += 1
            self.client.calls["Logout"] += 1
        with anyio.CancelScope(shield=True):  # as VCenterSession's Logout is
            await anyio.lowlevel.checkpoint()


@dataclass
class FakeServer:
    failing_logins: int = 0
    logins: int = 0
    logouts: int = 0
    login_attempts: int = 0
    login_started: anyio.Event = field(default_factory=anyio.Event)
    login_gate: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        self.login_gate.set()  # logins go through unless a test holds them

    def session(self) -> Any:
        return FakeSession(self)


@dataclass
class Recorder:
    """The caller's side: what each item became, and a way to hold handlers."""

    done: dict[str, int] = field(default_factory=dict)  # item -> worker
    settled: dict[str, Unfinished] = field(default_factory=dict)
    sessions: dict[int, set[int]] = field(default_factory=dict)  # worker -> id(session)
    in_hand: int = 0
    most_in_hand: int = 0
    wanted_in_hand: int = 0
    all_in_hand: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)
    fail_on: str | None = None
    pool: WorkerPool[str] | None = None
    over_limit: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.release.set()  # handlers return at once unless a test holds them

    async def handle(self, session: Any, item: str, worker: int) -> None:
        self.sessions.setdefault(worker, set()).add(id(session))
        session.client.calls["Destroy_Task"] += 1
        self.in_hand += 1
        self.most_in_hand = max(self.most_in_hand, self.in_hand)
        if self.pool is not None and self.in_hand > self.pool.concurrency_series[-1][1]:
            self.over_limit.append(item)
        if self.in_hand == self.wanted_in_hand:
            self.all_in_hand.set()
        try:
            if item == self.fail_on:
                raise RuntimeError(f"bug while handling {item}")
            await self.release.wait()
            await anyio.lowlevel.checkpoint()
            self.done[item] = worker
        finally:
            self.in_hand -= 1

    def settle(self, item: str, why: Unfinished) -> None:
        assert item not in self.done and item not in self.settled
        self.settled[item] = why


def make_pool(server: FakeServer, recorder: Recorder, items: list[str], *,
              steps: tuple[int, ...] = (2,), interval: float = 30.0) -> WorkerPool[str]:
    pool = WorkerPool(items, new_session=server.session, handle=recorder.handle,
                      settle=recorder.settle, steps=steps, interval=interval, name="test worker")
    recorder.pool = pool
    return pool


def assert_all_logged_out(pool: WorkerPool[str], server: FakeServer) -> None:
    assert pool.sessions_opened == pool.sessions_closed == server.logins == server.logouts


ITEMS = [f"vm-{n}" for n in range(1, 8)]


async def test_every_item_is_handled_once_by_a_worker_and_every_session_logged_out() -> None:
    server, recorder = FakeServer(), Recorder()
    pool = make_pool(server, recorder, ITEMS, steps=(3,))

    await pool.run()

    assert set(recorder.done) == set(ITEMS) and not recorder.settled
    assert set(recorder.done.values()) <= {1, 2, 3}
    assert all(len(ids) == 1 for ids in recorder.sessions.values()), "one session per worker"
    assert pool.sessions_opened == 3
    assert_all_logged_out(pool, server)
    assert not pool.login_errors and pool.finished is not None
    assert [limit for _, limit in pool.concurrency_series] == [3]


async def test_the_sessions_counters_are_summed_once_each_has_logged_out() -> None:
    server, recorder = FakeServer(), Recorder()
    pool = make_pool(server, recorder, ITEMS, steps=(2,))

    await pool.run()

    assert pool.soap_calls == Counter({"Login": 2, "Logout": 2, "Destroy_Task": len(ITEMS)})
    assert pool.relogins == pool.sessions_renewed == pool.soap_retries == 0


async def test_never_more_workers_than_items() -> None:
    server, recorder = FakeServer(), Recorder()
    pool = make_pool(server, recorder, ITEMS[:2], steps=(8,))

    await pool.run()

    assert set(recorder.done) == set(ITEMS[:2])
    assert server.login_attempts == 2
    assert_all_logged_out(pool, server)


async def test_a_handler_that_raises_ends_the_run_and_still_logs_every_session_out() -> None:
    # One worker takes the items in order: vm-1 is done, vm-2 raises, the rest wait.
    server, recorder = FakeServer(), Recorder(fail_on="vm-2")
    pool = make_pool(server, recorder, ITEMS[:4], steps=(1,))

    with pytest.raises(ExceptionGroup) as caught:
        await pool.run()

    assert [str(e) for e in caught.value.exceptions] == ["bug while handling vm-2"]

    assert recorder.done == {"vm-1": 1}
    assert recorder.settled == {"vm-2": Unfinished.IN_HAND, "vm-3": Unfinished.NOT_STARTED,
                                "vm-4": Unfinished.NOT_STARTED}
    assert pool.sessions_opened == 1
    assert_all_logged_out(pool, server)


async def test_cancelled_mid_item_settles_what_was_in_hand_apart_from_what_was_waiting() -> None:
    server, recorder = FakeServer(), Recorder(wanted_in_hand=2)
    recorder.release = anyio.Event()  # handlers hold their items until cancelled
    pool = make_pool(server, recorder, ITEMS[:5], steps=(2,))

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(pool.run)
            await recorder.all_in_hand.wait()
            scope.cancel()

    assert not recorder.done
    assert recorder.settled == {"vm-1": Unfinished.IN_HAND, "vm-2": Unfinished.IN_HAND,
                                "vm-3": Unfinished.NOT_STARTED, "vm-4": Unfinished.NOT_STARTED,
                                "vm-5": Unfinished.NOT_STARTED}
    assert pool.sessions_opened == 2
    assert_all_logged_out(pool, server)


async def test_cancelled_during_login_the_login_ends_and_is_logged_out_at_once() -> None:
    server, recorder = FakeServer(), Recorder()
    server.login_gate = anyio.Event()  # the Login is on the wire
    pool = make_pool(server, recorder, ITEMS[:3], steps=(1,))

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(pool.run)
            await server.login_started.wait()
            scope.cancel()
            server.login_gate.set()  # the login is shielded: it ends after the interrupt

    assert not recorder.done
    assert recorder.settled == dict.fromkeys(ITEMS[:3], Unfinished.NOT_STARTED)
    assert server.logins == 1
    assert_all_logged_out(pool, server)


async def test_when_no_worker_can_log_in_nothing_is_handled_and_every_item_says_why() -> None:
    server, recorder = FakeServer(failing_logins=99), Recorder()
    pool = make_pool(server, recorder, ITEMS[:4], steps=(3,))

    await pool.run()

    assert not recorder.done
    assert recorder.settled == dict.fromkeys(ITEMS[:4], Unfinished.NO_SESSION)
    assert pool.no_session
    assert sorted(failure.worker for failure in pool.login_errors) == [1, 2, 3]
    assert all(isinstance(f.error, NotAuthenticatedError) for f in pool.login_errors)
    assert str(LoginFailure(2, NotAuthenticatedError("no"))) == "worker 2: no"
    assert pool.sessions_opened == pool.sessions_closed == 0
    assert server.logouts == 0


async def test_when_some_workers_cannot_log_in_the_others_handle_every_item() -> None:
    server, recorder = FakeServer(failing_logins=2), Recorder()
    pool = make_pool(server, recorder, ITEMS, steps=(3,))

    await pool.run()

    assert set(recorder.done) == set(ITEMS) and not recorder.settled
    assert len(pool.login_errors) == 2 and not pool.no_session
    assert len(set(recorder.done.values())) == 1
    assert pool.sessions_opened == 1
    assert_all_logged_out(pool, server)


async def test_a_ramp_adds_workers_step_by_step_and_never_hands_out_more_than_the_limit() -> None:
    # Each handler holds its item until all three are in hand, which takes three
    # workers: the ramp must reach its last step.
    server, recorder = FakeServer(), Recorder(wanted_in_hand=3)
    recorder.release = recorder.all_in_hand
    pool = make_pool(server, recorder, ITEMS[:3], steps=(1, 2, 3), interval=0.01)

    with anyio.fail_after(10):
        await pool.run()

    assert set(recorder.done) == set(ITEMS[:3]) and not recorder.settled
    assert [limit for _, limit in pool.concurrency_series] == [1, 2, 3]
    assert [t for t, _ in pool.concurrency_series] == sorted(t for t, _ in
                                                              pool.concurrency_series)
    assert not recorder.over_limit and recorder.most_in_hand == 3
    assert sorted(recorder.done.values()) == [1, 2, 3]
    assert_all_logged_out(pool, server)


async def test_a_ramp_stops_once_every_item_is_in_a_workers_hands() -> None:
    # One item, taken by the first worker: the ramp's next step (an hour away)
    # would only log in and out, so it never comes and the run ends at once.
    server, recorder = FakeServer(), Recorder()
    pool = make_pool(server, recorder, ITEMS[:1], steps=(1, 4, 8), interval=3600)

    with anyio.fail_after(10):
        await pool.run()

    assert recorder.done == {"vm-1": 1}
    assert [limit for _, limit in pool.concurrency_series] == [1]
    assert server.login_attempts == 1
    assert_all_logged_out(pool, server)


async def test_a_pool_runs_once_and_needs_a_worker() -> None:
    server, recorder = FakeServer(), Recorder()
    pool = make_pool(server, recorder, ITEMS[:1], steps=(1,))
    await pool.run()
    with pytest.raises(RuntimeError, match="runs once"):
        await pool.run()
    with pytest.raises(ValueError, match="at least one worker"):
        make_pool(server, recorder, ITEMS, steps=())
