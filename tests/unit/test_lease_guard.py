"""The lease guard's contract, against a small fake session (no vCenter).

The integration suite proves the same against vcsim; these tests reach the
paths vcsim cannot show: a lease that is ``initializing`` for a while, goes to
``error`` mid-upload, or fails progress reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pyVmomi import vim

from asyncovf.errors import LeaseError, ManagedObjectNotFoundError, VCenterError
from asyncovf.vsphere.lease import LeaseGuard, LeaseOutcome, progress_interval

pytestmark = pytest.mark.anyio

READY = vim.HttpNfcLease.State.ready
INITIALIZING = vim.HttpNfcLease.State.initializing
ERROR = vim.HttpNfcLease.State.error


@dataclass
class FakeLeaseServer:
    """Just enough of vCenter for one lease and one VM."""

    states: list[Any] = field(default_factory=lambda: [READY])
    lease_timeout: int = 300
    progress_failures: int = 0
    fail_abort: bool = False
    vm_exists: bool = True
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error_fault: Any = None

    def __post_init__(self) -> None:
        self.vm = vim.VirtualMachine("vm-1")

    @property
    def state(self) -> Any:
        return self.states[0] if len(self.states) == 1 else self.states.pop(0)

    async def retrieve(self, obj: Any, paths: list[str]) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        self.calls.append(("retrieve", {"obj": obj, "paths": paths}))
        if isinstance(obj, vim.VirtualMachine):
            if not self.vm_exists:
                raise ManagedObjectNotFoundError("gone")
            return {"runtime.powerState": vim.VirtualMachine.PowerState.poweredOff}
        state = self.state
        info = vim.HttpNfcLease.Info(entity=self.vm, leaseTimeout=self.lease_timeout)
        return {"state": state, "error": self.error_fault if state == ERROR else None,
                "info": info}

    async def invoke(self, mo: Any, method: str, **kwargs: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        self.calls.append((method, kwargs))
        if method == "Progress" and self.progress_failures > 0:
            self.progress_failures -= 1
            raise VCenterError("Progress: transient")
        if method == "Abort" and self.fail_abort:
            raise VCenterError("Abort: refused")
        if method == "Destroy":
            self.vm_exists = False
            return vim.Task("task-1")
        return None

    async def wait_for_task(self, task: Any) -> None:
        await anyio.lowlevel.checkpoint()

    def methods(self) -> list[str]:
        return [name for name, _ in self.calls if name != "retrieve"]


def guard_for(server: FakeLeaseServer, **kwargs: Any) -> LeaseGuard:
    return LeaseGuard(server, vim.HttpNfcLease("lease-1"), vm_name="web-001",  # type: ignore[arg-type]
                      **kwargs)


async def test_success_completes_the_lease_and_keeps_the_vm() -> None:
    server = FakeLeaseServer()
    async with guard_for(server) as guard:
        guard.total_bytes = 100
        guard.add_bytes(100)
    assert server.methods() == ["Complete"]
    assert guard.outcome is LeaseOutcome.COMPLETED
    assert server.vm_exists


async def test_waits_through_initializing_until_ready() -> None:
    server = FakeLeaseServer(states=[INITIALIZING, INITIALIZING, READY])
    async with guard_for(server) as guard:
        assert guard.entity is server.vm
    assert [c for c, _ in server.calls].count("retrieve") == 3


async def test_error_while_initializing_raises_the_server_fault_and_aborts() -> None:
    fault = vim.fault.FileFault(file="[LocalDS_0] web-001/disk.vmdk", msg="disk full")
    server = FakeLeaseServer(states=[INITIALIZING, ERROR], error_fault=fault)
    with pytest.raises(LeaseError, match="went to error while initializing: FileFault: disk full"):
        async with guard_for(server):
            pytest.fail("body must not run")
    assert "Abort" in server.methods() and "Complete" not in server.methods()


async def test_exception_in_body_aborts_removes_vm_and_propagates_unchanged() -> None:
    server = FakeLeaseServer()
    boom = RuntimeError("upload exploded")
    with pytest.raises(RuntimeError) as caught:
        async with guard_for(server):
            raise boom
    assert caught.value is boom
    assert server.methods() == ["Abort", "Destroy"]
    assert not server.vm_exists


async def test_cancellation_aborts_under_shield_and_stays_a_cancellation() -> None:
    server = FakeLeaseServer()
    guard = guard_for(server)
    with anyio.CancelScope() as scope:
        async with guard:  # cancelled once inside: no timer racing the guard's entry
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert server.methods() == ["Abort", "Destroy"]
    assert guard.outcome is LeaseOutcome.ABORTED


async def test_abort_failure_is_recorded_not_raised_over_the_cause() -> None:
    server = FakeLeaseServer(fail_abort=True)
    guard = guard_for(server)
    with pytest.raises(ValueError, match="the real problem"):
        async with guard:
            raise ValueError("the real problem")
    assert guard.cleanup_errors and "Abort: refused" in guard.cleanup_errors[0]
    assert not server.vm_exists  # removal still attempted after a failed abort


async def test_keep_failed_leaves_the_vm() -> None:
    server = FakeLeaseServer()
    with pytest.raises(RuntimeError):
        async with guard_for(server, keep_failed=True):
            raise RuntimeError("x")
    assert server.methods() == ["Abort"]
    assert server.vm_exists


async def test_vm_already_removed_by_vcenter_is_not_an_error() -> None:
    server = FakeLeaseServer(vm_exists=False)
    guard = guard_for(server)
    with pytest.raises(RuntimeError):
        async with guard:
            raise RuntimeError("x")
    assert server.methods() == ["Abort"] and guard.cleanup_errors == []


async def test_keepalive_reports_real_percentage_and_survives_failed_reports() -> None:
    # leaseTimeout 1 s -> progress every 0.2 s; the first two reports fail.
    server = FakeLeaseServer(lease_timeout=1, progress_failures=2)
    def reports() -> list[int]:
        return [kw["percent"] for name, kw in server.calls if name == "Progress"]

    async with guard_for(server) as guard:
        guard.total_bytes = 1000
        guard.add_bytes(420)
        # Until four reports went out, however long a slow machine takes to send them.
        with anyio.fail_after(30):
            while len(reports()) < 4:  # noqa: ASYNC110 - the fake server records calls
                await anyio.sleep(0.05)
    sent = reports()
    assert len(sent) >= 4  # two failed, then it kept going
    assert sent[-1] == 42
    assert guard.progress_failures == 2 and guard.progress_reports >= 2
    assert server.methods()[-1] == "Complete"


async def test_lease_error_found_by_keepalive_cancels_body_and_raises_it() -> None:
    fault = vim.fault.InvalidState(msg="lease timed out")
    # Ready at first; after a failed progress report the lease is in error.
    server = FakeLeaseServer(states=[READY, ERROR], lease_timeout=1, progress_failures=1,
                             error_fault=fault)
    # The body waits forever: only the keep-alive finding the error can end it
    # (the outer bound fails the test instead of racing the keep-alive's timer).
    with anyio.fail_after(30), pytest.raises(
            LeaseError, match="went to error during upload: InvalidState: lease timed out"):
        async with guard_for(server):
            await anyio.sleep_forever()
    assert server.methods()[-2:] == ["Abort", "Destroy"]


def test_progress_interval_stays_well_inside_the_lease_timeout() -> None:
    assert progress_interval(300) == 30.0
    assert progress_interval(10) == 2.0
    assert progress_interval(0.2) == 0.1
    assert progress_interval(None) == 30.0
