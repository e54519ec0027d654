"""Which calls are sent again when vCenter's answer is lost, seen from vcsim's side."""

from __future__ import annotations

from typing import Any

import pytest

from asyncovf.errors import TransportError
from asyncovf.vsphere.session import VCenterSession
from tests.faults.support import FaultRun

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]


def create_view(session: VCenterSession) -> tuple[Any, str, dict[str, Any]]:
    return (session.content.viewManager, "CreateContainerView",
            {"container": session.content.rootFolder, "type": ["VirtualMachine"],
             "recursive": True})


def find_child(session: VCenterSession) -> tuple[Any, str, dict[str, Any]]:
    return (session.content.searchIndex, "FindChild",
            {"entity": session.content.rootFolder, "name": "no-such-datacenter"})


@pytest.mark.parametrize(("call", "sent"), [(create_view, 1), (find_child, 2)],
                         ids=["CreateContainerView", "FindChild"])
async def test_a_lost_answer_is_resent_only_for_a_call_that_creates_nothing(
    fault_run: FaultRun, call: Any, sent: int,
) -> None:
    connection = fault_run.connection
    async with VCenterSession(connection) as session:
        mo, method, arguments = call(session)
        await fault_run.set_faults(soap=[{"method": method, "drop": True, "nth": 1}])
        if sent == 1:
            # A second CreateContainerView would make a second view, which
            # nothing would destroy before the session ends.
            with pytest.raises(TransportError):
                await session.invoke(mo, method, **arguments)
        else:
            assert await session.invoke(mo, method, **arguments) is None
        assert session.retries == sent - 1
    counters = await fault_run.counters()
    assert counters.calls(method) == sent and counters.dropped(method) == 1
