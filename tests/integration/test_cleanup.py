"""``asyncovf cleanup`` against vcsim: exactly the run's VMs go, nothing else, ever.

Every test checks what was removed *and* what must still be there (vcsim's own
DC0_H0_VM0, a VM the report does not name, a renamed VM), and that every
session the command opened was logged out.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncovf.engine.batch import JobStatus
from asyncovf.engine.options import RunSettings
from asyncovf.engine.pool import BatchRunner
from asyncovf.report import RunInfo, build_report, write_report
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.removal import power_off_and_destroy
from asyncovf.vsphere.session import VCenterSession
from tests.integration.inspect import list_vms
from tests.integration.test_batch import make_batch, run_plan
from tests.vcsim.harness import Counters, Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[2]
#: vcsim's own VM: no test created it, and no cleanup may remove it.
BYSTANDER = "DC0_H0_VM0"


async def cleanup(vcsim: Vcsim, *args: str, password: str | None = None) -> tuple[int, str, str]:
    """Run ``asyncovf cleanup ARGS`` with the connection in VSPHERE_*; (status, out, err)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password if password is None else password)
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "asyncovf", "cleanup", *args, "--ca-file", str(vcsim.ca_file)],
            env=env, cwd=ROOT, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def import_batch(connection: ConnectionSettings, tmp_path: Path, vms: str) -> BatchRunner:
    plan = await make_batch(tmp_path, vms)
    runner = await run_plan(connection, plan, RunSettings(concurrency=2))
    assert {r.status for r in runner.results} == {JobStatus.IMPORTED}
    return runner


async def write_run_report(runner: BatchRunner, path: Path) -> dict[str, Any]:
    report = build_report(runner, RunInfo(batch="batch.yaml", concurrency=2))
    await anyio.to_thread.run_sync(write_report, path, report)
    return json.loads(await anyio.Path(path).read_text())  # type: ignore[no-any-return]


async def names_and_ids(connection: ConnectionSettings) -> dict[str, str]:
    return {vm.name: vm.moid for vm in await list_vms(connection)}


async def counters(vcsim: Vcsim) -> Counters:
    return await anyio.to_thread.run_sync(vcsim.counters)


async def reset(vcsim: Vcsim) -> None:
    await anyio.to_thread.run_sync(vcsim.reset_counters)


async def until(vcsim: Vcsim, condition: Callable[[Counters], bool],
                within: float = 30.0) -> Counters:
    """The simulator's counters, once ``condition`` holds for them."""
    with anyio.fail_after(within):
        while True:
            seen = await counters(vcsim)
            if condition(seen):
                return seen
            await anyio.sleep(0.05)


def assert_logged_out(seen: Counters) -> None:
    """Every Login since the counters were reset was followed by a Logout.

    (``sessions_live`` is the shared simulator's, across tests: not this test's.)
    """
    assert seen.ok("Login") == seen.ok("Logout"), "a session was not logged out"


