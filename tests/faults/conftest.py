"""Fixtures of the reliability suite."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import anyio
import pytest

from asyncovf.importer import ConnectionSettings
from tests.faults.support import FaultRun, make_package
from tests.vcsim.harness import Vcsim


@pytest.fixture
async def fault_run(vcsim: Vcsim, tmp_path: Path, request: pytest.FixtureRequest) -> FaultRun:
    connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                    password=vcsim.password, ca_file=str(vcsim.ca_file))
    path = await anyio.to_thread.run_sync(make_package, tmp_path)
    # Unique per test (parametrized ids included): the shared simulator keeps the
    # VMs of earlier tests, and the inventory invariant looks at this prefix only.
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:32].strip("-")
    prefix = f"{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    return FaultRun(vcsim=vcsim, connection=connection, package_path=path, prefix=prefix)
