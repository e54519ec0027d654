"""Batch files: defaults and overrides, templates, CSV rows, sharding, located errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from asyncovf.engine.options import DEFAULT_IP_TIMEOUT, parse_hardware_version
from asyncovf.engine.plan import (
    JobSpec,
    load_batch,
    parse_batch,
    parse_shard,
)
from asyncovf.engine.templates import render
from asyncovf.errors import BatchError, InputError
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.spec import options_document
from tests.factory import ovf_descriptor

SMALLEST = """\
defaults:
  source: ./photon.ova
  cluster: DC0_C0
  datastore: LocalDS_0
vms:
  - name: "web-{index:03d}"
    count: 200
  - name: db-01
    source: ./db.ova
"""


def write(tmp_path: Path, text: str, name: str = "batch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_smallest_useful_batch_file(tmp_path: Path) -> None:
    plan = load_batch(write(tmp_path, SMALLEST))
    assert len(plan.jobs) == 201
    first, last = plan.jobs[0], plan.jobs[-1]
    assert (first.name, plan.jobs[199].name, last.name) == ("web-001", "web-200", "db-01")
    assert first.source == str(tmp_path / "photon.ova") and last.source == str(tmp_path / "db.ova")
    assert first.placement.cluster == "DC0_C0" and last.placement.datastore == "LocalDS_0"
    assert [job.index for job in plan.jobs] == list(range(201))
    assert first.origin == f"{tmp_path / 'batch.yaml'}:6"


def test_entries_override_defaults_and_templates_reach_properties(tmp_path: Path) -> None:
    plan = load_batch(write(tmp_path, """\
defaults:
  source: a.ova
  folder: /DC0/vm/web
  power_on: true
  properties: {hostname: "{name}.example.com", role: web}
  network_mapping: {"VM Network": DC0_DVPG0}
vms:
  - name: "web-{index}"
    count: 2
    properties: {hostname: "{name}.lab", ip: "10.0.0.{index}"}
    power_on: false
"""))
    first, second = plan.jobs
    assert dict(first.options.properties) == {"hostname": "web-1.lab", "ip": "10.0.0.1"}
    assert second.options.properties["ip"] == "10.0.0.2" and not first.options.power_on
    assert first.placement.folder == "/DC0/vm/web"
    assert dict(first.options.network_mapping) == {"VM Network": "DC0_DVPG0"}


def test_options_document_from_spec_is_accepted_inline(tmp_path: Path) -> None:
    plan = load_batch(write(tmp_path, """\
defaults:
  source: a.ova
  options:
    Name: ignored-template-name
    Deployment: small
    DiskProvisioning: thin
    NetworkMapping: [{Name: "VM Network", Network: "DC0_DVPG0"}]
    PropertyMapping: [{Key: "vami.ip0", Value: "10.1.1.1"}]
    PowerOn: false
    InjectOvfEnv: false
vms:
  - name: one
  - name: two
    disk_provisioning: thick
"""))
    one, two = plan.jobs
    assert one.name == "one"
    assert (one.options.deployment, one.options.disk_provisioning) == ("small", "thin")
    assert two.options.disk_provisioning == "thick"  # the entry's own key wins
    assert dict(one.options.properties) == {"vami.ip0": "10.1.1.1"}


def test_post_import_keys_in_entries_and_defaults(tmp_path: Path) -> None:
    plan = load_batch(write(tmp_path, """\
defaults:
  source: a.ova
  power_on: true
  wait_for_ip: true
  ip_timeout: 30
  inject_ovf_env: true
  extra_config: {disk.EnableUUID: true, guestinfo.role: web}
  hardware_version: 19
vms:
  - name: web
  - name: tmpl
    power_on: false
    wait_for_ip: false
    mark_as_template: true
    hardware_version: vmx-15
    extra_config: {guestinfo.role: template}
