"""The shared inventory cache: immutable snapshots, swapped whole, misses coalesced.

Loads are held by the test and end when it says so; ``wait_all_tasks_blocked``
tells when every caller has arrived. No test depends on one sleep outlasting
another.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asyncovf.errors import PlacementError
from asyncovf.vsphere import inventory
from asyncovf.vsphere.inventory import InventoryCache, InventorySnapshot, PlacementRequest

pytestmark = pytest.mark.anyio

Outcome = InventorySnapshot | Exception


class FakeLoader:
    """Stands in for the property-collector traversal: counted, its outcomes scripted.

    Load ``n`` ends with ``outcomes[n]`` (the last one repeats). With
    ``hold=True`` each load waits for the test to set its ``releases[n]``;
    otherwise it ends once every other task is blocked — every concurrent
    caller has arrived and is waiting for it.
    """

    def __init__(self, outcomes: list[Outcome], *, hold: bool = False) -> None:
        self.outcomes = outcomes
        self.hold = hold
        self.loads = 0
        self.releases: list[anyio.Event] = []

    async def __call__(self, session: Any) -> InventorySnapshot:
        self.loads += 1
        outcome = self.outcomes[min(self.loads - 1, len(self.outcomes) - 1)]
        if self.hold:
            release = anyio.Event()
            self.releases.append(release)
            await release.wait()
        else:
            await anyio.wait_all_tasks_blocked()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> FakeLoader:
    fake = FakeLoader([InventorySnapshot([]), InventorySnapshot([])])
    monkeypatch.setattr(inventory, "load_snapshot", fake)
    return fake


async def test_concurrent_first_reads_share_one_load(loader: FakeLoader) -> None:
    cache = InventoryCache()
    seen: list[InventorySnapshot] = []

    async def read() -> None:
        seen.append(await cache.get(session=None))  # type: ignore[arg-type]

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(read)
    assert loader.loads == 1 and cache.refreshes == 1
    assert len({id(s) for s in seen}) == 1


async def test_concurrent_misses_on_the_same_snapshot_share_one_refresh(
    loader: FakeLoader,
) -> None:
    cache = InventoryCache()
    first = await cache.get(session=None)  # type: ignore[arg-type]
    results: list[InventorySnapshot] = []

    async def miss() -> None:
        results.append(await cache.refresh(session=None, seen=first))  # type: ignore[arg-type]

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(miss)
    assert loader.loads == 2
    assert len(results) == 20 and all(r is loader.outcomes[1] for r in results)
    assert cache.snapshot is loader.outcomes[1] and first is loader.outcomes[0]


async def test_a_refresh_asked_for_an_already_replaced_snapshot_costs_nothing(
    loader: FakeLoader,
) -> None:
    cache = InventoryCache()
    old = await cache.get(session=None)  # type: ignore[arg-type]
    new = await cache.refresh(session=None, seen=old)  # type: ignore[arg-type]
    again = await cache.refresh(session=None, seen=old)  # type: ignore[arg-type]
    assert again is new and loader.loads == 2


@pytest.mark.parametrize("waiters", [2, 10])
@pytest.mark.parametrize("first_load", [True, False], ids=["first-load", "refresh"])
async def test_waiters_of_a_cancelled_refresh_load_again_instead_of_inheriting_its_cancellation(
    monkeypatch: pytest.MonkeyPatch, waiters: int, first_load: bool,
) -> None:
    # The worker loading the inventory hits its own job timeout: the jobs
    # waiting for that load are not the ones cancelled, and must go on.
    old, fresh = InventorySnapshot([]), InventorySnapshot([])
    loader = FakeLoader([old, fresh], hold=True)
    monkeypatch.setattr(inventory, "load_snapshot", loader)
    cache = InventoryCache(None if first_load else old)
    seen = None if first_load else old
    refresher = anyio.CancelScope()
    results: list[object] = []

    async def refresh_then_get_cancelled() -> None:
        with refresher:
            await cache.refresh(session=None, seen=seen)  # type: ignore[arg-type]

    async def wait_for_it() -> None:
        try:
            results.append(await cache.refresh(session=None, seen=seen))  # type: ignore[arg-type]
        except BaseException as exc:  # recorded, so the assertion below names it
            results.append(type(exc).__name__)

    async with anyio.create_task_group() as group:
        group.start_soon(refresh_then_get_cancelled)
        await anyio.wait_all_tasks_blocked()
        for _ in range(waiters):
            group.start_soon(wait_for_it)
        await anyio.wait_all_tasks_blocked()
        assert loader.loads == 1
        refresher.cancel()
        await anyio.wait_all_tasks_blocked()
        assert loader.loads == 2, "one waiter loads again, the others share its load"
        loader.releases[1].set()
    assert refresher.cancelled_caught
    assert results == [fresh] * waiters
    assert cache.snapshot is fresh and cache.refreshes == 1


@pytest.mark.parametrize("first_load", [True, False], ids=["first-load", "refresh"])
async def test_waiters_of_a_failed_refresh_get_its_error_and_the_next_call_loads_again(
    monkeypatch: pytest.MonkeyPatch, first_load: bool,
) -> None:
    old, fresh = InventorySnapshot([]), InventorySnapshot([])
    loader = FakeLoader([PlacementError("vCenter went away"), fresh])
    monkeypatch.setattr(inventory, "load_snapshot", loader)
    cache = InventoryCache(None if first_load else old)
    seen = None if first_load else old
    errors: list[str] = []

    async def read() -> None:
        try:
            await cache.refresh(session=None, seen=seen)  # type: ignore[arg-type]
        except PlacementError as exc:
            errors.append(str(exc))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(read)
    # They asked for one refresh and share its outcome: neither the snapshot
    # they found wanting nor a load each.
    assert errors == ["vCenter went away"] * 5 and loader.loads == 1
    assert cache.snapshot is (None if first_load else old)
    # The failure is not kept: the next call tries again.
    assert await cache.refresh(session=None, seen=seen) is fresh  # type: ignore[arg-type]
    assert loader.loads == 2 and cache.snapshot is fresh


async def test_a_miss_refreshes_once_then_reports_the_placement_error(
    loader: FakeLoader,
) -> None:
    cache = InventoryCache()
    with pytest.raises(PlacementError, match="no datacenter in inventory"):
        await cache.resolve(None, PlacementRequest())  # type: ignore[arg-type]
    assert loader.loads == 2


async def test_a_refresh_after_a_change_never_shares_one_started_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker that missed a folder is refreshing when another creates the folder:
    # the creator must get a snapshot read after its CreateFolder, not that one.
    first, before, after = InventorySnapshot([]), InventorySnapshot([]), InventorySnapshot([])
    loader = FakeLoader([before, after], hold=True)
    monkeypatch.setattr(inventory, "load_snapshot", loader)
    cache = InventoryCache(first)
    got: list[InventorySnapshot] = []

    async def miss() -> None:
        await cache.refresh(session=None, seen=first)  # type: ignore[arg-type]

    async def create_then_refresh() -> None:
        got.append(await cache.refresh_after_change(session=None))  # type: ignore[arg-type]

    async with anyio.create_task_group() as group:
        group.start_soon(miss)
        await anyio.wait_all_tasks_blocked()
        assert loader.loads == 1
        group.start_soon(create_then_refresh)  # its CreateFolder ended during that load
        await anyio.wait_all_tasks_blocked()
        loader.releases[0].set()
        await anyio.wait_all_tasks_blocked()
        assert loader.loads == 2 and not got
        loader.releases[1].set()
    assert got == [after] and cache.snapshot is after
