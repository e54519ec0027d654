"""The descriptor model over the whole shared corpus, and its hostile cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncovf.errors import PackageError
from asyncovf.ovf.descriptor import parse_descriptor
from asyncovf.ovf.hardware import allocation_unit_factor
from tests.corpus import CORPUS, corpus_file, corpus_files
from tests.factory import ovf_descriptor

FILES = corpus_files()


def test_the_shared_corpus_is_there() -> None:
    assert len(FILES) > 400, f"expected the OVF corpus at {CORPUS}"


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
def test_every_corpus_descriptor_parses_or_fails_with_a_clear_error(path: Path) -> None:
    try:
        descriptor = parse_descriptor(path.read_bytes(), name=path.name)
    except PackageError as exc:
        message = str(exc)
        assert message.startswith(f"{path.name}: ")
        assert "\n" not in message and len(message) < 400
        return
    systems = descriptor.entity.walk()
    assert systems and all(s.id is not None for s in systems)
    referenced = {d.file_ref for d in descriptor.disks if d.file_ref}
    assert referenced <= {f.id for f in descriptor.files}


def test_ttylinux_model() -> None:
    d = parse_descriptor(corpus_file("ttylinux.ovf").read_bytes(), name="ttylinux.ovf")
    assert d.ovf_version == "1.x"
    assert [(f.href, f.size) for f in d.files] == [("ttylinux-pc_i486-16.1-disk1.vmdk", 10595840)]
    (disk,) = d.disks
    assert disk.capacity_bytes == 30 * 2**20 and disk.file_ref == "file1"
    hw = d.entity.hardware
    assert (hw.cpus, hw.memory_mb, hw.disk_ids) == (1, 32, ("vmdisk1",))
    assert d.networks == ("nat",) and hw.nics[0].network == "nat"


def test_virtual_system_collection_has_nested_systems() -> None:
    d = parse_descriptor(corpus_file("external/nested-vapp/nested-vapp.ovf").read_bytes(),
                         name="nested-vapp.ovf")
    assert d.entity.is_collection
    assert len(d.entity.walk()) > 2


def test_product_properties_categories_and_per_option_defaults() -> None:
    d = parse_descriptor(corpus_file("category-grouping.ovf").read_bytes(), name="c.ovf")
    by_key = {p.key: p for p in d.properties}
    assert [p.category for p in d.properties] == ["Net", "Net", "Storage", "Storage",
                                                  "Security", "Security"]
    extended = by_key["test.net_extended"]
    assert extended.configurations == ("extended",) and not extended.applies_to("default")
    assert by_key["test.auth_mode"].default_for("extended") == "password"
    assert by_key["test.net_common"].label == "Network (common)"


def test_eula_annotation_and_operating_system() -> None:
    d = parse_descriptor(corpus_file("photon5.ovf").read_bytes(), name="photon5.ovf")
    assert len(d.eulas) == 1 and d.eulas[0]
    assert d.entity.annotation and d.entity.annotation.startswith("This OVA provides")
    assert d.entity.operating_system is not None


def test_ovf_1_0_substitution_form_and_unprefixed_children() -> None:
    # <Section xsi:type="ovf:DiskSection_Type">, <Content xsi:type="ovf:VirtualSystem_Type">,
    # children of a prefixed ovf:Envelope in no namespace: early vCenter exports.
    d = parse_descriptor(corpus_file("external/OVFCerts/ValidCert/Nostalgia.ovf").read_bytes(),
                         name="Nostalgia.ovf")
    assert d.entity.name == "Nostalgia" and d.networks == ("VM Network",)
    assert [f.href for f in d.files] == ["Nostalgia-disk1.vmdk"]
    assert d.entity.hardware.disk_ids == ("vmdisk1",) and d.entity.hardware.memory_mb == 16


def test_a_namespace_name_that_is_not_a_valid_uri_is_tolerated_alone() -> None:
    d = parse_descriptor(corpus_file("virtualsystemcollection.ovf").read_bytes(), name="v.ovf")
    assert [s.name for s in d.entity.walk()] == ["vsc1", "Virtual Appliance One",
                                                 "Virtual Appliance Two"]
    broken = corpus_file("virtualsystemcollection.ovf").read_bytes().replace(
        b"</Envelope>", b"<Oops></Envelope>")
    with pytest.raises(PackageError, match="not well-formed XML"):
        parse_descriptor(broken, name="v.ovf")


def test_unknown_sections_are_kept_not_fatal() -> None:
    d = parse_descriptor(corpus_file("external/unsupported-ovfs/unsupportedSection.ovf")
                         .read_bytes(), name="u.ovf")
    assert {"UnsupportedSectionFoo", "UnknwonSection"} <= set(d.other_sections)


def test_ovf_0_9_gets_a_conversion_hint() -> None:
    path = corpus_file("external/smallxp-vapp/smallxp-vapp.ovf")
    with pytest.raises(PackageError, match="OVF 0.9 .* convert it to OVF 1.0 or later with "
                                           "ovftool"):
        parse_descriptor(path.read_bytes(), name="s.ovf")


@pytest.mark.parametrize(
    ("units", "factor"),
    [("byte * 2^20", 2**20), ("byte*2^30", 2**30), ("byte", 1), ("MegaBytes", 2**20),
     ("GB", 2**30), ("byte * 1024", 1024), (None, 1)],
)
def test_allocation_units(units: str | None, factor: int) -> None:
    assert allocation_unit_factor(units) == factor


def _mutated(old: str, new: str) -> bytes:
    text = ovf_descriptor("vm", [("vm-disk1.vmdk", 1000, 16)])
    assert old in text
    return text.replace(old, new, 1).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not well-formed XML"),
        (b"<html/>", "not an OVF descriptor: root element is <html>"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
         b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&e;</Envelope>',
         "DOCTYPE/DTD declarations are not allowed"),
        (_mutated('ovf:capacity="16"', 'ovf:capacity="-5"'), "capacity -5242880 bytes is not "
                                                             "plausible"),
        (_mutated('ovf:capacity="16"', 'ovf:capacity="999999999999999"'), "is not plausible"),
        (_mutated('ovf:size="1000"', 'ovf:size="-1"'), "is negative"),
        (_mutated('ovf:fileRef="file1"', 'ovf:fileRef="nope"'),
         "disk 'vmdisk1' references file 'nope', which References does not list"),
        (_mutated("ovf:/disk/vmdisk1", "ovf:/disk/ghost"),
         "uses disk 'ghost', which DiskSection does not define"),
        (_mutated('<File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="1000"/>',
                  '<File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="1000"/>'
                  '<File ovf:href="other.vmdk" ovf:id="file1"/>'), "duplicate file id 'file1'"),
        ("<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'><References/>"
         "<VirtualSystem ovf:id='\u00e9'/></Envelope>".encode("latin-1"), "not well-formed XML"),
    ],
    ids=["empty", "html", "xxe", "negative-capacity", "absurd-capacity", "negative-size",
         "missing-file-ref", "missing-disk", "duplicate-id", "latin1"],
)
def test_broken_and_hostile_descriptors_are_rejected_with_the_reason(
    data: bytes, message: str
) -> None:
    with pytest.raises(PackageError) as caught:
        parse_descriptor(data, name="bad.ovf")
    assert str(caught.value).startswith("bad.ovf: ")
    assert message in str(caught.value)


def test_billion_laughs_is_refused_without_expansion() -> None:
    lol = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1
                                                 else b"&lol;" * 10) for i in range(1, 10))
           + b']><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&lol9;</Envelope>')
    with pytest.raises(PackageError, match="DOCTYPE"):
        parse_descriptor(lol, name="lol.ovf")


def test_descriptor_size_cap() -> None:
    data = ovf_descriptor("vm", []).encode()
    with pytest.raises(PackageError, match="over the 100-byte limit"):
        parse_descriptor(data, name="big.ovf", max_bytes=100)
