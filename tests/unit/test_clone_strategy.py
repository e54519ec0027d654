"""strategy: clone without a vCenter: the exact CloneSpec sent, the groups and names of
seeds, one seed made once for all its waiters, and the checks made before a run."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pyVmomi import vim
from pyVmomi.SoapAdapter import Serialize

from asyncovf.engine.clone import LINKED_DISK_MOVE, clone_spec, property_edits
from asyncovf.engine.marks import IMPORT_FINISHED, IMPORT_MARK_KEY, IMPORT_UNFINISHED
from asyncovf.engine.options import ImportOptions, RunSettings
from asyncovf.engine.plan import MAX_VM_NAME, JobSpec
from asyncovf.engine.resolve import check_job
from asyncovf.engine.seeds import (
    Seed,
    SeedRegistry,
    SeedStatus,
    seed_key,
    seed_name,
    seed_options,
)
from asyncovf.errors import InputError, RetryScope, SeedError, error_kind, retryable
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.report import parse_report
from asyncovf.vsphere.inventory import InventoryItem, Placement, PlacementRequest
from tests.corpus import corpus_file
from tests.factory import ovf_descriptor

pytestmark = pytest.mark.anyio


def item(ref: Any, kind: str) -> InventoryItem:
    return InventoryItem(ref=ref, kind=kind, name=ref._moId, path=f"/DC0/{ref._moId}",
                         parent=None, datacenter="datacenter-2", props={})


PLACEMENT = Placement(datacenter=item(vim.Datacenter("datacenter-2"), "datacenter"),
                      resource_pool=item(vim.ResourcePool("resgroup-8"), "pool"),
                      datastore=item(vim.Datastore("datastore-11"), "datastore"),
                      folder=item(vim.Folder("group-v3"), "vm-folder"),
                      host=item(vim.HostSystem("host-21"), "host"))


def seed(*, linked: bool) -> Seed:
    return Seed(name="web-01-seed-0123abcd", key=(), jobs=3, linked=linked, keep=linked,
                status=SeedStatus.READY, vm=vim.VirtualMachine("vm-42"),
                snapshot=vim.vm.Snapshot("snapshot-43") if linked else None,
                properties={"appliance.hostname": 0, "appliance.port": 1})


def job(index: int, name: str, **options: Any) -> JobSpec:
    return JobSpec(index=index, name=name, source="appliance.ova",
                   placement=PlacementRequest(cluster="DC0_C0", datastore="LocalDS_0"),
                   origin=f"batch.yaml:{index + 2}", options=ImportOptions(**options))


def wire(value: Any) -> str:
    text = Serialize(value)
    return text.decode() if isinstance(text, bytes) else text


def test_a_linked_clone_sends_exactly_the_seed_snapshot_child_disks_and_its_own_settings(
) -> None:
    options = ImportOptions(annotation="web tier", properties={"appliance.port": "8443"},
                            power_on=True)
    sent = clone_spec(seed(linked=True), PLACEMENT, options)

    expected = vim.vm.CloneSpec(
        location=vim.vm.RelocateSpec(pool=vim.ResourcePool("resgroup-8"),
                                     datastore=vim.Datastore("datastore-11"),
                                     host=vim.HostSystem("host-21"),
                                     diskMoveType="createNewChildDiskBacking"),
        template=False, powerOn=False, snapshot=vim.vm.Snapshot("snapshot-43"),
        config=vim.vm.ConfigSpec(
            annotation="web tier",
            extraConfig=[vim.option.OptionValue(key="asyncovf.import", value="importing")],
            vAppConfig=vim.vApp.VmConfigSpec(property=[vim.vApp.PropertySpec(
                operation="edit", info=vim.vApp.PropertyInfo(key=1, value="8443"))])))
    assert wire(sent) == wire(expected)
    assert sent.location.diskMoveType == LINKED_DISK_MOVE
    # Nothing else: no customization, no per-disk locators, no memory state.
    assert sent.customization is None and sent.location.disk == [] and not sent.memory


def test_a_full_clone_names_no_snapshot_and_leaves_disk_placement_to_vcenter() -> None:
    sent = clone_spec(seed(linked=False), PLACEMENT, ImportOptions())

    assert sent.snapshot is None and sent.location.diskMoveType is None
    assert (sent.template, sent.powerOn) == (False, False)
    # No step to come: the clone is finished once made, so it is made with that mark.
    assert [(o.key, o.value) for o in sent.config.extraConfig] == [
        (IMPORT_MARK_KEY, IMPORT_FINISHED)]
    # No annotation and no property asked for: the seed's stay, untouched.
    assert sent.config.annotation is None and sent.config.vAppConfig is None


@pytest.mark.parametrize("step", [{"power_on": True}, {"extra_config": {"k": "v"}},
                                  {"mark_as_template": True}, {"hardware_version": "vmx-19"},
                                  {"inject_ovf_env": True}])
def test_a_clone_with_steps_to_come_is_made_importing(step: dict[str, Any]) -> None:
    sent = clone_spec(seed(linked=False), PLACEMENT, ImportOptions(**step))
    assert [(o.key, o.value) for o in sent.config.extraConfig] == [
        (IMPORT_MARK_KEY, IMPORT_UNFINISHED)]


def test_a_property_the_seed_lacks_is_refused_rather_than_dropped() -> None:
    with pytest.raises(SeedError) as caught:
        property_edits(seed(linked=False), {"appliance.dns": "10.0.0.2"})
    assert str(caught.value) == ("seed web-01-seed-0123abcd has no vApp property "
                                 "appliance.dns")


def test_vms_that_would_import_alike_share_one_seed_and_the_others_get_their_own() -> None:
    jobs = [
        job(0, "web-01", annotation="a", properties={"appliance.port": "1"}, power_on=True),
        job(1, "web-02", annotation="b", extra_config={"k": "v"}),
        job(2, "db-01", disk_provisioning="thin"),
        job(3, "web-03", network_mapping={"VM Network": "DC0_DVPG0"}),
        job(4, "web-04", linked_clone=True),
        job(5, "imported-01", strategy="import"),
    ]
    registry = SeedRegistry(jobs, RunSettings(strategy="clone"))

    seeds = [registry.seed_of(spec) for spec in jobs]
    assert seeds[0] is seeds[1] and seeds[0] is not None and seeds[0].jobs == 2
    assert len({id(s) for s in seeds[:5]}) == 4 and seeds[5] is None
    assert [s.name for s in registry.seeds] == [
        seed_name("web-01", seed_key(jobs[0])), seed_name("db-01", seed_key(jobs[2])),
        seed_name("web-03", seed_key(jobs[3])), seed_name("web-04", seed_key(jobs[4]))]
    # A linked clone's seed is kept: its clones' disks are children of its own.
    assert seeds[4] is not None and seeds[4].keep and not seeds[0].keep


def test_a_seed_name_is_stable_for_its_group_and_fits_vcenter() -> None:
    key = seed_key(job(0, "web-01"))
    assert seed_name("web-01", key) == seed_name("web-01", seed_key(job(9, "web-01")))
    assert seed_name("web-01", key) != seed_name("web-01", seed_key(
        job(0, "web-01", disk_provisioning="thin")))
    long = seed_name("x" * 200, key)
    assert len(long) == MAX_VM_NAME and long.startswith("x" * 60)


def test_a_seed_is_imported_without_any_one_vms_settings_and_as_a_template() -> None:
    options = ImportOptions(annotation="a", properties={"p": "1"}, power_on=True,
                            wait_for_ip=True, extra_config={"k": "v"}, inject_ovf_env=True,
                            hardware_version="vmx-19", disk_provisioning="thin",
                            strategy="clone")
    made = seed_options(options)
    assert (made.annotation, dict(made.properties), dict(made.extra_config)) == (None, {}, {})
    assert not (made.power_on or made.wait_for_ip or made.inject_ovf_env)
    assert made.hardware_version is None and made.mark_as_template
    assert made.disk_provisioning == "thin" and made.strategy == "import"
    # A linked clone's seed stays a VM: its snapshot is the clones' parent.
    assert not seed_options(ImportOptions(linked_clone=True)).mark_as_template


def one_group(count: int) -> tuple[SeedRegistry, Seed]:
    """A registry of ``count`` clone jobs that all share one seed, and that seed."""
    registry = SeedRegistry([job(i, f"web-{i}") for i in range(count)],
                            RunSettings(strategy="clone"))
    [seed] = registry.seeds
    return registry, seed


async def test_a_seed_is_made_once_however_many_jobs_wait_for_it() -> None:
    registry, one = one_group(5)
    made: list[str] = []
    release = anyio.Event()

    async def make(target: Seed) -> None:
        made.append(target.name)
        await release.wait()
        target.status, target.vm = SeedStatus.READY, vim.VirtualMachine("vm-7")

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(registry.ready, one, make)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert made == [one.name] and one.status is SeedStatus.READY


async def test_a_failed_seed_fails_every_job_of_its_group_with_one_line() -> None:
    registry, one = one_group(3)
    calls = 0

    async def make(target: Seed) -> None:
        nonlocal calls
        calls += 1
        raise InputError("vCenter rejected appliance.ova: bad disk")

    errors = []
    for _ in range(3):
        with pytest.raises(SeedError) as caught:
            await registry.ready(one, make)
        errors.append(str(caught.value))
    assert calls == 1 and one.status is SeedStatus.FAILED
    assert errors == [f"seed {one.name} failed: vCenter rejected appliance.ova: bad disk"] * 3
    assert error_kind(caught.value) == "seed: input"
    assert not retryable(caught.value, RetryScope.JOB)


async def test_a_seeding_job_that_is_cancelled_leaves_the_seed_to_the_next_job() -> None:
    registry, one = one_group(2)
    attempts = 0

    async def make(target: Seed) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await anyio.sleep_forever()
        target.status, target.vm = SeedStatus.READY, vim.VirtualMachine("vm-7")

    async with anyio.create_task_group() as group:
        first = anyio.CancelScope()

        async def seeding() -> None:
            with first:
                await registry.ready(one, make)

        group.start_soon(seeding)
        await anyio.wait_all_tasks_blocked()
        first.cancel()
    await registry.ready(one, make)
    assert attempts == 2 and one.status is SeedStatus.READY


class Session:
    """Records Destroy calls; a seed's removal needs nothing else of a session."""

    def __init__(self) -> None:
        self.destroyed: list[str] = []

    async def retrieve(self, obj: Any, paths: list[str]) -> dict[str, Any]:
        return {"runtime.powerState": vim.VirtualMachine.PowerState.poweredOff}

    async def invoke(self, obj: Any, method: str, **kwargs: Any) -> Any:
        assert method == "Destroy"
        self.destroyed.append(str(obj._moId))
        return vim.Task("task-1")

    async def wait_for_task(self, task: Any) -> None:
        return None


