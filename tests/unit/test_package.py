"""Packages as streaming sources: OVA in place, OVF directories, hostile members."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from asyncovf.errors import ManifestError, PackageError
from asyncovf.ovf.content import open_content
from asyncovf.ovf.manifest import parse_manifest
from asyncovf.ovf.package import check_files
from asyncovf.ovf.source import open_package
from tests.factory import DiskSpec, build_package, ovf_descriptor

pytestmark = pytest.mark.anyio


def write_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


DESCRIPTOR = ovf_descriptor("vm", [("vm-disk1.vmdk", 4, 16)]).encode()


@pytest.mark.parametrize("ova", [True, False], ids=["ova", "ovf-directory"])
async def test_streams_every_disk_and_feeds_the_digest(tmp_path: Path, ova: bool) -> None:
    built = build_package(tmp_path, "app", disks=(DiskSpec(16, 300_000), DiskSpec(8, 10)),
                          ova=ova)
    package = await open_package(built.path)
    check_files(package)
    assert package.kind == ("ova" if ova else "ovf")
    assert package.manifest is not None and package.warnings == ()
    for name in built.disk_names:
        async with open_content(package, name, chunk_size=65536) as content:
            chunks = [c async for c in content.chunks()]
        assert max(len(c) for c in chunks) <= 65536
        assert sum(len(c) for c in chunks) == package.member(name).size == content.size
        assert hashlib.sha256(b"".join(chunks)).hexdigest() == \
            package.manifest.entries[name].hexdigest


async def test_descriptor_not_first_is_accepted_with_a_warning(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "x.ova", [("vm-disk1.vmdk", b"abcd"), ("vm.ovf", DESCRIPTOR)])
    package = await open_package(path)
    assert package.warnings == ("descriptor vm.ovf is not the first member of the OVA",)


def _link(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd"
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (("/etc/evil.vmdk", b"x"), "member '/etc/evil.vmdk' has an absolute path"),
        (("../evil.vmdk", b"x"), "member '../evil.vmdk' escapes the package with '..'"),
        (_link("vm-disk1.vmdk", tarfile.SYMTYPE), "member 'vm-disk1.vmdk' is a link"),
        (_link("vm-disk1.vmdk", tarfile.LNKTYPE), "member 'vm-disk1.vmdk' is a link"),
        (_link("dev.vmdk", tarfile.CHRTYPE), "is a device or special file"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "device"],
)
async def test_hostile_ova_members_are_refused(
    tmp_path: Path, member: tarfile.TarInfo | tuple[str, bytes], message: str
) -> None:
    path = write_tar(tmp_path / "evil.ova", [("vm.ovf", DESCRIPTOR), member])
    with pytest.raises(PackageError) as caught:
        await open_package(path)
    assert str(caught.value) == f"{path}: {message}" or message in str(caught.value)
    assert str(path) in str(caught.value)


async def test_truncated_ova_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "t", disks=(DiskSpec(16, 200_000),))
    data = built.path.read_bytes()
    built.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match="truncated"):
        await open_package(built.path)


async def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.ova"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(PackageError, match="junk.ova: .*(tar|no tar members)"):
        await open_package(path)


@pytest.mark.parametrize(("delta", "word"), [(100, "shorter"), (-100, "longer")])
async def test_file_size_differing_from_ovf_size_is_refused(
    tmp_path: Path, delta: int, word: str
) -> None:
    built = build_package(tmp_path, "s", declared_size_delta=delta)
    package = await open_package(built.path)
    with pytest.raises(PackageError, match=f"s-disk1.vmdk is \\d+ bytes, {word} than its "
                                           "ovf:size="):
        check_files(package)


async def test_missing_disk_file_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "m", ova=False)
    (built.path / built.disk_names[0]).unlink()
    package = await open_package(built.path)
    with pytest.raises(PackageError, match="references m-disk1.vmdk, which the package does "
                                           "not contain"):
        check_files(package)


async def test_file_missing_from_manifest_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "mf", ova=False)
    manifest = built.path / "mf.mf"
    manifest.write_text("".join(line for line in manifest.read_text().splitlines(True)
                                if "disk1" not in line))
    package = await open_package(built.path)
    with pytest.raises(PackageError, match="mf-disk1.vmdk is not listed in manifest mf.mf"):
        check_files(package)
    check_files(package, verify_manifest=False)


async def test_descriptor_digest_is_checked(tmp_path: Path) -> None:
    built = build_package(tmp_path, "d", ova=False)
    descriptor = built.path / "d.ovf"
    descriptor.write_text(descriptor.read_text().replace("virtual CPU", "virtual  CPU"))
    package = await open_package(built.path)
    with pytest.raises(ManifestError, match="sha256 digest mismatch for d.ovf"):
        check_files(package)


async def test_symlinked_disk_in_ovf_directory_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "l", ova=False)
    disk = built.path / built.disk_names[0]
    disk.unlink()
    disk.symlink_to("/etc/passwd")
    with pytest.raises(PackageError, match="l-disk1.vmdk is a symbolic link"):
        await open_package(built.path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SHA256(a.vmdk)= abc\n", "sha256 digest has 3 hex digits, expected 64"),
        ("MD5(a.vmdk)= " + "0" * 32 + "\n", "unsupported digest 'MD5'"),
        ("garbage\n", "line 1: not 'ALGO(file)= digest'"),
    ],
)
def test_malformed_manifest_lines_are_named(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(message)):
        parse_manifest(text.encode(), name="x.mf")


def test_manifest_accepts_the_spellings_vcenter_rejects() -> None:
    digest = "a" * 64
    manifest = parse_manifest(f"SHA2-256(a.vmdk)= {digest}\nSHA256 (b.vmdk)= {digest}\n"
                              f"sha256(c.vmdk)= {digest}\nSHA1(d.vmdk)= {'b' * 40}\n"
                              f"SHA512(e.vmdk)= {'C' * 128}\nsha2-512(f.vmdk)= {'d' * 128}\n"
                              .encode())
    assert {name: (e.algorithm, e.hexdigest) for name, e in manifest.entries.items()} == {
        "a.vmdk": ("sha256", digest), "b.vmdk": ("sha256", digest),
        "c.vmdk": ("sha256", digest), "d.vmdk": ("sha1", "b" * 40),
        "e.vmdk": ("sha512", "c" * 128), "f.vmdk": ("sha512", "d" * 128),
    }
