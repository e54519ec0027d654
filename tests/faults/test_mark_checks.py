"""Finished marks a batch worker sends without waiting, and checks later (engine/mark_checks.py).

The oracle is the simulator: the marks each VM reads at the end, and the
ReconfigVM_Task calls it counted. A mark task is made to fail with the
launcher's ``task_fault`` rule, its VM left as it was.
"""

from __future__ import annotations

import pytest
from pyVmomi import vim

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.mark_checks import CHECK_EVERY
from asyncovf.engine.marks import mark_of
from asyncovf.engine.options import RunSettings
from asyncovf.vsphere.session import VCenterSession
from tests.faults.support import FaultRun, job_name, run_batch
from tests.integration.inspect import list_vms

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

FAIL_THE_TASK = {"method": "ReconfigVM_Task", "task_fault": "GenericVmConfigFault"}


async def marks(run: FaultRun) -> dict[str, str | None]:
    """Each of this test's VMs by name: the import mark it reads now."""
    found = {}
    async with VCenterSession(run.connection) as session:
        for vm in await list_vms(run.connection):
            if vm.name.startswith(run.prefix):
                config = await session.retrieve(vim.VirtualMachine(vm.moid),
                                                ["config.extraConfig"])
                found[vm.name] = mark_of(config["config.extraConfig"])
    return found


async def test_a_worker_checks_its_jobs_marks_together_and_every_vm_reads_done(
    fault_run: FaultRun,
) -> None:
    count = CHECK_EVERY + 8
    await fault_run.reset_counters()
    runner = await run_batch(fault_run, count=count, settings=RunSettings(concurrency=1))
    assert all(r.status is JobStatus.IMPORTED and not r.warnings for r in runner.results)
    assert await marks(fault_run) == {job_name(fault_run, i): "done" for i in range(count)}
    counters = await fault_run.settled()
    assert counters.ok("ReconfigVM_Task") == count  # one mark each, none written twice
    # One read when CHECK_EVERY were pending, one before the worker logged out (each
    # repeated only while a task still runs): not one per job.
    assert 2 <= runner.mark_checks < count // 4
    await fault_run.check_invariants(runner)


async def test_a_mark_whose_task_failed_is_written_again(fault_run: FaultRun) -> None:
    await fault_run.set_faults(soap=[{**FAIL_THE_TASK, "times": 1}])
    runner = await run_batch(fault_run, count=3, settings=RunSettings(concurrency=1))
    assert all(r.status is JobStatus.IMPORTED and not r.warnings for r in runner.results)
    assert await marks(fault_run) == {job_name(fault_run, i): "done" for i in range(3)}
    counters = await fault_run.settled()
    assert (counters.calls("ReconfigVM_Task"), counters.faults("ReconfigVM_Task")) == (4, 0)
    await fault_run.check_invariants(runner)


async def test_a_mark_that_fails_twice_is_a_warning_and_the_vm_stays_imported(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(soap=[{**FAIL_THE_TASK, "times": 2}])
    runner = await run_batch(fault_run, count=1, settings=RunSettings(concurrency=1))
    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED and result.error is None
    (warning,) = result.warnings
    assert warning.startswith("the finished mark was not written (")
    assert warning.endswith("--on-conflict skip would take the VM for a half-imported one")
    # The VM is whole (its lease completed); it still reads as unfinished.
    assert (await marks(fault_run))[result.name].startswith("importing ")  # type: ignore[union-attr]
    await fault_run.check_invariants(runner)
