"""The post-import steps against vcsim: each step happened on the VM and is its own
phase in the report; a failed, timed-out or cancelled step fails the job and
leaves nothing behind (no VM, Login = Logout, no lease open).

vcsim 0.24 facts the tests lean on: UpgradeVM_Task moves any VM to its own
``vmx-13`` whatever version is asked for (the factory's descriptors say
``vmx-09``, so the change is visible; the exact version sent is asserted in
tests/unit/test_post_import_steps.py); a powered-on VM gets no IP address by
itself — the test sets one from outside with the simulator's
``SET.guest.ipAddress`` extraConfig alias while the job waits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from lxml import etree
from pyVmomi import vim

from asyncovf.engine.batch import JobResult, JobStatus
from asyncovf.engine.options import ImportOptions, RunSettings
from asyncovf.engine.phases import Phase
from asyncovf.engine.plan import JobSpec
from asyncovf.engine.pool import BatchRunner
from asyncovf.ovf.environment import ENVIRONMENT_NS, VMWARE_ENVIRONMENT_NS
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from asyncovf.vsphere.session import VCenterSession
from tests.factory import APPLIANCE_PRODUCT_SECTION, DiskSpec, build_package
from tests.faults.support import FaultRun, report_jobs
from tests.integration.inspect import vms_named
from tests.vcsim.harness import Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[2]
OE = f"{{{ENVIRONMENT_NS}}}"
STEPS = ["extra_config", "inject_ovf_env", "upgrade_hardware", "mark_as_template", "power_on",
         "wait_for_ip"]
GUEST_IP = "10.0.0.42"


@pytest.fixture
def run(vcsim: Vcsim, tmp_path: Path, request: pytest.FixtureRequest) -> FaultRun:
    """The simulator, a connection, an appliance with vApp properties, a unique VM prefix.

    The simulator's count of live sessions outlives its counter reset; an earlier
    test may have left one (test_batch's session-expiry test does), so the
    invariant is that this test leaves none of its own.
    """
    connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                    password=vcsim.password, ca_file=str(vcsim.ca_file))
    path = build_package(tmp_path, "appliance", disks=(DiskSpec(16, 64 * 1024),),
                         product_section=APPLIANCE_PRODUCT_SECTION).path
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:28].strip("-")
    prefix = f"pi-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    return FaultRun(vcsim=vcsim, connection=connection, package_path=path, prefix=prefix,
                    sessions_live_before=vcsim.counters().sessions_live)


def job(run: FaultRun, **fields: Any) -> JobSpec:
    placement = fields.pop("placement", PlacementRequest(cluster="DC0_C0",
                                                         datastore="LocalDS_0"))
    return JobSpec(index=0, name=run.prefix, source=str(run.package_path), placement=placement,
                   origin="test", options=ImportOptions(**fields))


async def import_one(run: FaultRun, spec: JobSpec, *, settings: RunSettings | None = None,
                     while_waiting_for_ip: str | None = None) -> BatchRunner:
    """Run ``spec``; with ``while_waiting_for_ip``, give the VM that address once the job
    waits for it (as the guest's VMware Tools would)."""
    package = await run.package()
    runner = BatchRunner(run.connection, [spec], {spec.source: package},
                         settings or RunSettings(concurrency=1))
    waiting = waiting_for_ip(runner)
    async with anyio.create_task_group() as group:
        if while_waiting_for_ip is not None:
            group.start_soon(give_ip_when_asked, run, waiting, runner.results[0],
                             while_waiting_for_ip)
        await runner.run()
        group.cancel_scope.cancel()
    return runner


def waiting_for_ip(runner: BatchRunner) -> anyio.Event:
    """Set when the (only) job enters its wait_for_ip phase."""
    event = anyio.Event()

    def on_update(result: JobResult) -> None:
        if result.state is not None and result.state.phase is Phase.WAIT_FOR_IP:
            event.set()

    runner.on_update = on_update
    return event


async def give_ip_when_asked(run: FaultRun, waiting: anyio.Event, result: JobResult,
                             address: str) -> None:
    with anyio.fail_after(60):
        await waiting.wait()
    assert result.state is not None and result.state.vm is not None
    vm = vim.VirtualMachine(result.state.vm)
    async with session_for(run) as session:
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(
            key="SET.guest.ipAddress", value=address)])
        await session.wait_for_task(await session.invoke(vm, "Reconfigure", spec=spec))


