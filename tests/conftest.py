"""Shared fixtures: the vcsim test vCenter, one test's run against it, the async setup."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from asyncovf.vsphere.connection import ConnectionSettings
from tests.faults.support import FaultRun, make_package
from tests.vcsim.harness import Vcsim, start_vcsim


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_loop(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """Fail any async test that makes a blocking call on the event loop thread."""
    if request.node.get_closest_marker("anyio") is None:
        yield None
        return
    with blockbuster_ctx("asyncovf") as blockbuster:
        yield blockbuster


@pytest.fixture(scope="session")
def vcsim_server() -> Iterator[Vcsim]:
    """One simulator per test session (built once, cached across sessions)."""
    server = start_vcsim()
    try:
        yield server
    finally:
        assert server.stop() == 0, "vcsim did not exit cleanly on SIGTERM"


@pytest.fixture
def vcsim(vcsim_server: Vcsim) -> Vcsim:
    """The shared simulator with its counters reset for this test."""
    vcsim_server.reset_counters()
    return vcsim_server


@pytest.fixture
def connection(vcsim: Vcsim) -> ConnectionSettings:
    """How to log in to the shared simulator (its own CA trusted)."""
    return ConnectionSettings(server=vcsim.url, username=vcsim.username,
                              password=vcsim.password, ca_file=str(vcsim.ca_file))


@pytest.fixture
async def fault_run(vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path,
                    request: pytest.FixtureRequest) -> FaultRun:
    """The simulator, a connection to it, a small package and a name prefix for this test."""
    path = await anyio.to_thread.run_sync(make_package, tmp_path)
    # Unique per test (parametrized ids included): the shared simulator keeps the
    # VMs of earlier tests, and the inventory invariant looks at this prefix only.
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:32].strip("-")
    prefix = f"{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    return FaultRun(vcsim=vcsim, connection=connection, package_path=path, prefix=prefix)
