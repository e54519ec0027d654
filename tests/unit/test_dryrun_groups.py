"""What the dry run groups, how causes are told, and placement resolved without creating.

Pure: jobs and an inventory snapshot in, groups, causes and placements out.
"""

from __future__ import annotations

from typing import Any

import pytest

from asyncovf.engine.batch import Refusal
from asyncovf.engine.dryrun import Finding, group_jobs, group_key
from asyncovf.engine.options import ImportOptions, RunSettings
from asyncovf.engine.plan import JobSpec
from asyncovf.engine.run import Cause, affected, causes, resolve_placement
from asyncovf.errors import PlacementError
from asyncovf.vsphere.inventory import PlacementRequest
from tests.unit.test_inventory import build

SETTINGS = RunSettings()


def job(index: int, **fields: Any) -> JobSpec:
    """A job; ``source`` and ``placement`` are the job's, the other fields its options."""
    where = {key: fields.pop(key) for key in ("source", "placement") if key in fields}
    options = ImportOptions(**{"properties": {"hostname": f"web-{index:03d}"}, **fields})
    return JobSpec(index=index, name=f"web-{index:03d}", origin="batch.yaml:3",
                   options=options, **{"source": "/a.ova",
                                       "placement": PlacementRequest(cluster="C0",
                                                                     datastore="LocalDS_0"),
                                       **where})


def test_vms_that_differ_only_in_name_and_property_values_are_one_group() -> None:
    jobs = [job(i, properties={"hostname": f"web-{i}", "port": str(8000 + i)})
            for i in range(1, 6)]
    assert group_jobs(jobs, SETTINGS) == [jobs]


@pytest.mark.parametrize("change", [
    {"source": "/b.ova"},
    {"placement": PlacementRequest(cluster="C0", datastore="LocalDS_1")},
    {"deployment": "large"},
    {"disk_provisioning": "thin"},
    {"ip_allocation_policy": "fixedPolicy"},
    {"ip_protocol": "IPv6"},
    {"locale": "de"},
    {"network_mapping": {"VM Network": "DC0_DVPG0"}},
    {"properties": {"hostname": "web", "port": "8080"}},  # another set of keys
    {"create_folders": True},
], ids=lambda change: next(iter(change)))
def test_what_create_import_spec_depends_on_makes_another_group(change: dict[str, Any]) -> None:
    first, second = job(1), job(2, **change)
    assert group_key(first, SETTINGS) != group_key(second, SETTINGS)
    assert group_jobs([first, second, job(3)], SETTINGS) == [[first, job(3)], [second]]


@pytest.mark.parametrize("change", [
    {"power_on": True}, {"annotation": "x"}, {"hidden": True},
    {"power_on": True, "wait_for_ip": True},
    {"extra_config": {"a": "b"}}, {"hardware_version": "vmx-19"}, {"mark_as_template": True},
], ids=lambda change: next(iter(change)))
def test_what_create_import_spec_does_not_see_stays_in_the_group(change: dict[str, Any]) -> None:
    assert group_key(job(1), SETTINGS) == group_key(job(2, **change), SETTINGS)


def test_the_run_wide_create_folders_counts_like_a_job_s_own() -> None:
    assert (group_key(job(1), RunSettings(create_folders=True))
            == group_key(job(1, create_folders=True), SETTINGS))


@pytest.mark.parametrize(("names", "text"), [
    (["web-001"], "web-001"),
    (["a", "b", "c"], "a, b, c"),
    ([f"web-{i:03d}" for i in range(1, 201)], "web-001 … web-200, 200 VMs"),
])
def test_affected_vms_are_named_briefly(names: list[str], text: str) -> None:
    assert affected(names) == text


def test_a_cause_names_its_one_vm_first_and_several_after() -> None:
    assert str(Cause("no such file", ("web-001",))) == "web-001: no such file"
    many = Cause("datastore 'nope' not found", tuple(f"web-{i:03d}" for i in range(1, 5)))
    assert str(many) == "datastore 'nope' not found (affects web-001 … web-004, 4 VMs)"
    assert many.describe(many.names) == "datastore 'nope' not found"  # the header names them
    assert many.describe(many.names[:2]) == str(many)


def test_refusals_are_told_once_per_distinct_cause_in_file_order() -> None:
    jobs = [job(i) for i in range(1, 7)]
    missing = Refusal("/a.ova: no such file or directory", "package")
    no_datastore = Refusal("datastore 'nope' not found", "input")
    refusals = {1: no_datastore, 2: missing, 4: no_datastore, 6: no_datastore}
    assert causes(jobs, refusals) == [
        Cause("datastore 'nope' not found", ("web-001", "web-004", "web-006")),
        Cause("/a.ova: no such file or directory", ("web-002",)),
    ]
    assert causes(jobs, {}) == []


def test_a_finding_says_each_cause_once_with_every_vm_it_affects() -> None:
    finding = Finding(source="/a.ova", jobs=["a", "b", "c"])
    finding.error("bad port", ["a"])
    finding.error("bad hostname", ["b"])
    finding.error("bad port", ["c", "a"])
    assert finding.errors == [Cause("bad port", ("a", "c")), Cause("bad hostname", ("b",))]
    assert finding.failing == {"a", "b", "c"}


def test_a_folder_create_folders_will_make_is_not_an_error() -> None:
    request = PlacementRequest(cluster="C0", folder="/DC0/vm/new/deeper")
    placement, new_folder = resolve_placement(build(), request, create_folders=True)
    assert new_folder == "/DC0/vm/new/deeper"
    assert placement.folder.path == "/DC0/vm" and placement.resource_pool.moid == "resgroup-8"
    with pytest.raises(PlacementError, match="VM folder '/DC0/vm/new/deeper' not found"):
        resolve_placement(build(), request)


def test_an_existing_folder_is_used_as_it_is() -> None:
    placement, new_folder = resolve_placement(
        build(), PlacementRequest(cluster="C0", folder="web"), create_folders=True)
    assert (placement.folder.path, new_folder) == ("/DC0/vm/web", None)


def test_with_create_folders_the_rest_of_the_placement_must_still_resolve() -> None:
    request = PlacementRequest(cluster="C0", datastore="nope", folder="new")
    with pytest.raises(PlacementError, match="datastore 'nope' not found"):
        resolve_placement(build(), request, create_folders=True)