"""))
    web, tmpl = (job.options for job in plan.jobs)
    assert (web.power_on, web.wait_for_ip, web.ip_timeout, web.inject_ovf_env,
            web.mark_as_template, web.hardware_version) == (True, True, 30.0, True, False,
                                                             "vmx-19")
    assert dict(web.extra_config) == {"disk.EnableUUID": "TRUE", "guestinfo.role": "web"}
    assert (tmpl.power_on, tmpl.wait_for_ip, tmpl.mark_as_template, tmpl.hardware_version) == (
        False, False, True, "vmx-15")
    assert dict(tmpl.extra_config) == {"guestinfo.role": "template"}  # replaces, not merges


def test_post_import_defaults_ask_for_nothing(tmp_path: Path) -> None:
    (job,) = load_batch(write(tmp_path, "vms: [{name: a, source: x}]\n")).jobs
    options = job.options
    assert (options.power_on, options.wait_for_ip, options.inject_ovf_env, options.mark_as_template,
            options.hardware_version, dict(options.extra_config), options.ip_timeout) == (
        False, False, False, False, None, {}, DEFAULT_IP_TIMEOUT)


@pytest.mark.parametrize(("given", "expected"), [
    ("vmx-19", "vmx-19"), ("19", "vmx-19"), (19, "vmx-19"), ("VMX-07", "vmx-7"), (" 13 ", "vmx-13"),
])
def test_hardware_versions_are_normalised(given: object, expected: str) -> None:
    assert parse_hardware_version(given) == expected


@pytest.mark.parametrize("given", ["", "vmx-", "vmx-x", "2", "100", True, "19.5", "-19"])
def test_bad_hardware_versions_are_refused(given: object) -> None:
    with pytest.raises(ValueError, match="is not a hardware version"):
        parse_hardware_version(given)


def test_post_import_csv_columns(tmp_path: Path) -> None:
    write(tmp_path, "name,source,power_on,wait_for_ip,ip_timeout,hardware_version,"
                    "extra_config.guestinfo.role,mark_as_template\n"
                    "c-1,a.ova,yes,true,12.5,17,db,\n"
                    "c-2,a.ova,no,,,,,TRUE\n", name="rows.csv")
    one, two = (job.options for job in load_batch(tmp_path / "rows.csv").jobs)
    assert (one.power_on, one.wait_for_ip, one.ip_timeout, one.hardware_version) == (
        True, True, 12.5, "vmx-17")
    assert dict(one.extra_config) == {"guestinfo.role": "db"}
    assert (two.power_on, two.mark_as_template, dict(two.extra_config)) == (False, True, {})


def test_create_folders_and_parallel_disks_are_keys_that_override_the_run_flags(
    tmp_path: Path,
) -> None:
    plan = load_batch(write(tmp_path, """\
defaults:
  source: a.ova
  create_folders: true
  parallel_disks: 3
vms:
  - name: inherits
  - name: overrides
    create_folders: false
    parallel_disks: 1
