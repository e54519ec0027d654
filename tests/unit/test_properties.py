"""Property values checked against the descriptor's types and qualifiers, before import."""

from __future__ import annotations

import pytest

from asyncovf.errors import PropertyError
from asyncovf.ovf.descriptor import Descriptor, parse_descriptor
from asyncovf.ovf.properties import check_properties
from tests.factory import ovf_descriptor

PROPERTIES = """
    <ProductSection ovf:class="vami" ovf:instance="app">
      <Info>Settings</Info>
      <Property ovf:key="port" ovf:type="uint16" ovf:userConfigurable="true"
                ovf:qualifiers="MinValue(1024) MaxValue(49151)"/>
      <Property ovf:key="offset" ovf:type="sint8" ovf:userConfigurable="true"/>
      <Property ovf:key="ratio" ovf:type="real64" ovf:userConfigurable="true"/>
      <Property ovf:key="debug" ovf:type="boolean" ovf:userConfigurable="true"/>
      <Property ovf:key="role" ovf:type="string" ovf:userConfigurable="true"
                ovf:qualifiers='ValueMap{"web","db","cache"}'/>
      <Property ovf:key="hostname" ovf:type="string" ovf:userConfigurable="true"
                ovf:qualifiers="MinLen(3) MaxLen(8)"/>
      <Property ovf:key="ip0" ovf:type="ip" ovf:userConfigurable="true"/>
      <Property ovf:key="subnet" ovf:type="ip:network" ovf:userConfigurable="true"/>
      <Property ovf:key="secret" ovf:type="password" ovf:password="true"
                ovf:userConfigurable="true" ovf:qualifiers="MinLen(8)"/>
      <Property ovf:key="build" ovf:type="string" ovf:value="2024"/>
    </ProductSection>
"""


@pytest.fixture(scope="module")
def descriptor() -> Descriptor:
    text = ovf_descriptor("props", [("props-disk1.vmdk", 100, 8)])
    text = text.replace("    <OperatingSystemSection", PROPERTIES + "    <OperatingSystemSection")
    return parse_descriptor(text.encode())


GOOD = {"vami.port.app": "8080", "vami.offset.app": "-12", "vami.ratio.app": "0.5",
        "vami.debug.app": "true", "vami.role.app": "db", "vami.hostname.app": "web01",
        "vami.ip0.app": "10.0.0.5", "vami.subnet.app": "10.0.0.0/24",
        "vami.secret.app": "correct horse", }


def test_values_of_the_declared_types_and_qualifiers_pass(descriptor: Descriptor) -> None:
    check_properties(descriptor, GOOD)
    check_properties(descriptor, {"vami.ip0.app": ""})  # empty ip: vCenter's IP allocation


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("vami.port.app", "http", "property 'vami.port.app' = 'http': expected an integer "
                                  "(uint16)"),
        ("vami.port.app", "70000", "out of range for uint16 (0..65535)"),
        ("vami.port.app", "80", "below MinValue(1024)"),
        ("vami.port.app", "50000", "above MaxValue(49151)"),
        ("vami.offset.app", "200", "out of range for sint8 (-128..127)"),
        ("vami.ratio.app", "half", "expected a number (real64)"),
        ("vami.debug.app", "yes", "expected true or false"),
        ("vami.role.app", "mail", "must be one of web, db, cache (ValueMap)"),
        ("vami.hostname.app", "ab", "shorter than MinLen(3)"),
        ("vami.hostname.app", "a-very-long-name", "longer than MaxLen(8)"),
        ("vami.ip0.app", "10.0.0.300", "expected an IP address"),
        ("vami.subnet.app", "ten/8", "expected an IP network"),
        ("vami.secret.app", "short", "property 'vami.secret.app' = (hidden): shorter than "
                                     "MinLen(8)"),
        ("vami.nope.app", "1", "property 'vami.nope.app' is not in the descriptor (its "
                               "properties: vami.build.app, vami.debug.app, vami.hostname.app"),
    ],
)
def test_a_value_the_descriptor_does_not_allow_names_the_property(
    descriptor: Descriptor, key: str, value: str, message: str
) -> None:
    with pytest.raises(PropertyError) as caught:
        check_properties(descriptor, {**GOOD, key: value}, where="web-001")
    assert str(caught.value).startswith("web-001: property ")
    assert message in str(caught.value)
    if key == "vami.secret.app":
        assert "'short'" not in str(caught.value)  # a password value is never echoed


def test_a_property_the_vendor_hid_needs_hidden(descriptor: Descriptor) -> None:
    with pytest.raises(PropertyError, match="property 'vami.build.app' is not "
                                            "user-configurable; set hidden"):
        check_properties(descriptor, {"vami.build.app": "2025"})
    check_properties(descriptor, {"vami.build.app": "2025"}, hidden=True)
