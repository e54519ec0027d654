"""The one options model: each option declared once, read alike from every source,
its rules checked once and worded for where the values came from."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from asyncovf.engine.options import (
    DOCUMENT_KEYS,
    LIBRARY,
    OPTIONS,
    RULES,
    ImportOptions,
    RunSettings,
    document_values,
    read_options,
)
from asyncovf.engine.plan import JOB_KEYS, PLACEMENT_KEYS
from asyncovf.errors import InputError
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.spec import INFORMATIONAL_KEYS, options_document
from tests.factory import APPLIANCE_PRODUCT_SECTION, ovf_descriptor


def test_every_option_is_a_field_of_the_one_value_and_a_batch_key() -> None:
    keys = [option.key for option in OPTIONS]
    assert len(keys) == len(set(keys))
    assert set(keys) <= {f.name for f in fields(ImportOptions)}
    assert JOB_KEYS - set(keys) == {"name", "count", "source", "options", *PLACEMENT_KEYS}


def test_every_key_of_the_spec_document_is_an_option_or_says_so() -> None:
    descriptor = parse_descriptor(ovf_descriptor("appliance", [("disk.vmdk", 512, 1)],
                                                 product_section=APPLIANCE_PRODUCT_SECTION)
                                  .encode())
    document = options_document(descriptor, verbose=True)
    unread = set(document) - set(DOCUMENT_KEYS) - set(INFORMATIONAL_KEYS)
    assert unread <= {"Name", "AllDeploymentOptions"}
    # and what the document says comes back as the same options
    values = document_values(document, lambda key, message: InputError(f"{key}: {message}"))
    assert read_options(values, LIBRARY) == ImportOptions(
        deployment=document.get("Deployment") or None,
        properties={item["Key"]: item["Value"] for item in document["PropertyMapping"]},
        network_mapping={item["Name"]: item["Network"] for item in document["NetworkMapping"]},
        ip_allocation_policy=document.get("IPAllocationPolicy"),
        ip_protocol=document.get("IPProtocol"),
        disk_provisioning=document.get("DiskProvisioning"),
        annotation=document.get("Annotation"),
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.key)
def test_a_rule_is_refused_in_the_value_itself(rule: Any) -> None:
    with pytest.raises(InputError, match=f"^{rule.key} "):
        ImportOptions(**{rule.key: True, rule.other: not rule.needs})
    ImportOptions(**{rule.key: True, rule.other: rule.needs})  # the other way round is fine


class Recording:
    """An options source that records what it was asked to word."""

    def setting(self, key: str) -> str:
        return f"<{key}>"

    def invalid(self, key: str, message: str) -> InputError:
        return InputError(f"invalid {key}: {message}")

    def conflict(self, key: str, complaint: str) -> InputError:
        return InputError(f"conflict {key} {complaint}")


@pytest.mark.parametrize(("values", "message"), [
    ({"wait_for_ip": True}, "conflict wait_for_ip needs <power_on> (a VM that is off gets no "
                            "IP address)"),
    ({"wait_for_ip": "yes", "power_on": "no"}, "conflict wait_for_ip needs <power_on>"),
    ({"mark_as_template": True, "power_on": True},
     "conflict mark_as_template contradicts <power_on> (a template cannot be powered on)"),
    ({"ip_timeout": "-1"}, "invalid ip_timeout: '-1': must be a positive number of seconds"),
    ({"hardware_version": "banana"}, "invalid hardware_version: 'banana' is not a hardware"),
    ({"disk_provisioning": "thinnest"}, "invalid disk_provisioning: 'thinnest' is not one of"),
    ({"parallel_disks": 0}, "invalid parallel_disks: 0: must be a positive integer"),
    ({"extra_config": {" ": "x"}}, "invalid extra_config: a key is empty"),
    ({"power_on": "maybe"}, "invalid power_on: must be true or false"),
])
def test_errors_are_worded_by_the_source(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as caught:
        read_options(values, Recording())
    assert str(caught.value).startswith(message), str(caught.value)


def test_values_are_read_alike_whatever_their_text() -> None:
    options = read_options({"power_on": "yes", "wait_for_ip": True, "ip_timeout": "12.5",
                            "hardware_version": 19, "extra_config": {"a": True},
                            "deployment": "", "parallel_disks": "2"}, Recording())
    assert (options.power_on, options.wait_for_ip, options.ip_timeout,
            options.hardware_version, dict(options.extra_config), options.deployment,
            options.parallel_disks) == (True, True, 12.5, "vmx-19", {"a": "TRUE"}, None, 2)


def test_the_run_gives_a_job_its_transfer_settings_and_its_own_overrides_win() -> None:
    settings = RunSettings(concurrency=64, keep_failed=True, verify_manifest=False,
                           parallel_disks=3, create_folders=True, lease_ready_timeout=9.0)
    applied = settings.apply(ImportOptions(power_on=True), esxi_hosts=frozenset({"esx-1"}))
    assert (applied.keep_failed, applied.verify_manifest, applied.parallel_disks,
            applied.create_folders, applied.lease_ready_timeout, applied.esxi_hosts,
            applied.power_on) == (True, False, 3, True, 9.0, frozenset({"esx-1"}), True)
    assert applied.chunk_size < ImportOptions().chunk_size  # smaller for 64 workers
    own = settings.apply(ImportOptions(parallel_disks=1, create_folders=False))
    assert (own.parallel_disks, own.create_folders) == (1, False)


def test_the_readme_lists_each_option_under_its_flag_batch_key_and_document_key() -> None:
    """The README's equivalents table says what OPTIONS declares: a row for each option
    naming its flag, its batch key and its options document key (or none)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in readme.splitlines()
            if line.startswith("| ") and line.count(" | ") >= 5]
    for option in OPTIONS:
        row = next((r for r in rows if f"`{option.key}`" in r[2]), None)
        assert row is not None, f"no README row with the batch key {option.key}"
        flag, document = row[1], row[3]
        if option.has_flag:
            assert f"`{option.flag}" in flag, (option.key, flag)
        if option.document_key:
            assert f"`{option.document_key}`" in document, (option.key, document)
        else:  # none of its own: the row's document key, if any, is a row-mate's
            assert document == "—" or any(
                f"`{other.key}`" in row[2] and f"`{other.document_key}`" in document
                for other in OPTIONS if other.document_key), (option.key, document)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("hardware_version", "²", "'²' is not a hardware version"),
    ("parallel_disks", "²", "'²': must be a positive integer"),
])
def test_digits_are_ascii_digits(key: str, value: str, message: str) -> None:
    """``str.isdigit`` also takes "²", which ``int`` refuses: our message, not int's."""
    with pytest.raises(InputError) as caught:
        read_options({key: value}, Recording())
    assert str(caught.value) == f"invalid {key}: {message}" or message in str(caught.value)
    assert "invalid literal" not in str(caught.value)
