"""strategy: clone against the simulator: one upload per group, every VM a clone, the seed
removed (or kept, and then the run's cleanup takes it), and a failed seed failing its group
with nothing left behind. Every invariant is read from the simulator's counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from pyVmomi import vim

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.marks import IMPORT_FINISHED, IMPORT_MARK_KEY
from asyncovf.engine.options import RunSettings
from asyncovf.engine.seeds import SeedStatus
from asyncovf.vsphere.session import VCenterSession
from tests.faults.support import FaultRun, plan_of, run_cli, run_cli_report, write_batch
from tests.integration.inspect import list_vms

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def clone_run(run: FaultRun, count: int, settings: RunSettings) -> Any:
    from asyncovf.engine.pool import BatchRunner

    package = await run.package()
    runner = BatchRunner(run.connection, plan_of(run, count).jobs,
                         {str(run.package_path): package}, settings)
    await runner.run()
    return runner


async def vm_facts(run: FaultRun, names: set[str]) -> dict[str, dict[str, Any]]:
    """name → its template flag, import mark and annotation, read from the simulator."""
    facts = {}
    async with VCenterSession(run.connection) as session:
        for vm in await list_vms(run.connection):
            if vm.name in names:
                props = await session.retrieve(vim.VirtualMachine(vm.moid), [
                    "config.template", "config.extraConfig", "config.annotation"])
                marks = [o.value for o in props["config.extraConfig"] or ()
                         if o.key == IMPORT_MARK_KEY]
                facts[vm.name] = {"template": props["config.template"],
                                  "mark": marks[-1] if marks else None,
                                  "annotation": props.get("config.annotation")}
    return facts


async def test_two_hundred_vms_are_one_upload_and_two_hundred_clones(
    fault_run: FaultRun,
) -> None:
    runner = await clone_run(fault_run, 200, RunSettings(concurrency=16, strategy="clone"))

    assert [r.error for r in runner.results if r.status is not JobStatus.IMPORTED] == []
    counters = await fault_run.counters()
    package = await fault_run.package()
    disk_bytes = sum(f.content_size or 0 for f in package.files.values())
    # One import (the seed) uploaded the disk once; every VM is a clone of it.
    assert counters.ok("ImportVApp") == 1 and counters.nfc_bytes == disk_bytes
    assert counters.ok("CloneVM_Task") == 200 and counters.ok("MarkAsTemplate") == 1
    # A clone asking for no step is made finished: the seed's mark is the one Reconfig.
    assert counters.calls("ReconfigVM_Task") == 1
    assert all(r.timings.get("clone", 0) > 0 and "upload" not in r.timings
               for r in runner.results)
    [seed] = runner.seeds.seeds
    assert seed.status is SeedStatus.REMOVED and seed.jobs == 200
    # Every clone finished (the mark says done); the seed is gone: the inventory holds
    # exactly the imported VMs, by the simulator's own listing.
    names = {r.name for r in runner.results}
    facts = await vm_facts(fault_run, names)
    assert {name: f["mark"] for name, f in facts.items()} == dict.fromkeys(names, IMPORT_FINISHED)
    assert not any(f["template"] for f in facts.values())
    await fault_run.check_invariants(runner)
    assert counters.sessions_peak <= 16


async def test_a_seed_that_fails_fails_its_group_with_one_line_and_leaves_nothing(
    fault_run: FaultRun,
) -> None:
    # The seed's import is refused for good (a permanent fault: no attempt helps).
    await fault_run.set_faults(soap=[{"method": "ImportVApp", "fault": "NoPermission"}])
    runner = await clone_run(fault_run, 6, RunSettings(concurrency=3, strategy="clone"))

    [seed] = runner.seeds.seeds
    errors = {r.error for r in runner.results}
    assert [r.status for r in runner.results] == [JobStatus.FAILED] * 6
    assert len(errors) == 1 and errors.pop().startswith(f"seed {seed.name} failed: ")
    assert {r.error_kind for r in runner.results} == {"seed: NoPermission"}
    counters = await fault_run.counters()
    assert counters.calls("ImportVApp") == 1 and counters.calls("CloneVM_Task") == 0
    await fault_run.check_invariants(runner)


async def test_a_kept_seed_stays_and_the_cleanup_of_the_run_removes_it_too(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    batch = await write_batch(
        fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n    count: 4\n'
        '    annotation: "web {index}"\n', defaults="  strategy: clone\n  keep_seed: true\n")
    status, stdout, stderr, report = await run_cli_report(fault_run, batch,
                                                          "--concurrency", "2")
    assert status == 0, stderr
    report_path = batch.parent / "report.json"
    [seed] = report["seeds"]
    assert seed["status"] == "kept" and seed["jobs"] == 4
    assert f"seed {seed['name']} ({seed['vm']}) for 4 VMs: kept" in stdout
    assert report["run"]["settings"]["strategy"] == "import"  # the batch said clone
    assert {job["timings"].keys() >= {"seed", "clone"} for job in report["jobs"]} == {True}
    imported = {f"{fault_run.prefix}-{i}" for i in range(1, 5)}
    facts = await vm_facts(fault_run, imported | {seed["name"]})
    assert facts[seed["name"]]["template"] is True
    # Each clone's own annotation, from its clone spec (the seed has none of it).
    assert {name: facts[name]["annotation"] for name in imported} == {
        f"{fault_run.prefix}-{i}": f"web {i}" for i in range(1, 5)}
    assert not facts[seed["name"]]["annotation"]
    await fault_run.check_invariants(imported=imported | {seed["name"]})

    result = await anyio.run_process(
        [*cleanup_command(fault_run), "--report", str(report_path), "--yes"],
        env=cli_env(fault_run), check=False)
    assert result.returncode == 0, result.stderr.decode()
    await fault_run.check_invariants(imported=set())


def cleanup_command(run: FaultRun) -> list[str]:
    import sys

    return [sys.executable, "-m", "asyncovf", "cleanup", "--ca-file", str(run.vcsim.ca_file)]


def cli_env(run: FaultRun) -> dict[str, str]:
    from tests.faults.support import cli_environment

    return cli_environment(run)


async def test_linked_clones_come_from_one_snapshot_of_a_seed_that_is_kept(
    fault_run: FaultRun,
) -> None:
    from dataclasses import replace

    from asyncovf.engine.pool import BatchRunner

    package = await fault_run.package()
    jobs = tuple(replace(spec, options=replace(spec.options, linked_clone=True))
                 for spec in plan_of(fault_run, 5).jobs)
    runner = BatchRunner(fault_run.connection, jobs, {str(fault_run.package_path): package},
                         RunSettings(concurrency=2, strategy="clone"))
    await runner.run()

    assert [r.status for r in runner.results] == [JobStatus.IMPORTED] * 5
    [seed] = runner.seeds.seeds
    counters = await fault_run.counters()
    assert counters.ok("CreateSnapshot_Task") == 1 and counters.ok("MarkAsTemplate") == 0
    assert seed.status is SeedStatus.KEPT and seed.snapshot is not None
    facts = await vm_facts(fault_run, {seed.name})
    assert facts[seed.name]["template"] is False
    await fault_run.check_invariants(
        imported={r.name for r in runner.results} | {seed.name})


async def test_a_run_found_seed_is_used_with_skip_and_left_where_it_was(
    fault_run: FaultRun,
) -> None:
    from dataclasses import replace

    from asyncovf.engine.options import OnConflict
    from asyncovf.engine.pool import BatchRunner

    package = await fault_run.package()
    packages = {str(fault_run.package_path): package}
    kept = tuple(replace(spec, options=replace(spec.options, keep_seed=True))
                 for spec in plan_of(fault_run, 3).jobs)
    first = BatchRunner(fault_run.connection, kept[:1], packages,
                        RunSettings(concurrency=1, strategy="clone"))
    await first.run()
    [seed] = first.seeds.seeds
    assert seed.status is SeedStatus.KEPT
    await fault_run.reset_counters()

    # The same batch, grown by two VMs: the first is skipped, the others need the seed.
    second = BatchRunner(fault_run.connection, kept, packages,
                         RunSettings(concurrency=1, strategy="clone",
                                     on_conflict=OnConflict.SKIP))
    await second.run()
    assert [r.status for r in second.results] == [JobStatus.SKIPPED] + [JobStatus.IMPORTED] * 2
    [found] = second.seeds.seeds
    assert found.name == seed.name and found.status is SeedStatus.FOUND
    counters = await fault_run.counters()
    assert counters.calls("ImportVApp") == 0 and counters.ok("CloneVM_Task") == 2
    await fault_run.check_invariants(
        imported={r.name for r in (*first.results, *second.results)} | {seed.name})


async def test_strategy_clone_on_the_command_line_clones_entries_that_do_not_say(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    batch = await write_batch(
        fault_run, tmp_path, f'  - name: "{fault_run.prefix}-{{index}}"\n    count: 3\n'
        f'  - name: "{fault_run.prefix}-own"\n    strategy: import\n')
    status, _, stderr, report = await run_cli_report(fault_run, batch, "--strategy", "clone")
    assert status == 0, stderr
    assert report["run"]["settings"]["strategy"] == "clone"
    assert [seed["jobs"] for seed in report["seeds"]] == [3]
    counters = await fault_run.counters()
    # The seed and the entry that says import are the two uploads.
    assert counters.ok("ImportVApp") == 2 and counters.ok("CloneVM_Task") == 3
    await fault_run.check_invariants(
        imported={job["name"] for job in report["jobs"] if job["status"] == "imported"})


async def test_a_keep_seed_without_the_clone_strategy_is_refused_before_vcenter(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    batch = await write_batch(fault_run, tmp_path,
                              f'  - name: "{fault_run.prefix}-1"\n    keep_seed: true\n')
    status, stdout, stderr = await run_cli(fault_run, batch)
    assert status == 2, stderr
    assert f"{fault_run.prefix}-1: keep_seed needs strategy: clone (or --strategy clone)" \
        in stdout + stderr
    counters = await fault_run.counters()
    assert counters.calls("ImportVApp") == 0 and counters.calls("CloneVM_Task") == 0
    await fault_run.check_invariants(imported=set())


async def test_each_clone_gets_its_own_vapp_property_values_on_top_of_the_seed_s(
    fault_run: FaultRun, tmp_path: Path,
) -> None:
    from dataclasses import replace

    from asyncovf.engine.pool import BatchRunner
    from asyncovf.ovf.source import open_package
    from tests.factory import APPLIANCE_PRODUCT_SECTION, DiskSpec, build_package

    built = await anyio.to_thread.run_sync(lambda: build_package(
        tmp_path, "appliance", disks=(DiskSpec(16, 64 * 1024),),
        product_section=APPLIANCE_PRODUCT_SECTION))
    package = await open_package(built.path)
    jobs = tuple(replace(spec, source=str(built.path), options=replace(
        spec.options, properties={HOSTNAME: f"{spec.name}.example"}))
        for spec in plan_of(fault_run, 4).jobs)
    runner = BatchRunner(fault_run.connection, jobs, {str(built.path): package},
                         RunSettings(concurrency=2, strategy="clone"))
    await runner.run()

    assert [r.error for r in runner.results if r.status is not JobStatus.IMPORTED] == []
    values = await property_values(fault_run, {r.name for r in runner.results})
    # Its own hostname; the port and the token as the descriptor says (the seed's).
    assert values == {spec.name: {HOSTNAME: f"{spec.name}.example", PORT: "8080",
                                  TOKEN: 'a&b<c"'} for spec in jobs}
    counters = await fault_run.counters()
    assert counters.ok("ImportVApp") == 1 and counters.ok("CloneVM_Task") == 4
    await fault_run.check_invariants(runner)


HOSTNAME, PORT, TOKEN = "appliance.hostname.web", "appliance.port.web", "appliance.token.web"


async def property_values(run: FaultRun, names: set[str]) -> dict[str, dict[str, str]]:
    """name → its vApp properties' values (the default where no value is set)."""
    values = {}
    async with VCenterSession(run.connection) as session:
        for vm in await list_vms(run.connection):
            if vm.name in names:
                vapp = (await session.retrieve(vim.VirtualMachine(vm.moid),
                                               ["config.vAppConfig"]))["config.vAppConfig"]
                values[vm.name] = {
                    ".".join(p for p in (i.classId, i.id, i.instanceId) if p):
                        i.value or i.defaultValue for i in vapp.property}
    return values


