"""A call vCenter turned away unserved (HTTP 503) is sent again, whatever it does: it
happened nowhere. Any other trouble with a call that is not safe to repeat is not."""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim

from asyncovf.errors import TransportError
from asyncovf.vsphere.session import refused
from tests.unit.test_retry_table import ScriptedClient, scripted_session

pytestmark = pytest.mark.anyio

BUSY = "ImportVApp to vc: HTTP 503 Service Unavailable; vCenter is refusing new work"


class Refusing(ScriptedClient):
    """Raises, for ``method``, each of ``errors`` in turn, then answers."""

    def __init__(self, method: str, *errors: BaseException) -> None:
        super().__init__({})
        self.method, self.errors = method, list(errors)

    async def invoke(self, mo: Any, method: str, **kwargs: Any) -> Any:
        if method == self.method and self.errors:
            self.sent.append(method)
            raise self.errors.pop(0)
        return await super().invoke(mo, method, **kwargs)


def busy() -> TransportError:
    return TransportError(BUSY, host="vc", status=503)


def test_only_a_503_is_a_refusal() -> None:
    assert refused(busy())
    assert not refused(TransportError("reset", host="vc"))
    assert not refused(TransportError("bad gateway", host="vc", status=502))


async def test_an_importvapp_turned_away_is_sent_again() -> None:
    client = Refusing("ImportVApp", busy())
    session = scripted_session(client)
    await session.invoke(vim.ResourcePool("resgroup-8"), "ImportVApp")
    assert client.sent.count("ImportVApp") == 2 and session.retries == 1


@pytest.mark.parametrize("error", [TransportError("connection reset", host="vc"),
                                   TransportError("bad gateway", host="vc", status=502)],
                         ids=["reset", "502"])
async def test_an_importvapp_whose_fate_is_unknown_is_not(error: TransportError) -> None:
    client = Refusing("ImportVApp", error)
    session = scripted_session(client)
    with pytest.raises(TransportError):
        await session.invoke(vim.ResourcePool("resgroup-8"), "ImportVApp")
    assert client.sent.count("ImportVApp") == 1 and session.retries == 0


async def test_refusals_past_the_retry_policy_are_raised() -> None:
    client = Refusing("ImportVApp", busy(), busy(), busy())  # the policy: two attempts
    session = scripted_session(client)
    with pytest.raises(TransportError, match="HTTP 503"):
        await session.invoke(vim.ResourcePool("resgroup-8"), "ImportVApp")
    assert client.sent.count("ImportVApp") == 2


async def test_a_logout_turned_away_is_sent_again_until_it_goes_through() -> None:
    client = Refusing("Logout", busy(), busy(), busy())
    session = scripted_session(client)
    session._logged_in = True
    await session._log_out()
    assert client.sent.count("Logout") == 4 and session.retries == 3
