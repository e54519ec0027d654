"""Shared fixtures: the vcsim test vCenter, and the async test setup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

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
