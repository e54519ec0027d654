"""Shared pieces of the reliability suite: a batch against vcsim, and the invariants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import BatchPlan, JobSpec
from asyncovf.engine.pool import BatchRunner
from asyncovf.ovf.package import Package, check_files
from asyncovf.ovf.source import open_package
from asyncovf.report import RunInfo, build_report
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from tests.factory import DiskSpec, build_package
from tests.integration.inspect import list_vms
from tests.vcsim.harness import Counters, Vcsim


@dataclass
class FaultRun:
    """One test's simulator, connection and package, with async helpers."""

    vcsim: Vcsim
    connection: ConnectionSettings
    package_path: Path
    prefix: str
    _package: Package | None = None
    #: Sessions the simulator counted live before this test (left by earlier tests
    #: outside the reliability suite); this test must not add to them.
    sessions_live_before: int = 0

    async def package(self) -> Package:
        if self._package is None:
            self._package = await open_package(self.package_path)
            check_files(self._package)
        return self._package

    async def set_faults(self, **rules: Any) -> None:
        await anyio.to_thread.run_sync(lambda: self.vcsim.set_faults(**rules))

    async def behave(self, **changes: Any) -> None:
        """Change what the simulator does on its own, as vCenter does (``Vcsim.behave``)."""
        await anyio.to_thread.run_sync(lambda: self.vcsim.behave(**changes))

    async def keep_aborted_vms(self) -> None:
        """Turn off vCenter's own deletion of an aborted import's VM.

        For the tests of the tool's own removal: with vCenter deleting the VM
        too, a removal the tool forgot would go unnoticed.
        """
        await self.behave(delete_on_abort=False)

    async def wait_until(self, predicate: Callable[[Counters], bool], within: float = 30.0
                         ) -> None:
        """Until the simulator's counters satisfy ``predicate`` (an event on its side)."""
        with anyio.fail_after(within):
            while not predicate(await self.counters()):  # noqa: ASYNC110 - polls the server
                await anyio.sleep(0.01)

    async def reset_counters(self) -> None:
        """Zero the simulator's counters (and clear its fault rules) mid-test."""
        await anyio.to_thread.run_sync(self.vcsim.reset_counters)

    async def counters(self) -> Counters:
        return await anyio.to_thread.run_sync(self.vcsim.counters)

    async def settled(self, within: float = 15.0) -> Counters:
        """The counters once no SOAP call is in flight in the simulator.

        A call the client gave up on (timed out, interrupted) still runs to its
        end in the simulator, and may create something: the invariants are
        checked on what the server did, so wait for it.
        """
        with anyio.fail_after(within):
            while True:
                counters = await self.counters()
                if all(m.get("started", 0) <= m.get("calls", 0)
                       for m in counters.methods.values()):
                    return counters
                await anyio.sleep(0.05)

    async def check_invariants(self, runner: BatchRunner | None = None, *,
                               imported: set[str] | None = None) -> None:
        """Sessions closed, leases ended, and only imported jobs' VMs in the inventory.

        The imported jobs are the runner's, or ``imported`` (e.g. from a CLI
        run's report); with neither, the inventory is not checked.
        """
        counters = await self.settled()
        assert counters.sessions_live == self.sessions_live_before, \
            "a session was not logged out"
        assert counters.ok("Login") == counters.ok("Logout") + counters.sessions_expired
        assert counters.leases_open == 0, "a lease is still open"
        # A lease ends with the session that made it: a worker's Logout ending an
        # open lease is a leak hidden by the Logout, unless ImportVApp's answer was
        # lost (renewing the session is asyncovf's only way to end a lease it never
        # learned). Lost answers by the simulator's own count, never the client's:
        # the answers its rules dropped or held back.
        lost = counters.dropped("ImportVApp") + counters.delayed("ImportVApp")
        assert counters.leases_ended_by_logout <= lost, "a lease was left to end at Logout"
        if runner is not None:  # and the client renews only for such an answer
            assert runner.sessions_renewed <= lost
        assert counters.ok("ImportVApp") == (
            counters.ok("HttpNfcLeaseComplete") + counters.ok("HttpNfcLeaseAbort")
            + counters.leases_ended_by_server + counters.leases_ended_by_logout)
        names = {vm.name for vm in await list_vms(self.connection)
                 if vm.name.startswith(self.prefix)}
        if runner is not None:
            assert runner.sessions_opened == runner.sessions_closed
            imported = {r.name for r in runner.results if r.status is JobStatus.IMPORTED}
        if imported is not None:
            assert names == imported, "a VM is in the inventory that no job reported imported"


