"""``run_batch``, the library's ``asyncovf run``: one result per job, nothing left behind.

Whatever happens — every job imported, a source that does not open, a login
refused, a cancellation mid-run — every job's result says what became of it,
and the simulator has no session logged in, no lease open and no VM that a
job did not report imported.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncovf import (
    BatchPlan,
    ConnectionSettings,
    JobResult,
    JobStatus,
    RunSettings,
    load_batch,
    run_batch,
)
from tests.faults.support import FaultRun

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def run(fault_run: FaultRun) -> FaultRun:
    """The shared simulator's live sessions may include an earlier test's: not this one's."""
    fault_run.sessions_live_before = (await fault_run.counters()).sessions_live
    return fault_run


async def fleet(run: FaultRun, directory: Path, vms: str) -> BatchPlan:
    """A batch file importing the test's package into the simulator's DC0_C0, loaded."""
    path = directory / "fleet.yaml"
    await anyio.Path(path).write_text(
        f"defaults:\n  source: {run.package_path}\n  cluster: DC0_C0\n"
        f"  datastore: LocalDS_0\nvms:\n{vms}")
    return await anyio.to_thread.run_sync(load_batch, path)


def outcomes(results: list[JobResult]) -> dict[str, JobStatus]:
    return {result.name: result.status for result in results}


async def test_every_job_is_imported_with_one_result_each(run: FaultRun, tmp_path: Path) -> None:
    plan = await fleet(run, tmp_path, f'  - name: "{run.prefix}-{{index}}"\n    count: 3\n')
    seen: set[str] = set()

    results = await run_batch(run.connection, plan, RunSettings(concurrency=2),
                              on_update=lambda result: seen.add(result.name))

    names = [f"{run.prefix}-{i}" for i in (1, 2, 3)]
    assert [r.name for r in results] == names  # in the batch file's order
    assert all(r.status is JobStatus.IMPORTED and r.vm for r in results), results
    assert seen == set(names)
    await run.check_invariants(imported=set(names))


async def test_a_source_that_does_not_open_fails_only_its_jobs(
    run: FaultRun, tmp_path: Path
) -> None:
    plan = await fleet(run, tmp_path, f'  - name: "{run.prefix}-good{{index}}"\n    count: 2\n'
                                      f'  - name: "{run.prefix}-bad"\n'
                                      f"    source: {tmp_path}/missing.ova\n")

    results = await run_batch(run.connection, plan, RunSettings(concurrency=2))

    good = {f"{run.prefix}-good1", f"{run.prefix}-good2"}
    assert outcomes(results) == {**dict.fromkeys(good, JobStatus.IMPORTED),
                                 f"{run.prefix}-bad": JobStatus.FAILED}
    bad = results[-1]
    assert (bad.attempts, bad.input_error, bad.error_kind) == (0, True, "package")
    assert bad.error == f"{tmp_path}/missing.ova: no such file or directory"
    counters = await run.settled()
    assert counters.calls("ImportVApp") == 2  # nothing was tried for the bad source
    await run.check_invariants(imported=good)


async def test_a_refused_login_fails_every_job_as_not_started(
    run: FaultRun, tmp_path: Path
) -> None:
    plan = await fleet(run, tmp_path, f'  - name: "{run.prefix}-{{index}}"\n    count: 2\n')
    connection = ConnectionSettings(server=run.vcsim.url, username=run.vcsim.username,
                                    password="wrong", ca_file=str(run.vcsim.ca_file))

    results = await run_batch(connection, plan)  # raises nothing: the results say why

    assert [(r.status, r.error_kind, r.attempts) for r in results] == [
        (JobStatus.FAILED, "not started", 0)] * 2
    assert all(r.error and r.error.startswith("not started: ") for r in results)
    counters = await run.settled()
    assert counters.ok("Login") == 0 and counters.calls("ImportVApp") == 0
    await run.check_invariants(imported=set())


async def test_cancelled_mid_run_every_job_is_settled_and_nothing_is_left(
    run: FaultRun, tmp_path: Path
) -> None:
    plan = await fleet(run, tmp_path, f'  - name: "{run.prefix}-{{index}}"\n    count: 6\n')
    seen: dict[str, JobResult] = {}

    with anyio.CancelScope() as scope:
        def cancel_after_the_first_import(result: JobResult) -> None:
            seen[result.name] = result
            if result.status is JobStatus.IMPORTED:
                scope.cancel()

        await run_batch(run.connection, plan, RunSettings(concurrency=2),
                        on_update=cancel_after_the_first_import)

    assert scope.cancelled_caught
    assert all(result.done for result in seen.values()), outcomes(list(seen.values()))
    imported = {name for name, result in seen.items() if result.status is JobStatus.IMPORTED}
    assert 1 <= len(imported) < 6
    await run.check_invariants(imported=imported)
