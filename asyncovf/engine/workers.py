"""The one worker pool: N workers, each owning one vCenter session, taking items in order.

Both the import engine (``asyncovf run``) and ``asyncovf cleanup`` run their
items through :class:`WorkerPool`. The pool only schedules; what an item means
is the caller's, through two callbacks:

* ``handle(session, item, worker)`` does one item with the worker's session and
  records its outcome on the item itself. It is expected not to raise: an
  exception that escapes it is a bug, and ends the run (the other workers are
  cancelled and log out; :meth:`WorkerPool.run` raises it after settling).
* ``settle(item, why)`` records what became of an item the pool could not see
  through (:class:`Unfinished`): nobody could log in, the run was interrupted
  before the item's turn, or while a worker had it.

Items go to the workers through a zero-buffer memory stream, so an item leaves
the feed only when a worker takes it: once the feed is done, every item is in
a worker's hands. Each worker logs in once, with the shielded login
(:meth:`SessionTally.log_in`), takes items until the feed is done, and logs out
on every path (:meth:`SessionTally.log_out`): sessions opened = sessions closed.

A ramp (``steps`` with more than one entry) starts ``steps[0]`` workers and
adds workers up to the next step every ``interval`` seconds, so each new worker
logs in when its step comes; it ends early once every item is in a worker's
hands, since later steps would only log in and out.

An adaptive limit (``limiter``, :mod:`asyncovf.engine.adaptive`) moves the
number of workers both ways: every tick the pool asks it for the limit, starts
workers up to it, and a worker over it retires after its item and logs out.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncovf.engine.adaptive import TICK, AdaptiveLimit
from asyncovf.vsphere.session import SessionTally, VCenterSession

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class Unfinished(enum.Enum):
    """Why the pool hands an item to the caller's ``settle`` step."""

    #: No worker could log in (:attr:`WorkerPool.login_errors` says why): nothing was tried.
    NO_SESSION = "no session"
    #: Never handed to a worker: the run was interrupted before its turn.
    NOT_STARTED = "not started"
    #: A worker had it when the run was interrupted (or its handler raised):
    #: whatever the handler had sent to vCenter may or may not have happened.
    IN_HAND = "in hand"


class _Progress(enum.IntEnum):
    WAITING = 0
    IN_HAND = 1
    DONE = 2


@dataclass(frozen=True)
class LoginFailure:
    """A worker that could not log in, and why."""

    worker: int
    error: Exception

    def __str__(self) -> str:
        return f"worker {self.worker}: {self.error}"


Handler = Callable[[VCenterSession, Item, int], Awaitable[None]]
Settler = Callable[[Item, Unfinished], None]


