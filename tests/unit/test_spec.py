"""`asyncovf spec`: the options document, pinned for representative corpus fixtures.

Each expectation was checked by hand against the fixture's XML: the default
deployment option first, properties filtered by ``ovf:configuration`` and keyed
``class.key.instance`` (DSP0243 9.5.1), every network listed, annotations kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncovf.engine.plan import parse_batch
from asyncovf.errors import PackageError
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.spec import options_document
from tests.corpus import CORPUS, corpus_files

ROOT = Path(__file__).resolve().parents[2]

# fixture: (Name, Deployment or None, all options, {key: default}, networks, annotation start)
PINNED: dict[str, tuple[str, str | None, list[str], dict[str, str], list[str], str]] = {
    "ttylinux.ovf": ("ttylinux-pc_i486-16.1", None, [], {}, ["nat"], ""),
    "properties.ovf": (
        "test-vm", None, [],
        {"ttylinux.ntp-server.vm": "", "ttylinux.enable_ssh.vm": "false",
         "ttylinux.nfs_mount.vm": "/transfer", "ttylinux.whitespace_int.vm": "  42  ",
         "vm.vmname": "vcsim_test"},
        ["VM Network"], ""),
    "deployment-configs.ovf": (
        "deployment-configs-vm", "large", ["large", "small", "medium"],
        {"hostname": "", "tier_large": "large", "size_preset": "medium",
         "scratch_space_size_large": "20"},
        ["Management"], "Fixture for deployment config"),
    "category-grouping.ovf": (
        "category-vm", "default", ["default", "extended"],
        {"test.net_common": "", "test.storage_common": "", "test.auth_mode": "password"},
        ["VM Network"], ""),
    "photon5.ovf": ("Photon OS", None, [], {}, ["None"],
                    "This OVA provides a minimal installed profile of PhotonOS."),
    "virtualsystemcollection.ovf": (
        "vsc1", None, [], {"adminemail": "", "app_ip": "192.168.0.10"}, ["VS Network"],
        "Contact customer support"),
    "external/two-vms-vapp/two-vms-vapp.ovf": ("two-vms-vapp", None, [], {}, ["VM Network"],
                                               "Mahdi's annotation"),
    "external/chinese/chinese_characters.ovf": ("虚拟机,fgdr@$%@测试", None, [], {},
                                                ["VM Network"], ""),
    "external/non-ascii/highascii/high_ascii_characters.ovf": ("ùàçéè", None, [], {},
                                                               ["VM Network"], ""),
    "external/OvfWithSpaceInFileName/SpaceInVmdkName/haoUnOS2VMs.ovf": (
        "haoUnOS2VMs", None, [], {}, ["none"], "VM annotation"),
    "ubuntu24.10.ovf": (
        "ubuntu-oracular-24.10-cloudimg-20241109", None, [],
        {"instance-id": "id-ovf", "hostname": "ubuntuguest", "seedfrom": "", "public-keys": "",
         "user-data": "", "password": ""},
        ["VM Network"], ""),
    "configspec.ovf": (
        "haproxy", "default", ["default", "frontend"],
        {"BUILD_TIMESTAMP": "1615488399", "network.hostname": "haproxy.local",
         "loadbalance.dataplane_port": "5556"},
        ["Management", "Workload", "Frontend"], "HAProxy for the Load Balancer API"),
}
GOVC_KEYS = ["DiskProvisioning", "IPAllocationPolicy", "IPProtocol", "PropertyMapping",
             "NetworkMapping", "Annotation", "MarkAsTemplate", "PowerOn", "InjectOvfEnv",
             "WaitForIP", "Name"]
EXTENSION_KEYS = ["ExtraConfig", "HardwareVersion"]  # ours, after govc's


def document(relative: str, **kwargs: Any) -> dict[str, Any]:
    descriptor = parse_descriptor((CORPUS / relative).read_bytes(), name=relative)
    return options_document(descriptor, **kwargs)


@pytest.mark.parametrize("relative", sorted(PINNED))
def test_pinned_spec_output(relative: str) -> None:
    name, deployment, options, properties, networks, annotation = PINNED[relative]
    doc = document(relative, hidden=True)
    assert [k for k in doc if k not in ("AllDeploymentOptions", "Deployment")] == \
        GOVC_KEYS + EXTENSION_KEYS
    assert doc["Name"] == name
    assert doc.get("Deployment") == deployment
    assert doc.get("AllDeploymentOptions", []) == options
    mapping = {p["Key"]: p["Value"] for p in doc["PropertyMapping"]}
    assert len(mapping) == len(doc["PropertyMapping"])  # each key once
    assert {k: mapping.get(k) for k in properties} == properties
    if relative != "configspec.ovf":  # configspec: only a sample of its properties pinned
        assert set(mapping) == set(properties)
    assert [n["Name"] for n in doc["NetworkMapping"]] == networks
    assert all(n["Network"] == "" for n in doc["NetworkMapping"])
    assert doc["Annotation"].startswith(annotation)
    assert (doc["DiskProvisioning"], doc["IPAllocationPolicy"], doc["IPProtocol"]) == (
        "flat", "dhcpPolicy", "IPv4")
    assert not any(doc[k] for k in ("MarkAsTemplate", "PowerOn", "InjectOvfEnv", "WaitForIP",
                                    "ExtraConfig", "HardwareVersion"))


def test_properties_the_vendor_hid_are_listed_only_with_hidden() -> None:
    """govc's ``import.spec`` lists only userConfigurable properties unless -hidden."""
    shown = {p["Key"] for p in document("configspec.ovf")["PropertyMapping"]}
    everything = {p["Key"] for p in document("configspec.ovf", hidden=True)["PropertyMapping"]}
    assert "BUILD_TIMESTAMP" in everything - shown
    assert "network.hostname" in shown
    descriptor = parse_descriptor((CORPUS / "configspec.ovf").read_bytes())
    configurable = {p.key for p in descriptor.properties if p.user_configurable}
    assert shown == configurable & everything


