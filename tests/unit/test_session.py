"""The session's call policy, against a fake transport: what is resent, and how pages are read."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pyVmomi import vim, vmodl

from asyncovf.errors import TransportError, VCenterError
from asyncovf.vsphere import inventory
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import load_snapshot
from asyncovf.vsphere.session import (
    IDEMPOTENT_METHODS,
    RETRIEVE_PAGE_SIZE,
    RetryPolicy,
    VCenterSession,
)

pytestmark = pytest.mark.anyio


class FakeClient:
    """Stands in for :class:`SoapClient`: records what is sent, loses chosen answers.

    It pages ``objects`` as vCenter's property collector does: at most
    ``maxObjects`` per answer, and a continuation token that may be used once.
    ``lose`` maps a method to the calls (1-based) whose answer is lost after the
    server carried them out.
    """

    def __init__(self, objects: Sequence[Any] = (), *,
                 lose: dict[str, set[int]] | None = None) -> None:
        self.objects = list(objects)
        self.lose = lose or {}
        self.sent: list[tuple[str, Any]] = []
        self._tokens: dict[str, tuple[int, int]] = {}  # unused token -> (offset, page size)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.sent if name == method)

    async def invoke(self, mo: Any, method: str, **kwargs: Any) -> Any:
        argument = kwargs.get("token") or getattr(kwargs.get("options"), "maxObjects", None)
        self.sent.append((method, argument))
        result = self._carry_out(method, **kwargs)
        if self.count(method) in self.lose.get(method, set()):
            raise TransportError(f"{method}: connection reset", host="vc.invalid")
        return result

    def _carry_out(self, method: str, **kwargs: Any) -> Any:
        if method == "RetrievePropertiesEx":
            offset, size = 0, kwargs["options"].maxObjects or len(self.objects)
        elif method == "ContinueRetrievePropertiesEx":
            if kwargs.get("token") not in self._tokens:
                raise VCenterError("InvalidArgument: token", method=method)
            offset, size = self._tokens.pop(kwargs["token"])
        else:
            return None
        end = offset + size
        token = None
        if end < len(self.objects):
            token = f"token-{len(self.sent)}"
            self._tokens[token] = (end, size)
        return SimpleNamespace(objects=self.objects[offset:end], token=token)


def session_over(client: FakeClient, attempts: int = 3) -> VCenterSession:
    """A session whose calls go to ``client``, logged in as far as it can tell."""
    session = VCenterSession(ConnectionSettings("vc.invalid", "user", "secret"),
                             retry=RetryPolicy(attempts=attempts, initial_wait=0, max_wait=0))
    session.client = client  # type: ignore[assignment]
    # What RetrieveContent would have answered: only these two are used here.
    session._content = SimpleNamespace(
        propertyCollector=vmodl.query.PropertyCollector("propertyCollector"),
        rootFolder=vim.Folder("group-d1"),
    )
    return session


def test_only_calls_that_change_nothing_when_repeated_are_retried() -> None:
    assert IDEMPOTENT_METHODS == {
        "RetrieveContent", "RetrievePropertiesEx", "FindChild", "FindByInventoryPath",
        "CreateImportSpec", "Progress", "Abort",
    }


@pytest.mark.parametrize("method", [
    "CreateContainerView", "DestroyView", "Destroy",
    "ImportVApp", "CreateFolder", "Complete", "PowerOff", "MarkAsTemplate",
    "CancelRetrievePropertiesEx", "Login", "Logout",
])
async def test_a_call_that_creates_or_ends_something_is_sent_once_when_its_answer_is_lost(
    method: str,
) -> None:
    client = FakeClient(lose={method: {1}})
    session = session_over(client)
    with pytest.raises(TransportError):
        await session.invoke(vim.Folder("group-d1"), method)
    assert client.count(method) == 1 and session.retries == 0


@pytest.mark.parametrize("method", sorted(IDEMPOTENT_METHODS - {"RetrievePropertiesEx"}))
async def test_a_call_safe_to_repeat_is_sent_again_when_its_answer_is_lost(method: str) -> None:
    client = FakeClient(lose={method: {1}})
    session = session_over(client)
    await session.invoke(vim.Folder("group-d1"), method)
    assert client.count(method) == 2 and session.retries == 1


def contents(count: int) -> list[Any]:
    return [SimpleNamespace(obj=vim.Folder(f"group-{n}"), propSet=[]) for n in range(count)]


async def test_a_lost_page_starts_the_retrieval_over_instead_of_resending_a_used_token() -> None:
    objects = contents(25)
    client = FakeClient(objects, lose={"ContinueRetrievePropertiesEx": {1}})
    session = session_over(client)
    got = await session.retrieve_contents([], page_size=10)
    assert got == objects
    tokens = [token for method, token in client.sent if method == "ContinueRetrievePropertiesEx"]
    assert len(tokens) == len(set(tokens)), "a continuation token was sent twice"
    assert client.count("RetrievePropertiesEx") == 2 and session.retries == 1


async def test_pages_lost_on_every_attempt_end_in_the_transport_error() -> None:
    client = FakeClient(contents(25), lose={"ContinueRetrievePropertiesEx": {1, 2, 3}})
    session = session_over(client, attempts=3)
    with pytest.raises(TransportError):
        await session.retrieve_contents([], page_size=10)
    assert client.count("RetrievePropertiesEx") == 3


def inventory_contents(count: int) -> list[Any]:
    """A root folder and ``count`` VM folders under it, as the traversal returns them."""
    root = vim.Folder("group-d1")
    props = [SimpleNamespace(name="name", val="Datacenters")]
    return [SimpleNamespace(obj=root, propSet=props)] + [
        SimpleNamespace(obj=vim.Folder(f"group-v{n}"), propSet=[
            SimpleNamespace(name="name", val=f"f{n}"), SimpleNamespace(name="parent", val=root),
            SimpleNamespace(name="childType", val=["Folder", "VirtualMachine"])])
        for n in range(count - 1)]


async def test_the_inventory_is_read_in_pages() -> None:
    # pyVmomi parses a whole answer on the event loop: a page of 1,000 objects
    # held it for a second (benchmarks/loop_stall.py).
    objects = inventory_contents(2 * RETRIEVE_PAGE_SIZE + 50)
    client = FakeClient(objects)
    snapshot = await load_snapshot(session_over(client))
    assert len(snapshot) == len(objects)
    assert client.sent[0] == ("RetrievePropertiesEx", RETRIEVE_PAGE_SIZE)
    assert client.count("ContinueRetrievePropertiesEx") == 2
    assert RETRIEVE_PAGE_SIZE <= 100


async def test_building_a_large_snapshot_lets_other_tasks_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fake transport never gives the loop back, so the building is all
    # that can: the ticker runs only when the build pauses.
    monkeypatch.setattr(inventory, "_BUILD_STEP", 10)
    client = FakeClient(inventory_contents(200))
    done = anyio.Event()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            await anyio.lowlevel.checkpoint()
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        await anyio.lowlevel.checkpoint()
        before = ticks
        snapshot = await load_snapshot(session_over(client), page_size=1000)
        during = ticks - before
        done.set()
    assert len(snapshot) == 200
    assert during >= 2 * 200 // 10 - 2, "the snapshot was built without a pause"
