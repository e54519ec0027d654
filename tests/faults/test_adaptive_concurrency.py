"""``--concurrency auto`` against an overloaded vCenter (the launcher's overload model and
session cap): every VM imported, none failed by overload, never more sessions than the
cap, every session logged out. The oracle is the simulator's counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.cleaner import Cleaner, list_by_prefix
from asyncovf.engine.options import RunSettings
from tests.faults.support import FaultRun, run_batch, run_cli, write_batch

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

CAP = 20  # sessions


async def test_auto_imports_a_400_vm_batch_through_an_overloaded_vcenter(
    fault_run: FaultRun,
) -> None:
    # n calls in flight wait 40 ms x (n - 6); past 12 they are refused with HTTP 503.
    await fault_run.behave(overload_free_calls=6, overload_ms_per_call=40, overload_limit=12,
                           session_cap=CAP + fault_run.sessions_live_before)
    runner = await run_batch(fault_run, count=400,
                             settings=RunSettings(concurrency=64, adaptive=True))
    assert [r for r in runner.results if r.status is not JobStatus.IMPORTED] == []
    counters = await fault_run.settled()
    assert counters.sessions_peak <= CAP + fault_run.sessions_live_before
    limits = [limit for _, limit in runner.concurrency_series]
    assert limits[0] == 4 and max(limits) <= 64 and len(limits) > 1
    assert runner.limiter is not None
    await fault_run.check_invariants(runner)
    # 400 VMs would slow every later test's inventory load on the shared simulator.
    await fault_run.behave(overload_free_calls=0)
    cleaner = Cleaner(fault_run.connection,
                      await list_by_prefix(fault_run.connection, fault_run.prefix))
    await cleaner.run()
    assert len(cleaner.results) == 400


async def test_a_ramp_and_auto_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="adaptive concurrency and a ramp exclude each other"):
        RunSettings(concurrency=64, adaptive=True, ramp=(4, 8))


async def test_the_command_line_refuses_auto_with_a_ramp_in_one_line(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    batch = await write_batch(fault_run, tmp_path, f"  - name: {fault_run.prefix}-1\n")
    status, _, stderr = await run_cli(fault_run, batch, "--concurrency", "auto", "--ramp", "4:8")
    assert status == 2
    assert stderr.strip() == ("asyncovf: error: --concurrency auto and --ramp exclude each "
                              "other: auto finds the concurrency itself, a ramp prescribes it")
    assert (await fault_run.counters()).total_calls() == 0
