"""A call vCenter turned away unserved (HTTP 503) is sent again, whatever it does: it
happened nowhere. Any other trouble with a call that is not safe to repeat is not."""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim
from tenacity import Future, RetryCallState

from asyncovf.errors import TransportError
from asyncovf.vsphere.session import RetryPolicy, refused
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


async def test_refusals_are_sent_again_until_vcenter_takes_the_call() -> None:
    # The policy's two attempts bound other errors; refusals have their own bound in time.
    client = Refusing("ImportVApp", busy(), busy(), busy(), busy())
    session = scripted_session(client)
    await session.invoke(vim.ResourcePool("resgroup-8"), "ImportVApp")
    assert client.sent.count("ImportVApp") == 5 and session.retries == 4


async def test_refusals_past_the_retry_policy_are_raised_when_it_bounds_them_too() -> None:
    client = Refusing("ImportVApp", busy(), busy(), busy())
    session = scripted_session(client)
    session.retry = RetryPolicy(attempts=2, initial_wait=0, max_wait=0, refused_for=0)
    with pytest.raises(TransportError, match="HTTP 503"):
        await session.invoke(vim.ResourcePool("resgroup-8"), "ImportVApp")
    assert client.sent.count("ImportVApp") == 2


def state(error: BaseException, *, attempt: int, seconds: float) -> RetryCallState:
    """What tenacity tells the stop after attempt ``attempt`` failed ``seconds`` in."""
    retry_state = RetryCallState(None, None, (), {})
    retry_state.attempt_number = attempt
    retry_state.outcome_timestamp = retry_state.start_time + seconds
    future: Future[None] = Future(attempt)
    future.set_exception(error)
    retry_state.outcome = future
    return retry_state


def test_refusals_stop_after_their_time_other_errors_after_their_attempts() -> None:
    policy = RetryPolicy(attempts=3, refused_for=30.0)
    reset = TransportError("connection reset", host="vc")
    assert not policy.stop(state(reset, attempt=2, seconds=0.1))
    assert policy.stop(state(reset, attempt=3, seconds=0.1))
    assert not policy.stop(state(busy(), attempt=12, seconds=29.0))
    assert policy.stop(state(busy(), attempt=12, seconds=30.0))
    assert policy.stop(state(busy(), attempt=1, seconds=0.0)) is False
    # One attempt means one: not even a refusal is sent twice.
    assert RetryPolicy(attempts=1).stop(state(busy(), attempt=1, seconds=0.0))


async def test_a_logout_turned_away_is_sent_again_until_it_goes_through() -> None:
    client = Refusing("Logout", busy(), busy(), busy())
    session = scripted_session(client)
    session._logged_in = True
    await session._log_out()
    assert client.sent.count("Logout") == 4 and session.retries == 3