def session_for(run: FaultRun) -> VCenterSession:
    return VCenterSession(run.connection)


async def vm_properties(run: FaultRun, name: str) -> dict[str, Any]:
    (vm,) = await vms_named(run.connection, name)
    async with session_for(run) as session:
        props = await session.retrieve(vim.VirtualMachine(vm.moid), [
            "config.extraConfig", "config.version", "config.template", "config.annotation",
            "runtime.powerState", "guest.ipAddress"])
    props["moid"] = vm.moid
    props["networks"] = vm.networks
    props["extra"] = {o.key: o.value for o in props.pop("config.extraConfig") or ()}
    return props


def phases_of(record: dict[str, Any]) -> list[str]:
    return [p["phase"] for p in record["phases"]]


def ovf_env_properties(document: str) -> dict[str, str]:
    root = etree.fromstring(document.encode())
    return {p.get(f"{OE}key"): p.get(f"{OE}value") for p in root.iter(f"{OE}Property")}


async def test_every_step_happens_on_the_vm_and_is_its_own_phase_in_the_report(
    run: FaultRun
) -> None:
    spec = job(run, properties={"appliance.hostname.web": "web-01.lab"},
               extra_config={"guestinfo.role": "web", "disk.EnableUUID": "TRUE"},
               inject_ovf_env=True, hardware_version="vmx-13", power_on=True,
               wait_for_ip=True, ip_timeout=60)
    runner = await import_one(run, spec, while_waiting_for_ip=GUEST_IP)
    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED, result.error
    assert result.ip_address == GUEST_IP

    record = report_jobs(runner)[run.prefix]
    assert record["ip_address"] == GUEST_IP
    assert phases_of(record) == ["spec", "import", "lease_wait", "upload", "complete",
                                 "extra_config", "inject_ovf_env", "upgrade_hardware",
                                 "power_on", "wait_for_ip"]
    assert list(record["timings"]) == ["spec", "import", "lease_wait", "upload", "complete",
                                       "extra_config", "inject_ovf_env", "upgrade_hardware",
                                       "power_on", "wait_for_ip"]

    vm = await vm_properties(run, run.prefix)
    assert vm["extra"]["guestinfo.role"] == "web" and vm["extra"]["disk.EnableUUID"] == "TRUE"
    environment = etree.fromstring(vm["extra"]["guestinfo.ovfEnv"].encode())
    assert environment.get(f"{{{VMWARE_ENVIRONMENT_NS}}}esxId") == vm["moid"]
    assert environment.findtext(f"{OE}PlatformSection/{OE}Kind") == "VMware vCenter Server"
    assert ovf_env_properties(vm["extra"]["guestinfo.ovfEnv"]) == {
        "appliance.hostname.web": "web-01.lab",  # the job's value
        "appliance.port.web": "8080", "appliance.token.web": 'a&b<c"'}  # the defaults
    assert vm["config.version"] == "vmx-13"  # imported as vmx-09
    assert vm["config.template"] is False
    assert vm["runtime.powerState"] == "poweredOn"
    assert vm["guest.ipAddress"] == GUEST_IP
    await run.check_invariants(runner)


async def test_mark_as_template_leaves_a_template_that_is_off(run: FaultRun) -> None:
    runner = await import_one(run, job(run, extra_config={"guestinfo.kind": "golden"},
                                       mark_as_template=True))
    (result,) = runner.results
    assert result.status is JobStatus.IMPORTED, result.error
    record = report_jobs(runner)[run.prefix]
    assert phases_of(record)[5:] == ["extra_config", "mark_as_template"]
    assert set(record["timings"]) >= {"extra_config", "mark_as_template"}
    assert record["ip_address"] is None
    vm = await vm_properties(run, run.prefix)
    assert vm["config.template"] is True and vm["runtime.powerState"] == "poweredOff"
    assert vm["extra"]["guestinfo.kind"] == "golden"
    assert "guestinfo.ovfEnv" not in vm["extra"]  # not asked for
    await run.check_invariants(runner)


