"""The promises ``asyncovf run`` keeps, kept by ``asyncovf import`` and the library too.

Both go through the one job (``engine/job.py``): the same faults as the batch
suite — a lost ImportVApp answer, a lease that never becomes ready, a name
conflict, a signal at every phase — must leave the same nothing behind. The
oracle is the simulator's own counters: Login = Logout, every ImportVApp ended
by Complete, Abort or the end of its session, and no VM that was not imported.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import ImportOptions, OnConflict, RunSettings
from asyncovf.engine.phases import JobState
from asyncovf.engine.pool import BatchRunner
from asyncovf.errors import LeaseError, NameConflict, TransportError
from asyncovf.importer import Importer
from asyncovf.vsphere.inventory import PlacementRequest
from tests.faults.support import (
    ROOT,
    FaultRun,
    cli_environment,
    import_cli,
    job_name,
    plan_of,
    run_batch,
)
from tests.integration.inspect import list_vms
from tests.vcsim.harness import Counters

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.anyio]

PLACEMENT = PlacementRequest(cluster="DC0_C0", datastore="LocalDS_0")


async def library_import(run: FaultRun, name: str, options: ImportOptions | None = None, *,
                         on_conflict: OnConflict = OnConflict.FAIL
                         ) -> tuple[JobState, Exception | None, int]:
    """One import through the library: (state, the error raised, sessions renewed)."""
    package = await run.package()
    state = JobState(name=name)
    error: Exception | None = None
    async with Importer(run.connection) as importer:
        placement = await importer.resolve(PLACEMENT)
        try:
            await importer.import_package(package, name, placement, options,
                                          on_conflict=on_conflict, state=state)
        except Exception as exc:
            error = exc
        renewed = importer.session.renewals
    return state, error, renewed


async def vm_ids(run: FaultRun, name: str) -> list[str]:
    return [vm.moid for vm in await list_vms(run.connection) if vm.name == name]


async def a_vm_named(run: FaultRun) -> tuple[str, str]:
    """Job 0's name, taken by a VM imported for the test: (the name, its id); the
    counters reset after it."""
    name = job_name(run, 0)
    assert (await library_import(run, name))[1] is None
    (moid,) = await vm_ids(run, name)
    await run.reset_counters()
    return name, moid


def report_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# -- a lost ImportVApp answer ----------------------------------------------------------------

async def test_import_cli_recovers_a_lost_importvapp_answer(fault_run: FaultRun,
                                                            tmp_path: Path) -> None:
    name = job_name(fault_run, 0)
    await fault_run.keep_aborted_vms()  # the VM's removal is the tool's to prove
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "times": 1,
                                      "drop_after_call": True}])
    report = tmp_path / "report.json"
    status, _, stderr = await import_cli(fault_run, "--name", name, "--report", str(report))
    assert status == 1, stderr
    assert stderr.strip().splitlines()[-1].startswith("asyncovf: error: ImportVApp call to ")
    data = report_of(report)
    assert data["totals"]["sessions_renewed"] == 1
    assert data["jobs"][0]["status"] == "failed" and data["jobs"][0]["cleanup_errors"] == []
    counters = await fault_run.settled()
    assert counters.leases_ended_by_logout == 1 and counters.ok("Destroy_Task") == 1
    await fault_run.check_invariants(imported=set())


async def test_import_cli_with_a_job_retry_imports_after_a_lost_importvapp_answer(
    fault_run: FaultRun,
) -> None:
    name = job_name(fault_run, 0)
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "times": 1,
                                      "drop_after_call": True}])
    status, stdout, stderr = await import_cli(fault_run, "--name", name, "--job-retries", "1")
    assert status == 0, stderr
    assert stdout.startswith(f"imported {name} as vm-")
    await fault_run.check_invariants(imported={name})


async def test_the_library_recovers_a_lost_importvapp_answer(fault_run: FaultRun) -> None:
    name = job_name(fault_run, 0)
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "times": 1,
                                      "drop_after_call": True}])
    state, error, renewed = await library_import(fault_run, name)
    assert isinstance(error, TransportError), error
    assert renewed == 1 and state.cleanup_errors == []
    await fault_run.check_invariants(imported=set())


# -- a lease that never becomes ready ----------------------------------------------------------

async def test_import_cli_aborts_a_lease_that_never_becomes_ready_and_removes_the_vm(
    fault_run: FaultRun,
) -> None:
    name = job_name(fault_run, 0)
    await fault_run.keep_aborted_vms()  # the VM's removal is the tool's to prove
    await fault_run.set_faults(lease={"initializing_reads": 1_000_000})
    status, _, stderr = await import_cli(fault_run, "--name", name, "--lease-timeout", "1")
    assert status == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("asyncovf: error: lease ") and last.endswith(
        f"for {name!r} not ready after 1 s"), stderr
    counters = await fault_run.settled()
    assert counters.ok("HttpNfcLeaseAbort") == 1 and counters.ok("Destroy_Task") == 1
    await fault_run.check_invariants(imported=set())


async def test_the_library_aborts_a_lease_that_never_becomes_ready_and_removes_the_vm(
    fault_run: FaultRun,
) -> None:
    name = job_name(fault_run, 0)
    await fault_run.keep_aborted_vms()  # the VM's removal is the tool's to prove
    await fault_run.set_faults(lease={"initializing_reads": 1_000_000})
    state, error, _ = await library_import(fault_run, name,
                                           ImportOptions(lease_ready_timeout=1))
    assert isinstance(error, LeaseError) and "not ready after 1 s" in str(error)
    assert state.cleanup_errors == []
    assert (await fault_run.settled()).ok("Destroy_Task") == 1
    await fault_run.check_invariants(imported=set())


# -- a name that is taken ----------------------------------------------------------------------

async def test_import_cli_refuses_a_taken_name_in_one_line_and_creates_nothing(
    fault_run: FaultRun,
) -> None:
    name = job_name(fault_run, 0)
    _, error, _ = await library_import(fault_run, name)
    assert error is None
    (existing,) = await vm_ids(fault_run, name)
    await fault_run.reset_counters()
    status, stdout, stderr = await import_cli(fault_run, "--name", name)
    assert status == 2, stderr
    assert stderr.strip() == (f"asyncovf: error: a VM named {name!r} already exists in /DC0/vm "
                              f"({existing}); use --on-conflict skip or replace")
    # ImportVApp is vCenter's name check (DuplicateName): it creates nothing.
    counters = await fault_run.settled()
    assert (counters.calls("ImportVApp"), counters.faults("ImportVApp")) == (1, 1)
    await fault_run.check_invariants(imported={name})


async def test_import_cli_on_conflict_skip_leaves_a_finished_vm_and_replace_renews_it(
    fault_run: FaultRun,
) -> None:
    name = job_name(fault_run, 0)
    _, error, _ = await library_import(fault_run, name)
    assert error is None
    (first,) = await vm_ids(fault_run, name)
    status, stdout, stderr = await import_cli(fault_run, "--name", name, "--on-conflict", "skip")
    assert (status, stdout.strip()) == (0, f"skipped {name}: it exists as {first} "
                                           "(--on-conflict skip)"), stderr
    assert await vm_ids(fault_run, name) == [first]
    status, stdout, stderr = await import_cli(fault_run, "--name", name,
                                              "--on-conflict", "replace")
    assert status == 0, stderr
    (second,) = await vm_ids(fault_run, name)
    assert second != first and stdout.startswith(f"imported {name} as {second}")
    await fault_run.check_invariants(imported={name})


async def test_the_library_raises_a_name_conflict_and_creates_nothing(
    fault_run: FaultRun,
) -> None:
    # The name is not asked for first: vCenter's DuplicateName answers ImportVApp,
    # and only then is the VM holding the name looked at, to say what it is.
    name, first = await a_vm_named(fault_run)
    _, error, _ = await library_import(fault_run, name)
    assert isinstance(error, NameConflict) and error.vm == name
    assert str(error) == (f"a VM named {name!r} already exists in /DC0/vm ({first}); "
                          "use --on-conflict skip or replace")
    counters = await fault_run.counters()
    assert (counters.calls("ImportVApp"), counters.faults("ImportVApp")) == (1, 1)
    assert await vm_ids(fault_run, name) == [first]
    await fault_run.check_invariants(imported={name})


async def test_a_new_name_is_not_asked_for_before_importvapp(fault_run: FaultRun) -> None:
    name = job_name(fault_run, 0)
    await fault_run.reset_counters()
    assert (await library_import(fault_run, name))[1] is None
    counters = await fault_run.counters()
    assert (counters.calls("FindChild"), counters.ok("ImportVApp")) == (0, 1)
    await fault_run.check_invariants(imported={name})


async def test_a_lost_importvapp_answer_leaves_the_vm_that_held_the_name(
    fault_run: FaultRun,
) -> None:
    # ImportVApp met a VM of that name (DuplicateName) and its answer was lost:
    # the job cannot tell that from a VM it made, but for the token in the mark
    # of the VM it made. The VM that was there is not the job's to remove.
    name, first = await a_vm_named(fault_run)
    await fault_run.keep_aborted_vms()  # nothing but the tool could remove it
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "times": 1,
                                      "drop_after_call": True}])
    state, error, renewed = await library_import(fault_run, name)
    assert isinstance(error, TransportError), error
    assert renewed == 1 and state.cleanup_errors == []
    counters = await fault_run.settled()
    assert counters.faults("ImportVApp") == 1  # DuplicateName, never heard
    assert counters.calls("Destroy_Task") == 0
    assert await vm_ids(fault_run, name) == [first]
    await fault_run.check_invariants(imported={name})


# -- skip trusts only finished imports --------------------------------------------------------

async def test_skip_reimports_a_vm_whose_import_never_finished(fault_run: FaultRun) -> None:
    # A process killed mid-import leaves its VM marked "importing" (kept here
    # with keep_failed, as a SIGKILL would leave it): vCenter deletes such a VM
    # once its lease times out, so skip must not count it as done. (Here vCenter
    # keeps it, so that it is still there when the second run looks.)
    name = job_name(fault_run, 0)
    await fault_run.keep_aborted_vms()
    await fault_run.set_faults(lease={"initializing_reads": 1_000_000})
    _, error, _ = await library_import(fault_run, name, ImportOptions(lease_ready_timeout=0.5,
                                                                      keep_failed=True))
    assert isinstance(error, LeaseError)
    (unfinished,) = await vm_ids(fault_run, name)
    await fault_run.reset_counters()
    status, stdout, stderr = await import_cli(fault_run, "--name", name, "--on-conflict", "skip")
    assert status == 0, stderr
    (imported,) = await vm_ids(fault_run, name)
    assert imported != unfinished and stdout.startswith(f"imported {name} as {imported}")
    # One extra round trip for the unfinished VM: reading its mark.
    counters = await fault_run.counters()
    assert counters.ok("Destroy_Task") == 1 and counters.ok("ImportVApp") == 1
    await fault_run.check_invariants(imported={name})


async def test_skip_never_destroys_a_vm_asyncovf_did_not_create(fault_run: FaultRun) -> None:
    # vcsim's own VMs carry no mark of ours: whatever their state, skip leaves them.
    name = "DC0_C0_RP0_VM0"
    (existing,) = await vm_ids(fault_run, name)
    status, stdout, stderr = await import_cli(fault_run, "--name", name, "--on-conflict", "skip")
    assert (status, stdout.strip()) == (0, f"skipped {name}: it exists as {existing} "
                                           "(--on-conflict skip)"), stderr
    assert await vm_ids(fault_run, name) == [existing]
    counters = await fault_run.counters()
    assert counters.calls("Destroy_Task") == 0 and counters.calls("ImportVApp") == 0


# -- the name default -------------------------------------------------------------------------

async def test_import_cli_takes_the_name_from_the_options_document(fault_run: FaultRun,
                                                                   tmp_path: Path) -> None:
    name = job_name(fault_run, 0)
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"Name": name}))
    status, stdout, stderr = await import_cli(fault_run, "--options", str(options))
    assert status == 0, stderr
    assert stdout.startswith(f"imported {name} as vm-")
    await fault_run.check_invariants(imported={name})


# -- an inventory that cannot be read ---------------------------------------------------------

async def test_an_inventory_failure_fails_its_jobs_only_never_the_batch(
    fault_run: FaultRun,
) -> None:
    # The first inventory read fails: the jobs waiting on it fail with the
    # fault's kind; later jobs read it again and import. No ExceptionGroup, no
    # worker lost, nothing else cancelled.
    await fault_run.set_faults(soap=[{"method": "RetrievePropertiesEx", "nth": 1,
                                      "fault": "SystemError"}])
    runner = await run_batch(fault_run, count=4, settings=RunSettings(concurrency=2,
                                                                      job_retries=0))
    failed = [r for r in runner.results if r.status is JobStatus.FAILED]
    imported = [r for r in runner.results if r.status is JobStatus.IMPORTED]
    assert failed and imported and len(failed) + len(imported) == 4
    assert {(r.error_kind, r.attempts, r.input_error) for r in failed} == {
        ("SystemError", 1, False)}
    assert not runner.worker_errors
    await fault_run.check_invariants(runner)


# -- a lost PowerOn answer, then a refused PowerOff ------------------------------------------

async def test_a_vm_whose_power_on_answer_was_lost_is_removed_and_imported_again(
    fault_run: FaultRun,
) -> None:
    # PowerOn happened but its answer was lost: the step fails, and removing the
    # VM meets a PowerOff refused once. The removal is tried again (the VM is
    # not left), and the job's retry imports instead of meeting the old VM as a
    # name conflict (an input error: exit 2).
    await fault_run.set_faults(soap=[
        {"method": "PowerOnVM_Task", "times": 1, "drop_after_call": True},
        {"method": "PowerOffVM_Task", "times": 1, "fault": "TaskInProgress"}])
    package = await fault_run.package()
    jobs = tuple(dataclasses.replace(job, options=ImportOptions(power_on=True))
                 for job in plan_of(fault_run, 2).jobs)
    runner = BatchRunner(fault_run.connection, jobs, {str(fault_run.package_path): package},
                         RunSettings(concurrency=1, job_retries=1))
    await runner.run()
    assert [(r.status, r.cleanup_errors) for r in runner.results] == \
        [(JobStatus.IMPORTED, [])] * 2
    assert [r.attempts for r in runner.results] == [2, 1]
    counters = await fault_run.settled()
    assert counters.faults("PowerOffVM_Task") == 1 and counters.ok("Destroy_Task") == 1
    await fault_run.check_invariants(runner)


# -- signals, at every phase ------------------------------------------------------------------

HOLD_MS = 400
HELD = {"login": "Login", "import": "ImportVApp", "post-import": "PowerOnVM_Task"}


def import_faults(kind: str) -> dict[str, Any]:
    if kind in HELD:
        return {"soap": [{"method": HELD[kind], "delay_ms": HOLD_MS}]}
    if kind == "lease-wait":
        return {"lease": {"initializing_reads": 1_000_000}}
    return {"nfc": [{"throttle_bps": 200_000}]}  # upload


def reached(kind: str, counters: Counters) -> bool:
    if kind in HELD:
        return counters.started(HELD[kind]) > counters.calls(HELD[kind])
    if kind == "lease-wait":
        return counters.leases_created >= 1
    return counters.nfc_bytes >= 50_000


async def signal_import(run: FaultRun, kind: str, sig: signal.Signals,
                        *args: str) -> tuple[int, str]:
    """Start ``asyncovf import``, signal it once ``kind`` is under way; (status, stderr)."""
    process = await anyio.open_process(
        [sys.executable, "-m", "asyncovf", "import", str(run.package_path), "--ca-file",
         str(run.vcsim.ca_file), "--cluster", "DC0_C0", "--datastore", "LocalDS_0",
         "--name", job_name(run, 0), *args],
        env=cli_environment(run), cwd=ROOT, stdout=subprocess.DEVNULL)
    async with process:
        await run.wait_until(lambda counters: reached(kind, counters))
        assert process.returncode is None, "the import ended before its signal"
        process.send_signal(sig)
        assert process.stderr is not None
        stderr = b"".join([chunk async for chunk in process.stderr])
        status = await process.wait()
    return status, stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["login", "import", "lease-wait", "upload", "post-import"])
async def test_a_signal_to_import_at_any_phase_leaves_nothing_behind(
    fault_run: FaultRun, kind: str, sig: signal.Signals,
) -> None:
    await fault_run.set_faults(**import_faults(kind))
    status, stderr = await signal_import(fault_run, kind, sig, "--power-on")
    assert status == 130, stderr
    assert f"interrupted ({sig.name})" in stderr and "Traceback" not in stderr
    await fault_run.check_invariants(imported=set())


@pytest.mark.parametrize("kind", ["import", "lease-wait", "upload", "post-import"])
async def test_cancelling_a_library_import_at_any_phase_leaves_nothing_behind(
    fault_run: FaultRun, kind: str,
) -> None:
    await fault_run.set_faults(**import_faults(kind))
    outcome: list[tuple[JobState, Exception | None, int]] = []

    async def work() -> None:
        outcome.append(await library_import(fault_run, job_name(fault_run, 0),
                                            ImportOptions(power_on=True)))

    async with anyio.create_task_group() as group:
        group.start_soon(work)
        await fault_run.wait_until(lambda counters: reached(kind, counters))
        group.cancel_scope.cancel()
    assert outcome == []  # the cancellation went through, unchanged
    await fault_run.check_invariants(imported=set())


async def test_a_signal_with_vcenter_frozen_exits_without_waiting_for_it(
    fault_run: FaultRun,
) -> None:
    # Mid-upload, vCenter stops answering: every call is held 14 s. The signal's
    # cleanup budget (10 s) ends the process while the simulator still holds its
    # Abort and Logout; they are carried out afterwards, so nothing leaks.
    await fault_run.set_faults(nfc=[{"throttle_bps": 200_000}])
    process = await anyio.open_process(
        [sys.executable, "-m", "asyncovf", "import", str(fault_run.package_path), "--ca-file",
         str(fault_run.vcsim.ca_file), "--cluster", "DC0_C0", "--datastore", "LocalDS_0",
         "--name", job_name(fault_run, 0)],
        env=cli_environment(fault_run), cwd=ROOT, stdout=subprocess.DEVNULL)
    async with process:
        await fault_run.wait_until(lambda counters: reached("upload", counters))
        await fault_run.set_faults(soap=[{"method": "*", "delay_ms": 14_000}])
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        stderr = (b"".join([chunk async for chunk in process.stderr])).decode()
        status = await process.wait()
    counters = await fault_run.counters()
    held = [m for m in counters.methods if counters.started(m) > counters.calls(m)]
    assert status == 130, stderr
    assert "within 10 s" in stderr
    assert "HttpNfcLeaseAbort" in held  # the process did not wait for vCenter's answer
    await fault_run.set_faults()
    counters = await fault_run.settled(within=40)
    assert counters.leases_open == 0
    assert counters.ok("Login") == counters.ok("Logout")
