"""``--on-conflict replace`` says what it destroyed: the job records the VM's id, and the
console names it, for ``run`` as for the library's batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import OnConflict, RunSettings
from asyncovf.report import RunInfo, build_report
from tests.faults.support import (
    FaultRun,
    import_cli,
    job_name,
    report_jobs,
    run_batch,
    run_cli,
)
from tests.integration.inspect import list_vms

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]


async def vm_ids(run: FaultRun, name: str) -> list[str]:
    return [vm.moid for vm in await list_vms(run.connection) if vm.name == name]


async def test_replace_records_and_says_the_id_of_the_vm_it_destroyed(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    first_run = await run_batch(fault_run, count=2)
    assert all(r.status is JobStatus.IMPORTED and r.replaced is None for r in first_run.results)
    name = job_name(fault_run, 0)
    (first,) = await vm_ids(fault_run, name)

    batch = tmp_path / "fleet.yaml"
    batch.write_text(f"defaults:\n  source: {fault_run.package_path}\n  cluster: DC0_C0\n"
                     f"  datastore: LocalDS_0\nvms:\n  - name: {name}\n")
    status, stdout, stderr = await run_cli(fault_run, batch, "--on-conflict", "replace")
    assert status == 0, stderr
    (second,) = await vm_ids(fault_run, name)
    assert second != first
    assert f"asyncovf: WARNING: {name}: destroyed the existing VM {first}" in stderr
    assert f"{name}: imported {second} (replaced {first})" in stderr
    assert f"replaced {name}: destroyed {first}" in stdout  # after the summary

    # import: its one line names the VM it destroyed.
    name1 = job_name(fault_run, 1)
    (old,) = await vm_ids(fault_run, name1)
    status, stdout, stderr = await import_cli(fault_run, "--name", name1,
                                              "--on-conflict", "replace")
    assert status == 0, stderr
    (new,) = await vm_ids(fault_run, name1)
    assert stdout.startswith(f"imported {name1} as {new} (replaced {old}) ("), stdout

    # The library's batch: the job's record names it; a job that found no VM, nothing.
    runner = await run_batch(fault_run, count=3,
                             settings=RunSettings(concurrency=2,
                                                  on_conflict=OnConflict.REPLACE))
    by_name = {r.name: r for r in runner.results}
    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 3
    assert by_name[name].replaced == second
    assert by_name[job_name(fault_run, 1)].replaced == new
    assert by_name[job_name(fault_run, 2)].replaced is None
    # The report's job records say the same, and its run says which vCenter it was.
    jobs = report_jobs(runner)
    assert [jobs[job_name(fault_run, i)]["replaced"] for i in range(3)] == [second, new, None]
    assert not any(job["input_error"] for job in jobs.values())
    about = build_report(runner, RunInfo(batch=None, concurrency=2))["run"]["vcenter"]
    assert about["fullName"].startswith("VMware vCenter Server") and about["apiVersion"]
    await fault_run.check_invariants(runner)
