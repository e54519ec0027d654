"""Clone tasks under faults: a task that ends in error, an answer lost, a clone cancelled in
flight (SIGINT to ``asyncovf run``, or the library's cancellation), a seed interrupted.

The launcher runs clone tasks for ``clone_seconds``, answers CancelTask, and by
default leaves a failed or cancelled clone's partial VM in the inventory (as a
vCenter whose own rollback did not happen would): the client must remove it.
Every check is the simulator's: CancelTask calls, clone tasks cancelled, the
VMs in its inventory, sessions and leases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.engine.seeds import SeedStatus
from tests.faults.support import FaultRun, run_batch, signal_run, write_batch
from tests.vcsim.harness import Counters

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

CLONE = RunSettings(concurrency=2, strategy="clone", job_retries=0)


async def test_a_clone_task_that_ends_in_error_fails_its_job_and_its_partial_vm_goes(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(soap=[{"method": "CloneVM_Task", "nth": 2,
                                      "task_fault": "InsufficientResourcesFault"}])
    runner = await run_batch(fault_run, count=4, settings=CLONE)

    failed = [r for r in runner.results if r.status is JobStatus.FAILED]
    assert len(failed) == 1 and "InsufficientResourcesFault" in (failed[0].error or "")
    assert failed[0].error_kind == "InsufficientResourcesFault"
    counters = await fault_run.counters()
    # The task ended by itself: nothing to cancel. Its VM was left, and is gone now.
    assert counters.calls("CancelTask") == 0 and counters.clone_vms_left == 1
    assert runner.seeds is not None and runner.seeds.seeds[0].status is SeedStatus.REMOVED
    await fault_run.check_invariants(runner)


async def test_a_failed_clone_is_retried_as_a_job_and_its_vm_is_the_retry_s(
    fault_run: FaultRun,
) -> None:
    await fault_run.set_faults(soap=[{"method": "CloneVM_Task", "nth": 1,
                                      "task_fault": "InsufficientResourcesFault"}])
    runner = await run_batch(fault_run, count=3,
                             settings=RunSettings(concurrency=1, strategy="clone"))

    assert [(r.status, r.attempts) for r in runner.results] == [
        (JobStatus.IMPORTED, 2), (JobStatus.IMPORTED, 1), (JobStatus.IMPORTED, 1)]
    await fault_run.check_invariants(runner)


async def test_a_lost_clone_answer_removes_the_clone_by_name_and_the_job_is_retried(
    fault_run: FaultRun,
) -> None:
    # The clone happens, its answer is cut: the client never learns the task.
    await fault_run.set_faults(soap=[{"method": "CloneVM_Task", "nth": 2,
                                      "drop_after_call": True}])
    runner = await run_batch(fault_run, count=3,
                             settings=RunSettings(concurrency=1, strategy="clone"))

    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 3
    assert runner.results[1].attempts == 2
    counters = await fault_run.counters()
    assert counters.dropped("CloneVM_Task") == 1 and counters.ok("CloneVM_Task") == 4
    await fault_run.check_invariants(runner)


async def test_cancelling_a_library_run_mid_clone_cancels_each_task_and_removes_its_vm(
    fault_run: FaultRun,
) -> None:
    await fault_run.behave(clone_seconds=120)
    outcome: list[object] = []

    async def work() -> None:
        outcome.append(await run_batch(fault_run, count=4, settings=CLONE))

    async with anyio.create_task_group() as group:
        group.start_soon(work)
        await fault_run.wait_until(lambda counters: counters.clones_running == 2)
        group.cancel_scope.cancel()
    assert outcome == []
    counters = await fault_run.settled()
    assert counters.calls("CancelTask") == 2 and counters.clones_cancelled == 2
    assert counters.clones_running == 0 and counters.clone_vms_left == 2
    # No clone finished, and the seed went too: nothing with the run's prefix is left.
    await fault_run.check_invariants(imported=set())


REACHED: dict[str, Callable[[Counters], bool]] = {
    "seed": lambda counters: counters.nfc_bytes >= 50_000,
    "clone": lambda counters: counters.clones_running == 3,
}


@pytest.mark.parametrize("moment", ["seed", "clone"])
async def test_sigint_mid_seed_or_mid_clone_leaves_only_what_the_report_calls_imported(
    fault_run: FaultRun, tmp_path: Path, moment: str,
) -> None:
    batch = await write_batch(
        fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n    count: 6\n',
        defaults="  strategy: clone\n")
    if moment == "seed":  # the seed's upload crawls: the signal comes mid-upload
        await fault_run.set_faults(nfc=[{"throttle_bps": 100_000}])
    else:  # the seed is made; every clone task runs until it is cancelled
        await fault_run.behave(clone_seconds=120)
    report = tmp_path / "r.json"
    status, stderr = await signal_run(fault_run, batch, report, REACHED[moment])

    assert status == 130, stderr
    assert "interrupted (SIGINT)" in stderr and "Traceback" not in stderr
    document = json.loads(await anyio.Path(report).read_text())
    statuses = {job["status"] for job in document["jobs"]}
    assert statuses <= {"imported", "aborted"} and "aborted" in statuses
    [seed] = document["seeds"]
    # Interrupted mid-import, the seed was never made; made, it was removed on the way out.
    assert seed["status"] == ("pending" if moment == "seed" else "removed"), seed
    counters = await fault_run.settled()
    if moment == "clone":
        assert counters.calls("CancelTask") == counters.clones_cancelled == 3
        assert counters.clones_running == 0 and counters.clone_vms_left == 3
    assert statuses == {"aborted"}  # nothing had finished: the report says so
    await fault_run.check_invariants(imported=set())
