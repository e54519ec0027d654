"""The ESXi hosts' management addresses, read from vCenter only when a device URL asks."""

from __future__ import annotations

import pytest

from asyncovf.vsphere.inventory import InventoryCache
from asyncovf.vsphere.session import VCenterSession
from tests.faults.support import FaultRun

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_host_addresses_are_read_once_per_snapshot_and_not_by_the_inventory_load(
    fault_run: FaultRun,
) -> None:
    connection = fault_run.connection
    cache = InventoryCache()
    async with VCenterSession(connection) as session:
        snapshot = await cache.get(session)
        names = snapshot.host_addresses()
        # The load reads names only: the hosts' network config is left for when it is needed.
        assert names == {host.name.lower() for host in snapshot.items("host")}
        reads = session.client.calls.get("RetrievePropertiesEx", 0)
        addresses = await cache.host_addresses(session)
        assert await cache.host_addresses(session) is addresses  # once per snapshot
        assert session.client.calls["RetrievePropertiesEx"] == reads + 1
    # vcsim gives every host a VMkernel NIC on 127.0.0.1 and a DNS name.
    assert names < addresses and "127.0.0.1" in addresses
    assert "localhost.localdomain" in addresses
    await fault_run.check_invariants()