async def test_a_clone_runs_its_own_post_import_steps_after_its_finished_mark(
    fault_run: FaultRun,
) -> None:
    from dataclasses import replace

    from asyncovf.engine.pool import BatchRunner

    package = await fault_run.package()
    jobs = tuple(replace(spec, options=replace(
        spec.options, power_on=True, extra_config={"guestinfo.role": spec.name}))
        for spec in plan_of(fault_run, 3).jobs)
    runner = BatchRunner(fault_run.connection, jobs, {str(fault_run.package_path): package},
                         RunSettings(concurrency=2, strategy="clone"))
    await runner.run()

    assert [r.error for r in runner.results if r.status is not JobStatus.IMPORTED] == []
    assert all(list(r.timings) == ["seed", "clone", "extra_config", "power_on"]
               for r in runner.results)
    async with VCenterSession(fault_run.connection) as session:
        for vm in await list_vms(fault_run.connection):
            if vm.name in {spec.name for spec in jobs}:
                props = await session.retrieve(vim.VirtualMachine(vm.moid), [
                    "runtime.powerState", "config.extraConfig"])
                extra = {o.key: o.value for o in props["config.extraConfig"]}
                assert props["runtime.powerState"] == "poweredOn"
                assert (extra["guestinfo.role"], extra[IMPORT_MARK_KEY]) == (
                    vm.name, IMPORT_FINISHED)
    counters = await fault_run.counters()
    # Made importing, then one ReconfigVM_Task each for its extra config and the mark.
    assert counters.ok("ReconfigVM_Task") == 1 + 3 and counters.ok("PowerOnVM_Task") == 3
    await fault_run.check_invariants(runner)
