"""The shared inventory cache: immutable snapshots, swapped whole, misses coalesced."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asyncovf.errors import PlacementError
from asyncovf.vsphere import inventory
from asyncovf.vsphere.inventory import InventoryCache, InventorySnapshot, PlacementRequest

pytestmark = pytest.mark.anyio


class SlowLoader:
    """Stands in for the property-collector traversal: slow, counted, optionally failing."""

    def __init__(self, snapshots: list[InventorySnapshot], fail: bool = False) -> None:
        self.snapshots = snapshots
        self.loads = 0
        self.fail = fail

    async def __call__(self, session: Any) -> InventorySnapshot:
        self.loads += 1
        await anyio.sleep(0.05)
        if self.fail:
            raise PlacementError("vCenter went away")
        return self.snapshots[min(self.loads - 1, len(self.snapshots) - 1)]


@pytest.fixture
def loader(monkeypatch: pytest.MonkeyPatch) -> SlowLoader:
    slow = SlowLoader([InventorySnapshot([]), InventorySnapshot([])])
    monkeypatch.setattr(inventory, "load_snapshot", slow)
    return slow


async def test_concurrent_first_reads_share_one_load(loader: SlowLoader) -> None:
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
    loader: SlowLoader,
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
    assert all(r is loader.snapshots[1] for r in results)
    assert cache.snapshot is loader.snapshots[1] and first is loader.snapshots[0]


async def test_a_refresh_asked_for_an_already_replaced_snapshot_costs_nothing(
    loader: SlowLoader,
) -> None:
    cache = InventoryCache()
    old = await cache.get(session=None)  # type: ignore[arg-type]
    new = await cache.refresh(session=None, seen=old)  # type: ignore[arg-type]
    again = await cache.refresh(session=None, seen=old)  # type: ignore[arg-type]
    assert again is new and loader.loads == 2


async def test_waiters_of_a_failed_refresh_get_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "load_snapshot", SlowLoader([], fail=True))
    cache = InventoryCache()
    errors: list[str] = []

    async def read() -> None:
        try:
            await cache.get(session=None)  # type: ignore[arg-type]
        except PlacementError as exc:
            errors.append(str(exc))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(read)
    assert errors == ["vCenter went away"] * 5 and cache.snapshot is None


async def test_a_miss_refreshes_once_then_reports_the_placement_error(
    loader: SlowLoader,
) -> None:
    cache = InventoryCache()
    with pytest.raises(PlacementError, match="no datacenter in inventory"):
        await cache.resolve(None, PlacementRequest())  # type: ignore[arg-type]
    assert loader.loads == 2


async def test_a_refresh_after_a_change_never_shares_one_started_before_it(
    loader: SlowLoader,
) -> None:
    # A worker that missed a folder is refreshing when another creates the folder:
    # the creator must get a snapshot read after its CreateFolder, not that one.
    before, after = InventorySnapshot([]), InventorySnapshot([])
    loader.snapshots = [InventorySnapshot([]), before, after]
    cache = InventoryCache()
    first = await cache.get(session=None)  # type: ignore[arg-type]
    got: list[InventorySnapshot] = []

    async def miss() -> None:
        await cache.refresh(session=None, seen=first)  # type: ignore[arg-type]

    async def create_then_refresh() -> None:
        await anyio.sleep(0.01)  # the CreateFolder, while the other refresh is under way
        got.append(await cache.refresh_after_change(session=None))  # type: ignore[arg-type]

    async with anyio.create_task_group() as group:
        group.start_soon(miss)
        group.start_soon(create_then_refresh)
    assert len(got) == 1 and got[0] is after
    assert loader.loads == 3 and cache.snapshot is after