async def test_no_ip_within_the_timeout_fails_the_job_once_and_removes_the_vm(
    run: FaultRun
) -> None:
    runner = await import_one(run, job(run, power_on=True, wait_for_ip=True, ip_timeout=1),
                              settings=RunSettings(concurrency=1, job_retries=2))
    (result,) = runner.results
    assert result.status is JobStatus.FAILED
    assert result.error == f"{run.prefix}: no IP address reported by the guest after 1 s"
    assert result.error_kind == "wait_for_ip: timeout"
    assert result.attempts == 1  # permanent: never retried as a whole job
    assert not result.input_error and result.cleanup_errors == []
    record = report_jobs(runner)[run.prefix]
    assert phases_of(record)[-3:] == ["power_on", "wait_for_ip", "abort"]
    assert record["timings"]["wait_for_ip"] >= 1.0
    assert await vms_named(run.connection, run.prefix) == []
    await run.check_invariants(runner)


async def test_a_step_vcenter_refuses_fails_the_job_and_removes_the_vm(run: FaultRun) -> None:
    await run.set_faults(soap=[{"method": "UpgradeVM_Task", "fault": "NotSupported"}])
    runner = await import_one(run, job(run, extra_config={"guestinfo.a": "1"},
                                       hardware_version="vmx-19", power_on=True),
                              settings=RunSettings(concurrency=1, job_retries=2))
    (result,) = runner.results
    assert result.status is JobStatus.FAILED
    assert (result.error or "").startswith(f"{run.prefix}: upgrade_hardware failed: ")
    assert result.error_kind == "upgrade_hardware: NotSupported"
    assert result.attempts == 1  # NotSupported is permanent
    counters = await run.counters()
    assert counters.calls("PowerOnVM_Task") == 0  # the steps after it never ran
    assert counters.ok("Destroy_Task") == 1
    assert phases_of(report_jobs(runner)[run.prefix])[-3:] == [
        "extra_config", "upgrade_hardware", "abort"]
    assert await vms_named(run.connection, run.prefix) == []
    await run.check_invariants(runner)


async def test_cancelling_a_job_mid_step_removes_the_powered_on_vm(run: FaultRun) -> None:
    package = await run.package()
    spec = job(run, power_on=True, wait_for_ip=True, ip_timeout=120)
    runner = BatchRunner(run.connection, [spec], {spec.source: package},
                         RunSettings(concurrency=1))
    (result,) = runner.results
    waiting = waiting_for_ip(runner)
    async with anyio.create_task_group() as group:
        group.start_soon(runner.run)
        with anyio.fail_after(60):
            await waiting.wait()
        group.cancel_scope.cancel()  # Ctrl-C, as the interrupt handler delivers it
    assert result.status is JobStatus.ABORTED
    assert phases_of(report_jobs(runner)[run.prefix])[-2:] == ["wait_for_ip", "abort"]
    counters = await run.counters()
    assert counters.ok("PowerOffVM_Task") == counters.ok("Destroy_Task") == 1
    assert await vms_named(run.connection, run.prefix) == []
    await run.check_invariants(runner)


async def test_importing_into_a_vapp_sends_no_folder(run: FaultRun) -> None:
    async with session_for(run) as session:
        cluster = await session.invoke(session.content.searchIndex, "FindByInventoryPath",
                                       inventoryPath="/DC0/host/DC0_C0")
        root_pool = (await session.retrieve(cluster, ["resourcePool"]))["resourcePool"]

        def allocation() -> Any:
            return vim.ResourceAllocationInfo(
                reservation=0, limit=-1, expandableReservation=True,
                shares=vim.SharesInfo(level="normal", shares=0))

        vapp = await session.invoke(
            root_pool, "CreateVApp", name=f"{run.prefix}-vapp",
            resSpec=vim.ResourceConfigSpec(cpuAllocation=allocation(),
                                           memoryAllocation=allocation()),
            configSpec=vim.vApp.VAppConfigSpec())
    try:
        runner = await import_one(run, job(run, placement=PlacementRequest(
            cluster="DC0_C0", resource_pool=vapp._moId, datastore="LocalDS_0")))
        (result,) = runner.results
        assert result.status is JobStatus.IMPORTED, result.error
        await run.check_invariants(runner)
    finally:
        with anyio.move_on_after(30, shield=True):
            async with session_for(run) as session:
                for vm in await vms_named(run.connection, run.prefix):
                    await session.wait_for_task(await session.invoke(
                        vim.VirtualMachine(vm.moid), "Destroy"))
                await session.wait_for_task(await session.invoke(vapp, "Destroy"))