class WorkerPool(Generic[Item]):
    """Run ``handle`` over ``items`` with workers that each own one vCenter session.

    ``new_session`` makes a worker's session, not yet logged in (the caller
    chooses its call timeout and retry policy). ``steps`` is the number of
    workers, or a ramp's schedule (validated by the caller; see above). Never
    more workers start than there are items. A pool runs once.
    """

    def __init__(
        self,
        items: Iterable[Item],
        *,
        new_session: Callable[[], VCenterSession],
        handle: Handler[Item],
        settle: Settler[Item],
        steps: Sequence[int],
        interval: float = 30.0,
        name: str = "worker",
        before_logout: Callable[[VCenterSession], Awaitable[None]] | None = None,
        admit: Callable[[], Awaitable[bool]] | None = None,
        limiter: AdaptiveLimit | None = None,
        on_limit: Callable[[int], None] | None = None,
    ) -> None:
        if not steps or steps[0] < 1:
            raise ValueError(f"a worker pool needs at least one worker, not {list(steps)}")
        self.items = tuple(items)
        self.steps = tuple(steps)
        self.interval = interval
        self.name = name
        self._new_session = new_session
        self._handle = handle
        self._settle = settle
        #: Called with a worker's session when it takes no more items, before it logs
        #: out, on every path (the caller shields and bounds its own cleanup).
        self._before_logout = before_logout
        #: Awaited before each item leaves the feed: False ends the feed (the items
        #: not yet fed are settled NOT_STARTED); it may pause first.
        self._admit = admit
        self._limiter = limiter
        #: Told of each concurrency limit as it takes effect (the run's metrics).
        self._on_limit = on_limit
        #: Workers started so far (their numbers), and those not yet gone.
        self._started_workers = 0
        self._live = 0
        self._progress = [_Progress.WAITING] * len(self.items)
        self.sessions = SessionTally()
        #: Workers that could not log in; with no session at all, nothing was tried.
        self.login_errors: list[LoginFailure] = []
        #: SOAP calls by method, and the sessions' own counters, summed over the
        #: sessions that logged in (added as each one logs out).
        self.soap_calls: Counter[str] = Counter()
        self.relogins = 0
        #: Logouts and logins again to end a lease whose ImportVApp answer was lost.
        self.sessions_renewed = 0
        self.soap_retries = 0
        #: (seconds from :attr:`started`, workers allowed from then on).
        self.concurrency_series: list[tuple[float, int]] = []
        self.started = time.monotonic()
        self.finished: float | None = None
        self._fed: anyio.Event | None = None
        self._ran = False

    def __repr__(self) -> str:
        done = self._progress.count(_Progress.DONE)
        return (f"<WorkerPool {self.name} {done}/{len(self.items)} done, "
                f"{self.sessions.opened} opened, {self.sessions.closed} closed>")

    @property
    def sessions_opened(self) -> int:
        return self.sessions.opened

    @property
    def sessions_closed(self) -> int:
        return self.sessions.closed

    @property
    def no_session(self) -> bool:
        """No worker could log in (and at least one tried)."""
        return bool(self.login_errors) and self.sessions.opened == 0

    async def run(self) -> None:
        """Handle every item; returns when all are done, raises the cancellation if interrupted.

        Whatever happens, every item was handled or settled by then.
        """
        if self._ran:
            raise RuntimeError("a WorkerPool runs once")
        self._ran = True
        self.started = time.monotonic()
        self._fed = anyio.Event()
        # No buffer: an item leaves the feed only when a worker takes it, so "fed"
        # means every item is in a worker's hands (the ramp's cue to stop).
        send, receive = anyio.create_memory_object_stream[int](max_buffer_size=0)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._feed, send, name=f"{self.name} feed")
                async with receive:
                    first = self._limiter.limit if self._limiter else self.steps[0]
                    self._add_workers(group, receive, first)
                    if self._limiter is not None:
                        group.start_soon(self._adapt, group, receive.clone(),
                                         name=f"{self.name} limit")
                    elif len(self.steps) > 1:
                        group.start_soon(self._ramp, group, receive.clone(), self.steps[1:],
                                         name=f"{self.name} ramp")
        finally:
            self.finished = time.monotonic()
            self._settle_unfinished()

    def _add_workers(self, group: TaskGroup, feed: MemoryObjectReceiveStream[int],
                     limit: int) -> None:
        """Start workers up to ``limit`` live ones (never more than there are items)."""
        self._record_limit(limit)
        for _ in range(min(limit, max(1, len(self.items))) - self._live):
            self._started_workers += 1
            self._live += 1
            number = self._started_workers
            group.start_soon(self._worker, number, feed.clone(), name=f"{self.name} {number}")

    async def _adapt(self, group: TaskGroup, feed: MemoryObjectReceiveStream[int]) -> None:
        """Every tick, the limiter's limit: workers started up to it (those over it
        retire in :meth:`_worker`), each change in the concurrency series."""
        assert self._fed is not None and self._limiter is not None
        async with feed:
            while True:
                with anyio.move_on_after(TICK):
                    await self._fed.wait()
                if self._fed.is_set():
                    return
                before = self.concurrency_series[-1][1]
                limit = self._limiter.tick()
                if limit > self._live:
                    self._add_workers(group, feed, limit)
                elif limit != before:
                    self._record_limit(limit)

    def _record_limit(self, limit: int) -> None:
        self.concurrency_series.append((round(time.monotonic() - self.started, 6), limit))
        if self._on_limit is not None:
            self._on_limit(limit)

    async def _ramp(self, group: TaskGroup, feed: MemoryObjectReceiveStream[int],
                    steps: tuple[int, ...]) -> None:
        assert self._fed is not None
        async with feed:
            for limit in steps:
                with anyio.move_on_after(self.interval):
                    await self._fed.wait()
                if self._fed.is_set():
                    return
                log.info("ramp: %d workers", limit)
                self._add_workers(group, feed, limit)

    async def _feed(self, send: MemoryObjectSendStream[int]) -> None:
        assert self._fed is not None
        async with send:
            try:
                for index in range(len(self.items)):
                    if self._admit is not None and not await self._admit():
                        return
                    try:
                        await send.send(index)
                    except anyio.BrokenResourceError:
                        return  # every worker is gone (e.g. none could log in)
            finally:
                self._fed.set()

    async def _worker(self, number: int, feed: MemoryObjectReceiveStream[int]) -> None:
        async with feed:
            session = self._new_session()
            try:
                await self.sessions.log_in(session)
            except Exception as exc:
                self._live -= 1
                self.login_errors.append(LoginFailure(number, exc))
                log.error("%s %d cannot log in: %s", self.name, number, exc)
                return
            retired = False
            try:
                while not (retired := self._over_limit()):
                    try:
                        index = await feed.receive()
                    except anyio.EndOfStream:
                        break
                    self._progress[index] = _Progress.IN_HAND
                    await self._handle(session, self.items[index], number)
                    self._progress[index] = _Progress.DONE
            finally:
                if not retired:
                    self._live -= 1
                try:
                    if self._before_logout is not None:
                        await self._before_logout(session)
                finally:
                    await self.sessions.log_out(session)  # shielded and bounded inside
                self.soap_calls.update(session.client.calls)
                self.relogins += session.relogins
                self.sessions_renewed += session.renewals
                self.soap_retries += session.retries

    def _over_limit(self) -> bool:
        """This worker is one too many for the adaptive limit: it retires (and counts
        itself out at once, so the next worker to ask stays)."""
        if self._limiter is None or self._live <= self._limiter.limit:
            return False
        self._live -= 1
        log.info("%s: a worker retires (the limit is %d)", self.name, self._limiter.limit)
        return True

    def _settle_unfinished(self) -> None:
        for item, progress in zip(self.items, self._progress, strict=True):
            if progress is _Progress.DONE:
                continue
            if progress is _Progress.IN_HAND:
                self._settle(item, Unfinished.IN_HAND)
            elif self.no_session:
                self._settle(item, Unfinished.NO_SESSION)
            else:
                self._settle(item, Unfinished.NOT_STARTED)


class OnWorkerPool:
    """What a command reads of the :class:`WorkerPool` its work runs on.

    The batch runner and the cleaner each run on one; a report and an exit
    status read these of either, so they are written once, here.
    """

    pool: WorkerPool[Any]

    @property
    def sessions_opened(self) -> int:
        return self.pool.sessions_opened

    @property
    def sessions_closed(self) -> int:
        return self.pool.sessions_closed

    @property
    def login_errors(self) -> list[Exception]:
        """Why workers could not log in: with no session at all, nothing was attempted."""
        return [failure.error for failure in self.pool.login_errors]


__all__ = ["LoginFailure", "OnWorkerPool", "Unfinished", "WorkerPool"]