def test_choosing_another_deployment_changes_properties_and_hardware() -> None:
    doc = document("deployment-configs.ovf", deployment="small", verbose=True, hidden=True)
    keys = [p["Key"] for p in doc["PropertyMapping"]]
    assert keys == ["hostname", "tier_small", "size_preset", "scratch_space_size_small"]
    hardware = doc["Hardware"]
    assert [(hardware[o]["deployment-configs-vm"]["CPUs"],
             hardware[o]["deployment-configs-vm"]["MemoryMB"])
            for o in ("small", "medium", "large")] == [(2, 2048), (4, 4096), (8, 8192)]
    with pytest.raises(ValueError, match="deployment option 'huge' not in the descriptor; "
                                         "choices: large, small, medium"):
        document("deployment-configs.ovf", deployment="huge")


def test_verbose_adds_property_specs_disks_and_eulas() -> None:
    doc = document("properties.ovf", verbose=True)
    spec = doc["PropertyMapping"][0]["Spec"]
    assert spec == {"Key": "ntp-server", "Type": "string", "Qualifiers": "MinLen(1),MaxLen(65535)",
                    "Label": "NTP Server(s)",
                    "Description": "NTP Server(s) to use. Please specify space delimited list.",
                    "Category": "ttylinux Settings", "UserConfigurable": True}
    photon = document("photon5.ovf", verbose=True)
    assert len(photon["Eulas"]) == 1 and photon["Disks"][0]["CapacityBytes"] > 0
    assert photon["AllDiskProvisioningOptions"][0] == "flat"


FILES = corpus_files()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
def test_every_parseable_corpus_descriptor_gives_a_json_document(path: Path) -> None:
    try:
        descriptor = parse_descriptor(path.read_bytes(), name=path.name)
    except PackageError as refused:  # a refusal is ours, in one line; anything else is a bug
        assert "\n" not in str(refused), str(refused)
        return
    for verbose in (False, True):
        json.dumps(options_document(descriptor, verbose=verbose))


def test_the_document_feeds_back_into_a_batch_entry() -> None:
    doc = document("deployment-configs.ovf", verbose=True)
    doc["PropertyMapping"][0]["Value"] = "web-1"
    doc["NetworkMapping"][0]["Network"] = "DC0_DVPG0"
    plan = parse_batch({"vms": [{"name": "x", "source": "/a.ova", "options": doc}]},
                       file="inline", base=Path("/"))
    (job,) = plan.jobs
    assert job.options.deployment == "large" and job.options.disk_provisioning == "flat"
    assert job.options.properties["hostname"] == "web-1"
    assert dict(job.options.network_mapping) == {"Management": "DC0_DVPG0"}


def test_cli_spec_prints_json_and_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "asyncovf", "spec"]
    good = subprocess.run([*run, str(CORPUS / "ttylinux.ovf")], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert good.returncode == 0 and json.loads(good.stdout)["Name"] == "ttylinux-pc_i486-16.1"
    bad = tmp_path / "bad.ovf"
    bad.write_text("<html/>")
    refused = subprocess.run([*run, str(bad)], capture_output=True, text=True, cwd=ROOT,
                             timeout=60)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (f"asyncovf: error: {bad}: not an OVF descriptor: root "
                                      "element is <html> in namespace (none)")