def run_cli(vcsim: Vcsim, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password)
    return subprocess.run(
        [sys.executable, "-m", "asyncovf", "import", *args, "--ca-file", str(vcsim.ca_file),
         "--cluster", "DC0_C0", "--datastore", "LocalDS_0"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=90)


async def test_the_import_command_takes_every_option_as_a_flag(run: FaultRun) -> None:
    done = await anyio.to_thread.run_sync(lambda: run_cli(
        run.vcsim, str(run.package_path), "--name", run.prefix,
        "--net", "VM Network=DC0_DVPG0", "--prop", "appliance.hostname.web=cli-01",
        "--prop", "appliance.port.web=9090", "--annotation", "imported by the CLI test",
        "--ip-allocation-policy", "fixedPolicy", "--ip-protocol", "IPv4",
        "--extra-config", "guestinfo.role=cli", "--extra-config", "guestinfo.eq=a=b",
        "--inject-ovf-env", "--hardware-version", "13", "--power-on", "--wait-for-ip",
        "--ip-timeout", "1"))
    # No guest gives the VM an address here: the import fails on that last step, which
    # shows the steps before it ran; then the same without --wait-for-ip succeeds.
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().endswith(
        f"asyncovf: error: {run.prefix}: no IP address reported by the guest after 1 s")
    assert await vms_named(run.connection, run.prefix) == []
    counters = await run.counters()
    assert counters.ok("ReconfigVM_Task") == 2 and counters.ok("UpgradeVM_Task") == 1
    assert counters.ok("PowerOnVM_Task") == 1 and counters.ok("Destroy_Task") == 1

    done = await anyio.to_thread.run_sync(lambda: run_cli(
        run.vcsim, str(run.package_path), "--name", run.prefix,
        "--net", "VM Network=DC0_DVPG0", "--prop", "appliance.hostname.web=cli-01",
        "--annotation", "imported by the CLI test", "--extra-config", "guestinfo.eq=a=b",
        "--inject-ovf-env", "--hardware-version", "vmx-13", "--power-on"))
    assert done.returncode == 0, done.stderr
    vm = await vm_properties(run, run.prefix)
    assert vm["config.annotation"] == "imported by the CLI test"
    assert vm["networks"] != ("VM Network",)  # mapped to the distributed port group
    assert vm["extra"]["guestinfo.eq"] == "a=b"
    assert ovf_env_properties(vm["extra"]["guestinfo.ovfEnv"])["appliance.hostname.web"] == \
        "cli-01"
    assert vm["config.version"] == "vmx-13" and vm["runtime.powerState"] == "poweredOn"
    await run.check_invariants(imported={run.prefix})


@pytest.mark.parametrize(("flags", "message"), [
    (["--power-on", "--mark-as-template"],
     "--mark-as-template contradicts --power-on (a template cannot be powered on)"),
    (["--wait-for-ip"], "--wait-for-ip needs --power-on (a VM that is off gets no IP address)"),
    (["--hardware-version", "banana"],
     "--hardware-version: 'banana' is not a hardware version; expected vmx-NN or NN"),
    (["--ip-timeout", "-5"], "--ip-timeout: '-5': must be a positive number of seconds"),
    (["--prop", "appliance.port.web=eighty"], "appliance.port.web"),
    # The options document's keys are named as the document names them.
    (["--options", "{document}"], "--options {document}: WaitForIP needs --power-on (a VM "
                                  "that is off gets no IP address)"),
    # The flag completes the document (WaitForIP, --power-on), and breaks another rule.
    (["--options", "{document}", "--power-on", "--mark-as-template"],
     "--mark-as-template contradicts --power-on (a template cannot be powered on)"),
], ids=["template-and-power-on", "wait-for-ip-alone", "hardware-version", "ip-timeout",
        "property-type", "document-rule", "document-and-flags"])
async def test_bad_post_import_flags_are_refused_before_vcenter_is_touched(
    run: FaultRun, tmp_path: Path, flags: list[str], message: str
) -> None:
    document = tmp_path / "options.json"
    document.write_text(json.dumps({"WaitForIP": True}))
    flags = [flag.format(document=document) for flag in flags]
    message = message.format(document=document)
    done = await anyio.to_thread.run_sync(lambda: run_cli(
        run.vcsim, str(run.package_path), "--name", run.prefix, *flags))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("asyncovf: error: ") and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line
    counters = await run.counters()
    assert counters.calls("ImportVApp") == 0
    assert await vms_named(run.connection, run.prefix) == []
    await run.check_invariants(imported=set())