"""))
    inherits, overrides = plan.jobs
    assert (inherits.options.create_folders, inherits.options.parallel_disks) == (True, 3)
    assert (overrides.options.create_folders, overrides.options.parallel_disks) == (False, 1)
    (unset,) = load_batch(write(tmp_path, "vms: [{name: a, source: x}]\n")).jobs
    # None: the run's flags
    assert (unset.options.create_folders, unset.options.parallel_disks) == (None, None)


def test_create_folders_and_parallel_disks_csv_columns(tmp_path: Path) -> None:
    write(tmp_path, "name,source,create_folders,parallel_disks\n"
                    "c-1,a.ova,yes,4\n"
                    "c-2,a.ova,,\n", name="rows.csv")
    one, two = load_batch(tmp_path / "rows.csv").jobs
    assert (one.options.create_folders, one.options.parallel_disks) == (True, 4)
    assert (two.options.create_folders, two.options.parallel_disks) == (None, None)


def test_a_bad_parallel_disks_cell_names_the_file_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name,source,parallel_disks\nc-1,a.ova,0\n", name="rows.csv")
    with pytest.raises(BatchError) as caught:
        load_batch(path)
    assert str(caught.value) == (f"{path}:2: row 2.parallel_disks: '0': must be a positive "
                                 "integer (disks uploaded at once)")


def test_a_bad_csv_cell_names_the_file_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name,source,hardware_version\nc-1,a.ova,seven\n", name="rows.csv")
    with pytest.raises(BatchError) as caught:
        load_batch(path)
    assert str(caught.value) == (f"{path}:2: row 2.hardware_version: 'seven' is not a hardware "
                                 "version; expected vmx-NN or NN (e.g. vmx-19 or 19)")


def test_the_spec_document_round_trips_with_the_post_import_options(tmp_path: Path) -> None:
    descriptor = parse_descriptor(ovf_descriptor("rt", [("rt-disk1.vmdk", 100, 16)]).encode())

    def job_from(document: dict[str, Any]) -> JobSpec:
        entry = {"name": "rt-1", "source": "rt.ova", "options": json.loads(json.dumps(document))}
        (job,) = parse_batch({"vms": [entry]}, file="rt.json", base=tmp_path).jobs
        return job

    document = options_document(descriptor)
    untouched = job_from(document).options
    assert (untouched.power_on, untouched.wait_for_ip, untouched.inject_ovf_env,
            untouched.mark_as_template, untouched.hardware_version,
            dict(untouched.extra_config)) == (False, False, False, False, None, {})
    document.update(PowerOn=True, WaitForIP=True, InjectOvfEnv=True, HardwareVersion="19",
                    ExtraConfig=[{"Key": "guestinfo.a", "Value": "1"},
                                 {"Key": "disk.EnableUUID", "Value": "TRUE"}])
    edited = job_from(document).options
    assert (edited.power_on, edited.wait_for_ip, edited.inject_ovf_env,
            edited.hardware_version) == (True, True, True, "vmx-19")
    assert list(edited.extra_config.items()) == [("guestinfo.a", "1"), ("disk.EnableUUID", "TRUE")]
    document.update(PowerOn=False, WaitForIP=False, MarkAsTemplate=True)
    assert job_from(document).options.mark_as_template


def test_csv_rows_are_vm_entries(tmp_path: Path) -> None:
    write(tmp_path, "name,source,datastore,properties.hostname,network.VM Network\n"
                    "csv-1,a.ova,LocalDS_0,h1,DC0_DVPG0\n"
                    "csv-2,b.ova,,h2,\n", name="rows.csv")
    plan = load_batch(write(tmp_path, "defaults: {cluster: C0}\nvms_csv: rows.csv\n"))
    one, two = plan.jobs
    assert (one.name, one.placement.datastore, one.placement.cluster) == ("csv-1", "LocalDS_0",
                                                                          "C0")
    assert dict(one.options.properties) == {"hostname": "h1"}
    assert dict(one.options.network_mapping) == {"VM Network": "DC0_DVPG0"}
    assert two.placement.datastore is None and two.source.endswith("b.ova")
    assert one.origin == f"{tmp_path / 'rows.csv'}:2"


def test_a_csv_file_alone_is_a_batch(tmp_path: Path) -> None:
    plan = load_batch(write(tmp_path, "name,source\nsolo,a.ova\n", name="solo.csv"))
    assert [job.name for job in plan.jobs] == ["solo"]


@pytest.mark.parametrize(
    ("text", "located"),
    [
        ("vms:\n  - name: a\n    source: a.ova\n    cuont: 3\n", ":4: vms[0].cuont: unknown key"),
        ("vms:\n  - name: a\n    count: 0\n    source: x\n",
         ":3: vms[0].count: must be a positive integer"),
        ("vms:\n  - name: a\n    count: 2\n    source: x\n",
         ":2: vms[0].name: count is 2 but the name has no placeholder"),
        ("vms:\n  - name: a\n", ":2: vms[0].source: no source: set it here or in defaults"),
        ("vms:\n  - {name: a, source: x}\n  - {name: a, source: x}\n",
         ":3: vms[1].name: VM name 'a' repeats the one from"),
        ("defaults:\n  source: x\n  name: nope\nvms: [{name: a}]\n",
         ":3: defaults.name: unknown key"),
        ("vms:\n  - name: a\n    source: x\n    disk_provisioning: fat\n",
         ":4: vms[0].disk_provisioning: 'fat' is not one of"),
        ("vms:\n  - name: 'x-{index.__class__}'\n    source: x\n",
         ":2: vms[0].name: unknown placeholder"),
        ("vms:\n  - name: a\n    name: b\n", ":3: YAML: duplicate key 'name'"),
        ("vms: [\n", ": YAML:"),
        ("vms: []\n", ": vms: no VMs to import"),
        ("connection: {server: vc, insecure: maybe}\nvms: [{name: a, source: x}]\n",
         ":1: connection.insecure: must be true or false"),
        ("defaults:\n  options: {WaitForIP: true}\nvms: [{name: a, source: x}]\n",
         ":3: vms[0].wait_for_ip: needs power_on: true"),
        ("vms:\n  - name: a\n    source: x\n    power_on: true\n    mark_as_template: true\n",
         ":5: vms[0].mark_as_template: contradicts power_on: true (a template cannot be "
         "powered on)"),
        ("vms:\n  - name: a\n    source: x\n    hardware_version: banana\n",
         ":4: vms[0].hardware_version: 'banana' is not a hardware version; expected vmx-NN"),
        ("vms:\n  - name: a\n    source: x\n    hardware_version: vmx-1000\n",
         ":4: vms[0].hardware_version: 'vmx-1000' is not a hardware version"),
        ("vms:\n  - name: a\n    source: x\n    power_on: true\n    wait_for_ip: true\n"
         "    ip_timeout: -5\n", ":6: vms[0].ip_timeout: -5: must be a positive number"),
        ("vms:\n  - name: a\n    source: x\n    ip_timeout: soon\n",
         ":4: vms[0].ip_timeout: 'soon': must be a positive number"),
        ("vms:\n  - name: a\n    source: x\n    inject_ovf_env: maybe\n",
         ":4: vms[0].inject_ovf_env: must be true or false"),
        ("vms:\n  - name: a\n    source: x\n    extra_config: [a, b]\n",
         ":4: vms[0].extra_config: must be a mapping of name: value"),
        ("vms:\n  - name: a\n    source: x\n    extra_config: {'': x}\n",
         ":4: vms[0].extra_config: a key is empty"),
        ("defaults:\n  options: {ExtraConfig: 7}\nvms: [{name: a, source: x}]\n",
         ":2: defaults.options.ExtraConfig: must be a list of {Key, Value}"),
        ("defaults:\n  options: {PowerOn: true, MarkAsTemplate: true}\n"
         "vms: [{name: a, source: x}]\n", ":3: vms[0].mark_as_template: contradicts power_on"),
        ("vms:\n  - name: a\n    source: x\n    create_folders: maybe\n",
         ":4: vms[0].create_folders: must be true or false"),
        ("defaults:\n  source: x\n  create_folders: 1\nvms: [{name: a}]\n",
         ":4: vms[0].create_folders: must be true or false"),
        ("vms:\n  - name: a\n    source: x\n    parallel_disks: 0\n",
         ":4: vms[0].parallel_disks: 0: must be a positive integer"),
        ("vms:\n  - name: a\n    source: x\n    parallel_disks: two\n",
         ":4: vms[0].parallel_disks: 'two': must be a positive integer"),
        ("vms:\n  - name: a\n    source: x\n    parallel_disks: true\n",
         ":4: vms[0].parallel_disks: True: must be a positive integer"),
    ],
    ids=["unknown-key", "count-zero", "count-without-placeholder", "no-source", "duplicate-name",
         "name-in-defaults", "bad-provisioning", "attribute-access", "duplicate-yaml-key",
         "yaml-syntax", "no-vms", "bad-connection", "wait-for-ip-without-power-on",
         "template-and-power-on", "bad-hardware-version", "huge-hardware-version",
         "negative-ip-timeout", "word-ip-timeout", "bad-flag", "extra-config-list",
         "extra-config-empty-key", "options-extra-config-not-a-list",
         "options-template-and-power-on", "bad-create-folders",
         "create-folders-number-in-defaults", "parallel-disks-zero", "parallel-disks-word",
         "parallel-disks-boolean"],
)
def test_errors_name_the_file_the_line_and_the_field(
    tmp_path: Path, text: str, located: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BatchError) as caught:
        load_batch(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert located in message, message
    assert "\n" not in message


def test_sharding_is_a_deterministic_round_robin_partition(tmp_path: Path) -> None:
    plan = load_batch(write(tmp_path, SMALLEST))
    shards = [plan.shard(k, 3) for k in (1, 2, 3)]
    names = [job.name for shard in shards for job in shard.jobs]
    assert sorted(names) == sorted(job.name for job in plan.jobs)
    assert len(set(names)) == len(names)
    assert max(len(s.jobs) for s in shards) - min(len(s.jobs) for s in shards) <= 1
    assert [j.name for j in plan.shard(2, 3).jobs] == [j.name for j in plan.shard(2, 3).jobs]


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "1-3"])
def test_bad_shard_specs(text: str) -> None:
    with pytest.raises(InputError, match=re.escape(f"--shard {text}")):
        parse_shard(text)


def test_templates_allow_format_specs_but_nothing_else() -> None:
    assert render("web-{index:03d}", index=7) == "web-007"
    with pytest.raises(ValueError, match="unknown placeholder"):
        render("{index[0]}", index=1)