ROOT = Path(__file__).resolve().parents[2]


def cli_environment(run: FaultRun) -> dict[str, str]:
    """The environment a user's shell gives ``asyncovf``: the simulator's VSPHERE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=run.vcsim.url, VSPHERE_USER=run.vcsim.username,
               VSPHERE_PASSWORD=run.vcsim.password)
    return env


async def run_cli(run: FaultRun, batch: Path, *args: str) -> tuple[int, str, str]:
    """``asyncovf run BATCH ARGS`` as a user runs it: (exit status, stdout, stderr)."""
    result = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "run", str(batch), "--ca-file",
         str(run.vcsim.ca_file), "--progress", "plain", *args],
        env=cli_environment(run), cwd=ROOT, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def signal_run(run: FaultRun, batch: Path, report: Path,
                     reached: Callable[[Counters], bool], *args: str) -> tuple[int, str]:
    """``asyncovf run ARGS`` with SIGINT once ``reached(counters)``; (status, stderr)."""
    process = await anyio.open_process(
        [sys.executable, "-m", "asyncovf", "run", str(batch), "--ca-file",
         str(run.vcsim.ca_file), "--progress", "plain", "--concurrency", "3",
         "--report", str(report), *args],
        env=cli_environment(run), cwd=ROOT, stdout=subprocess.DEVNULL)
    async with process:
        await run.wait_until(reached)
        assert process.returncode is None, "the run ended before its signal"
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        stderr = b"".join([chunk async for chunk in process.stderr])
        status = await process.wait()
    return status, stderr.decode()


async def write_batch(run: FaultRun, directory: Path, vms: str, defaults: str = "") -> Path:
    """``directory/fleet.yaml``: the run's package, cluster DC0_C0 and LocalDS_0 as
    defaults (plus ``defaults``, YAML lines of two-space indent), then ``vms``."""
    batch = directory / "fleet.yaml"
    await anyio.Path(batch).write_text(
        f"defaults:\n  source: {run.package_path}\n  cluster: DC0_C0\n"
        f"  datastore: LocalDS_0\n{defaults}vms:\n{vms}")
    return batch


async def run_cli_report(run: FaultRun, batch: Path, *args: str
                         ) -> tuple[int, str, str, dict[str, Any]]:
    """:func:`run_cli` with ``--report``: (exit status, stdout, stderr, the report)."""
    report = batch.parent / "report.json"
    status, stdout, stderr = await run_cli(run, batch, "--report", str(report), *args)
    assert status != 1, stderr  # the report is written whatever the jobs' fate
    return status, stdout, stderr, json.loads(await anyio.Path(report).read_text())


async def import_cli(run: FaultRun, *args: str) -> tuple[int, str, str]:
    """``asyncovf import PACKAGE ARGS`` as a user runs it: (exit status, stdout, stderr)."""
    result = await anyio.run_process(
        [sys.executable, "-m", "asyncovf", "import", str(run.package_path), "--ca-file",
         str(run.vcsim.ca_file), "--cluster", "DC0_C0", "--datastore", "LocalDS_0", *args],
        env=cli_environment(run), cwd=ROOT, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def job_name(run: FaultRun, index: int) -> str:
    """The name of job ``index`` (0-based) of :func:`plan_of`'s batch."""
    return f"{run.prefix}-{index:03d}"


def plan_of(run: FaultRun, count: int) -> BatchPlan:
    jobs = tuple(JobSpec(index=i, name=job_name(run, i), source=str(run.package_path),
                         placement=PlacementRequest(cluster="DC0_C0", datastore="LocalDS_0"),
                         origin="test") for i in range(count))
    return BatchPlan("test", {}, jobs)


async def run_batch(run: FaultRun, *, count: int,
                    settings: RunSettings | None = None) -> BatchRunner:
    package = await run.package()
    plan = plan_of(run, count)
    runner = BatchRunner(run.connection, plan.jobs, {str(run.package_path): package},
                         settings or RunSettings(concurrency=2))
    await runner.run()
    return runner


def make_package(directory: Path, name: str = "appliance") -> Path:
    return build_package(directory, name, disks=(DiskSpec(16, 300_000),)).path


def report_jobs(runner: BatchRunner) -> dict[str, dict[str, Any]]:
    """The run report's job records by name, as ``--report`` would write them."""
    report = build_report(runner, RunInfo(batch=None, concurrency=runner.settings.concurrency))
    report = json.loads(json.dumps(report))  # exactly what a reader of the file sees
    return {job["name"]: job for job in report["jobs"]}
