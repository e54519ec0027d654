"""Batch files: defaults and overrides, templates, CSV rows, sharding, located errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asyncovf.engine.plan import BatchError, load_batch, parse_shard, render
from asyncovf.errors import InputError

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
    assert dict(first.properties) == {"hostname": "web-1.lab", "ip": "10.0.0.1"}
    assert second.properties["ip"] == "10.0.0.2" and not first.power_on
    assert first.placement.folder == "/DC0/vm/web"
    assert dict(first.network_mapping) == {"VM Network": "DC0_DVPG0"}


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
    assert (one.name, one.deployment, one.disk_provisioning) == ("one", "small", "thin")
    assert two.disk_provisioning == "thick"  # the entry's own key wins
    assert dict(one.properties) == {"vami.ip0": "10.1.1.1"}


def test_csv_rows_are_vm_entries(tmp_path: Path) -> None:
    write(tmp_path, "name,source,datastore,properties.hostname,network.VM Network\n"
                    "csv-1,a.ova,LocalDS_0,h1,DC0_DVPG0\n"
                    "csv-2,b.ova,,h2,\n", name="rows.csv")
    plan = load_batch(write(tmp_path, "defaults: {cluster: C0}\nvms_csv: rows.csv\n"))
    one, two = plan.jobs
    assert (one.name, one.placement.datastore, one.placement.cluster) == ("csv-1", "LocalDS_0",
                                                                          "C0")
    assert dict(one.properties) == {"hostname": "h1"}
    assert dict(one.network_mapping) == {"VM Network": "DC0_DVPG0"}
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
         ":2: defaults.options.WaitForIP: is not supported yet"),
    ],
    ids=["unknown-key", "count-zero", "count-without-placeholder", "no-source", "duplicate-name",
         "name-in-defaults", "bad-provisioning", "attribute-access", "duplicate-yaml-key",
         "yaml-syntax", "no-vms", "bad-connection", "unsupported-option"],
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