async def test_cleanup_report_removes_exactly_the_vms_the_run_imported(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    runner = await import_batch(connection, tmp_path, (
        '  - name: "clrep-{index}"\n    count: 2\n'
        '  - name: clrep-on\n    power_on: true\n'))
    report = tmp_path / "report.json"
    await write_run_report(runner, report)
    # Imported outside the report, with the same prefix: not the run's, so it stays.
    await import_batch(connection, tmp_path / "other", "  - name: clrep-outsider\n")
    before = await names_and_ids(connection)
    await reset(vcsim)

    status, out, err = await cleanup(vcsim, str(report), "--concurrency", "2",
                                     "--json", str(tmp_path / "cleanup.json"))

    seen = await counters(vcsim)
    assert status == 0, err
    assert "3 VMs the run imported" in out
    assert out.splitlines()[-1] == ("3 VMs targeted: 0 failed, 0 skipped, 0 interrupted, "
                                    "3 removed, 0 already gone")
    after = await names_and_ids(connection)
    assert set(before) - set(after) == {"clrep-1", "clrep-2", "clrep-on"}
    assert {"clrep-outsider", BYSTANDER} <= set(after)
    document = json.loads(await anyio.Path(tmp_path / "cleanup.json").read_text())
    assert {(v["name"], v["vm"], v["status"], v["powered_off"]) for v in document["vms"]} == {
        ("clrep-1", before["clrep-1"], "removed", False),
        ("clrep-2", before["clrep-2"], "removed", False),
        ("clrep-on", before["clrep-on"], "removed", True),
    }
    assert document["totals"]["removed"] == 3
    assert seen.ok("Login") == 2 == document["totals"]["sessions_closed"]  # one per worker
    assert seen.ok("PowerOffVM_Task") == 1 and seen.ok("Destroy_Task") == 3
    assert_logged_out(seen)


async def test_cleanup_report_of_vms_already_gone_or_templates_succeeds(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    runner = await import_batch(connection, tmp_path, '  - name: "clgone-{index}"\n    count: 3\n')
    report = await write_run_report(runner, tmp_path / "report.json")
    vms = {job["name"]: job["vm"] for job in report["jobs"]}
    async with VCenterSession(connection) as session:
        await power_off_and_destroy(session, session.client.mor("VirtualMachine",
                                                                vms["clgone-1"]))
        # A template cannot be powered off (or on): it is destroyed straight away.
        await session.invoke(session.client.mor("VirtualMachine", vms["clgone-2"]),
                             "MarkAsTemplate")
    await reset(vcsim)

    status, out, err = await cleanup(vcsim, str(tmp_path / "report.json"))

    seen = await counters(vcsim)
    assert status == 0, err
    lines = out.splitlines()
    assert any(line.split()[:4] == ["already", "gone", vms["clgone-1"], "clgone-1"]
               for line in lines), out
    assert lines[-1] == ("3 VMs targeted: 0 failed, 0 skipped, 0 interrupted, 2 removed, "
                         "1 already gone")
    assert not {"clgone-1", "clgone-2", "clgone-3"} & set(await names_and_ids(connection))
    assert seen.calls("PowerOffVM_Task") == 0 and seen.ok("Destroy_Task") == 2
    assert_logged_out(seen)


async def test_cleanup_skips_a_vm_whose_name_no_longer_matches_its_id(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    runner = await import_batch(connection, tmp_path, '  - name: "clname-{index}"\n    count: 2\n')
    report = await write_run_report(runner, tmp_path / "report.json")
    vms = {job["name"]: job["vm"] for job in report["jobs"]}
    before = await names_and_ids(connection)
    # The id of vcsim's own VM under a name of ours: an id now naming another VM.
    report["jobs"].append({"name": "clname-impostor", "status": "imported",
                           "vm": before[BYSTANDER]})
    await anyio.Path(tmp_path / "report.json").write_text(json.dumps(report))
    async with VCenterSession(connection) as session:
        await session.wait_for_task(await session.invoke(
            session.client.mor("VirtualMachine", vms["clname-1"]), "Rename",
            newName="clname-renamed"))
    await reset(vcsim)

    # The old spelling of --json still writes the file, with a warning.
    status, out, err = await cleanup(vcsim, str(tmp_path / "report.json"),
                                     "--output", str(tmp_path / "cleanup.json"))

    seen = await counters(vcsim)
    assert status == 1
    assert "'cleanup --output FILE' is deprecated" in err
    assert "asyncovf: 2 of 3 VMs are not removed (see above)" in err
    assert (f"skipped       {vms['clname-1']:<10}  clname-1         {vms['clname-1']} is now "
            "named 'clname-renamed', not 'clname-1': renamed or another VM; left alone") in out
    assert f"{before[BYSTANDER]} is now named {BYSTANDER!r}, not 'clname-impostor'" in out
    after = await names_and_ids(connection)
    assert after["clname-renamed"] == vms["clname-1"] and after[BYSTANDER] == before[BYSTANDER]
    assert "clname-2" not in after
    document = json.loads(await anyio.Path(tmp_path / "cleanup.json").read_text())
    assert sorted(v["status"] for v in document["vms"]) == ["removed", "skipped", "skipped"]
    assert seen.ok("Destroy_Task") == 1
    assert_logged_out(seen)


async def test_name_prefix_lists_without_yes_and_removes_with_it(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    await import_batch(connection, tmp_path, (
        '  - name: "clpfx-{index}"\n    count: 2\n'
        '  - name: clpfx-on\n    power_on: true\n'
        '  - name: clpf-x\n'))
    before = await names_and_ids(connection)
    await reset(vcsim)

    status, out, err = await cleanup(vcsim, "--name-prefix", "clpfx-")

    seen = await counters(vcsim)
    assert status == 2
    width = max(len(before[name]) for name in ("clpfx-1", "clpfx-2", "clpfx-on"))
    assert out.splitlines() == [f"{before[name]:<{width}}  {name}"
                                for name in ("clpfx-1", "clpfx-2", "clpfx-on")]
    assert ("asyncovf: 3 VMs match --name-prefix 'clpfx-'; nothing was removed: add --yes to "
            "power them off and destroy them") in err
    assert seen.calls("Destroy_Task") == 0 and seen.calls("PowerOffVM_Task") == 0
    assert_logged_out(seen)
    assert await names_and_ids(connection) == before

    status, out, err = await cleanup(vcsim, "--name-prefix", "clpfx-", "--dry-run")
    assert status == 0 and "dry run: 3 VMs would be removed; nothing was removed" in out
    status, out, err = await cleanup(vcsim, "--name-prefix", "clpfx-", "--folder", "nope")
    assert status == 2 and "VM folder 'nope' not found" in err
    assert await names_and_ids(connection) == before
    await reset(vcsim)

    status, out, err = await cleanup(vcsim, "--name-prefix", "clpfx-", "--yes",
                                     "--datacenter", "DC0")

    seen = await counters(vcsim)
    assert status == 0, err
    assert out.splitlines()[-1].endswith("3 removed, 0 already gone")
    assert seen.calls("Destroy_Task") == 3 and seen.ok("PowerOffVM_Task") == 1
    assert_logged_out(seen)
    after = await names_and_ids(connection)
    assert set(before) - set(after) == {"clpfx-1", "clpfx-2", "clpfx-on"}
    assert {"clpf-x", BYSTANDER} <= set(after)


async def test_a_prefix_that_matches_nothing_removes_nothing(vcsim: Vcsim) -> None:
    status, out, _ = await cleanup(vcsim, "--name-prefix", "no-such-vm-", "--yes")
    assert (status, out) == (0, "nothing to remove: no VM's name starts with 'no-such-vm-'\n")
    assert_logged_out(await counters(vcsim))


@pytest.mark.parametrize(("content", "args", "message"), [
    ('{"version": 1, "jobs": [', (), "report.json:1: not JSON (Expecting value), so not a run "
                                     "report"),
    ('{"vms": []}', (), "report.json: not an asyncovf run report (expected a JSON object "
                        "with 'jobs'"),
    ('{"version": 1, "jobs": [{"name": "x", "status": "imported"}]}', (),
     "report.json: jobs[0] (x): status 'imported' but 'vm' is None"),
    (None, (), "report.json: No such file or directory"),
    ('{"version": 1, "jobs": []}', ("--folder", "vm"),
     "--datacenter and --folder scope --name-prefix; a report names its VMs exactly"),
], ids=["not-json", "not-a-report", "imported-without-vm", "missing", "folder-with-report"])
async def test_a_bad_report_exits_2_with_a_clear_message_and_touches_nothing(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path, content: str | None,
    args: tuple[str, ...], message: str
) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        await anyio.Path(path).write_text(content)
    before = await names_and_ids(connection)
    await reset(vcsim)

    status, out, err = await cleanup(vcsim, str(path), *args)

    assert status == 2
    assert err.startswith("asyncovf: error: ") and message in err, err
    assert (await counters(vcsim)).calls("Login") == 0, "vCenter was contacted"
    assert await names_and_ids(connection) == before


@pytest.mark.parametrize(("args", "message"), [
    ((), "say what to remove: run reports (asyncovf cleanup REPORT [REPORT ...]) or "
         "--name-prefix PREFIX"),
    (("report.json", "--name-prefix", "cl-"), "give run reports or --name-prefix, not both"),
], ids=["neither", "both"])
async def test_reports_or_a_name_prefix_exactly_one_else_a_usage_error(
    vcsim: Vcsim, connection: ConnectionSettings, args: tuple[str, ...], message: str
) -> None:
    before = await names_and_ids(connection)
    await reset(vcsim)

    status, out, err = await cleanup(vcsim, *args, "--yes")

    assert status == 2 and not out
    assert err == f"asyncovf: error: {message}\n"
    assert (await counters(vcsim)).calls("Login") == 0, "vCenter was contacted"
    assert await names_and_ids(connection) == before


async def test_a_wrong_password_is_one_clear_error_and_removes_nothing(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    runner = await import_batch(connection, tmp_path, '  - name: "clpass-{index}"\n    count: 3\n')
    await write_run_report(runner, tmp_path / "report.json")
    await reset(vcsim)

    status, out, err = await cleanup(vcsim, str(tmp_path / "report.json"),
                                     password="not-the-password")

    seen = await counters(vcsim)
    assert status == 2
    assert err.count("asyncovf: error: ") == 1 and "not-the-password" not in err + out
    assert "asyncovf: nothing was removed (3 VMs targeted)" in err
    assert seen.calls("Destroy_Task") == 0 and seen.ok("Login") == 0
    assert {"clpass-1", "clpass-2", "clpass-3"} <= set(await names_and_ids(connection))


async def test_a_failed_removal_exits_1_and_the_other_vms_still_go(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    runner = await import_batch(connection, tmp_path, '  - name: "clfail-{index}"\n    count: 3\n')
    report = await write_run_report(runner, tmp_path / "report.json")
    vms = {job["name"]: job["vm"] for job in report["jobs"]}
    await reset(vcsim)
    # One worker takes the report's VMs in order: the first Destroy is clfail-1's.
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
        soap=[{"method": "Destroy_Task", "fault": "InvalidState", "nth": 1}]))

    status, out, err = await cleanup(vcsim, str(tmp_path / "report.json"),
                                     "--concurrency", "1")

    seen = await counters(vcsim)
    assert status == 1
    assert "asyncovf: 1 of 3 VMs is not removed (see above)" in err
    assert out.splitlines()[1].startswith(f"failed        {vms['clfail-1']:<10}  clfail-1  ")
    assert "InvalidState" in out.splitlines()[1]
    assert out.splitlines()[-1] == ("3 VMs targeted: 1 failed, 0 skipped, 0 interrupted, "
                                    "2 removed, 0 already gone")
    assert_logged_out(seen)
    remaining = {name for name in await names_and_ids(connection) if name.startswith("clfail")}
    assert remaining == {"clfail-1"}


async def test_sigint_mid_removal_exits_130_and_logs_every_session_out(
    vcsim: Vcsim, connection: ConnectionSettings, tmp_path: Path
) -> None:
    runner = await import_batch(connection, tmp_path, '  - name: "clint-{index}"\n    count: 4\n')
    await write_run_report(runner, tmp_path / "report.json")
    await reset(vcsim)
    await anyio.to_thread.run_sync(lambda: vcsim.set_faults(
        soap=[{"method": "Destroy_Task", "delay_ms": 4000}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password)
    output = tmp_path / "cleanup.json"

    async with await anyio.open_process(
        [sys.executable, "-m", "asyncovf", "cleanup", str(tmp_path / "report.json"),
         "--concurrency", "2", "--json", str(output), "--ca-file", str(vcsim.ca_file)],
        env=env, cwd=ROOT,
    ) as process:
        await until(vcsim, lambda seen: seen.started("Destroy_Task") >= 2)
        signalled = anyio.current_time()
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            status = await process.wait()
        took = anyio.current_time() - signalled
        assert process.stdout is not None and process.stderr is not None
        out = b"".join([chunk async for chunk in process.stdout]).decode()
        err = b"".join([chunk async for chunk in process.stderr]).decode()

    assert status == 130, err
    assert took < 4, "the interrupt waited for the Destroy calls in flight"
    assert "asyncovf: interrupted (SIGINT)" in err
    assert "4 VMs targeted" in out
    document = json.loads(await anyio.Path(output).read_text())
    assert document["interrupted"] == "SIGINT"
    assert {v["status"] for v in document["vms"]} == {"interrupted"}
    # The delayed Destroy calls still end in vcsim, after the sessions were closed.
    seen = await until(vcsim, lambda seen: seen.calls("Destroy_Task") >= 2)
    assert seen.ok("Login") == 2 == seen.ok("Logout")
