"""The OVF environment document (guestinfo.ovfEnv): DSP0243 section 11, built purely."""

from __future__ import annotations

from lxml import etree

from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.ovf.environment import (
    ENVIRONMENT_NS,
    VMWARE_ENVIRONMENT_NS,
    Platform,
    environment_properties,
    ovf_environment,
)
from tests.factory import APPLIANCE_PRODUCT_SECTION, ovf_descriptor

OE = f"{{{ENVIRONMENT_NS}}}"
PLATFORM = Platform(kind="VMware vCenter Server", version="7.0.0", vendor="VMware, Inc.")


def parsed(document: str) -> etree._Element:
    return etree.fromstring(document.encode())


def test_the_document_has_the_platform_and_every_property_in_order() -> None:
    root = parsed(ovf_environment({"a.b": "1", "c": ""}, esx_id="vm-42", platform=PLATFORM))
    assert root.tag == f"{OE}Environment"
    assert root.get(f"{OE}id") == ""
    assert root.get(f"{{{VMWARE_ENVIRONMENT_NS}}}esxId") == "vm-42"
    platform = root.find(f"{OE}PlatformSection")
    assert platform is not None
    assert [(child.tag.removeprefix(OE), child.text) for child in platform] == [
        ("Kind", "VMware vCenter Server"), ("Version", "7.0.0"), ("Vendor", "VMware, Inc."),
        ("Locale", "en")]
    props = root.findall(f"{OE}PropertySection/{OE}Property")
    assert [(p.get(f"{OE}key"), p.get(f"{OE}value")) for p in props] == [("a.b", "1"), ("c", "")]


def test_values_are_escaped_not_injected() -> None:
    hostile = 'x"/><Property oe:key="evil" oe:value="1'
    document = ovf_environment({"k": hostile, "multi": "line one\nline\ttwo & <three>"},
                               esx_id='vm-1"', platform=Platform("a<b", "1&2", "c", "de_DE"))
    root = parsed(document)
    values = {p.get(f"{OE}key"): p.get(f"{OE}value")
              for p in root.iter(f"{OE}Property")}
    assert values == {"k": hostile, "multi": "line one\nline\ttwo & <three>"}
    assert root.get(f"{{{VMWARE_ENVIRONMENT_NS}}}esxId") == 'vm-1"'
    assert root.findtext(f"{OE}PlatformSection/{OE}Kind") == "a<b"
    assert root.findtext(f"{OE}PlatformSection/{OE}Locale") == "de_DE"
    assert document.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Environment')


def test_properties_are_the_defaults_overridden_by_the_jobs_values() -> None:
    descriptor = parse_descriptor(ovf_descriptor(
        "app", [("app.vmdk", 10, 16)], product_section=APPLIANCE_PRODUCT_SECTION).encode())
    values = environment_properties(descriptor, None, {"appliance.hostname.web": "web-01"})
    assert values == {"appliance.hostname.web": "web-01", "appliance.port.web": "8080",
                      "appliance.token.web": 'a&b<c"'}  # hidden ones too: the guest reads them


def test_no_properties_is_an_empty_property_section() -> None:
    root = parsed(ovf_environment({}, esx_id="vm-1", platform=PLATFORM))
    section = root.find(f"{OE}PropertySection")
    assert section is not None and len(section) == 0