async def test_a_seed_is_removed_after_the_last_job_of_its_group_unless_kept() -> None:
    jobs = [job(0, "web-0"), job(1, "web-1"), job(2, "kept-0", keep_seed=True)]
    registry = SeedRegistry(jobs, RunSettings(strategy="clone"))
    for made, vm in zip(registry.seeds, ("vm-1", "vm-2"), strict=True):
        made.status, made.vm = SeedStatus.READY, vim.VirtualMachine(vm)
    session: Any = Session()
    for spec in jobs:
        registry.enter(spec)
    await registry.leave(session, jobs[0])
    assert session.destroyed == []  # web-1 still holds it
    await registry.leave(session, jobs[1])
    await registry.leave(session, jobs[2])
    assert session.destroyed == ["vm-1"]
    assert [s.status for s in registry.seeds] == [SeedStatus.REMOVED, SeedStatus.KEPT]


async def test_a_worker_leaving_removes_the_seeds_no_job_holds() -> None:
    # Interrupted: web-1 never started, so its group never counts down to zero.
    jobs = [job(0, "web-0"), job(1, "web-1")]
    registry = SeedRegistry(jobs, RunSettings(strategy="clone"))
    registry.seeds[0].status = SeedStatus.READY
    registry.seeds[0].vm = vim.VirtualMachine("vm-5")
    session: Any = Session()
    registry.enter(jobs[0])
    await registry.sweep(session)
    assert session.destroyed == []  # web-0 is in hand
    await registry.leave(session, jobs[0])
    await registry.sweep(session)
    assert session.destroyed == ["vm-5"] and registry.seeds[0].status is SeedStatus.REMOVED


def test_clone_checks_are_made_before_a_session_is_spent() -> None:
    vapp = parse_descriptor(corpus_file("virtualsystemcollection.ovf").read_bytes())
    with pytest.raises(InputError, match="web-01: strategy clone clones one VM, and this "
                                         "package is a vApp"):
        check_job(job(0, "web-01"), vapp, strategy="clone")
    single = parse_descriptor(ovf_descriptor("web", [("disk.vmdk", 512, 1)]).encode())
    with pytest.raises(InputError, match=r"^web-01: linked_clone needs strategy: clone"):
        check_job(job(0, "web-01", linked_clone=True), single)
    check_job(job(0, "web-01", linked_clone=True), single, strategy="clone")


def test_the_cleanup_of_a_run_takes_the_seeds_it_left_and_not_those_it_found() -> None:
    report = {"version": 1, "jobs": [], "seeds": [
        {"name": "a-seed-1", "vm": "vm-1", "status": "kept"},
        {"name": "b-seed-2", "vm": "vm-2", "status": "removed"},
        {"name": "c-seed-3", "vm": "vm-3", "status": "found"},
        {"name": "d-seed-4", "vm": "vm-4", "status": "failed"},
        {"name": "e-seed-5", "vm": None, "status": "failed"},
    ]}
    targets = parse_report(report, file="r.json").targets
    assert [(t.vm, t.name) for t in targets] == [("vm-1", "a-seed-1"), ("vm-4", "d-seed-4")]


def test_a_clone_run_says_the_bytes_its_seeds_uploaded() -> None:
    from asyncovf.report import seed_lines, totals_line

    report = {"totals": {"jobs": 3, "imported": 3, "skipped": 0, "failed": 0, "aborted": 0,
                         "seconds": 1.0, "imports_per_second": 3.0, "bytes": 0},
              "seeds": [{"name": "web-1-seed-0a", "vm": "vm-9", "jobs": 3, "status": "removed",
                         "seconds": 0.25, "bytes": 3 * 2**20, "error": None}]}
    assert totals_line(report).endswith("(3.0 imports/s, 3.0 MiB uploaded)")
    assert seed_lines(report) == [
        "seed web-1-seed-0a (vm-9) for 3 VMs: removed, imported in 0.25 s"]
