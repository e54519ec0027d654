"""An OVF directory is read only from inside itself.

Every file a directory package opens — descriptor, manifest, certificate,
disks and their chunks — is reached from the package directory without
following a symbolic link in any component. A refusal is one line naming the
href, and holds nothing read from the refused file: the file is never opened.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncovf.errors import PackageError
from asyncovf.ovf.content import open_content
from asyncovf.ovf.package import check_files
from asyncovf.ovf.source import open_package
from tests.factory import build_package, ovf_descriptor

pytestmark = pytest.mark.anyio

SECRET = b"TOPSECRET-first-line-of-an-outside-file\nsecond line\n"
DISK = b"disk bytes of a nested file\n" * 64


def write_ovf_directory(directory: Path, href: str, *, manifest: bool = True) -> Path:
    """A one-disk OVF directory ``vm/`` whose disk is ``href``; the disk itself is
    written only when ``href``'s directory is a real one inside the package."""
    package = directory / "vm"
    package.mkdir()
    descriptor = ovf_descriptor("vm", [(href, len(DISK), 16)]).encode()
    (package / "vm.ovf").write_bytes(descriptor)
    if manifest:
        lines = [f"SHA256(vm.ovf)= {hashlib.sha256(descriptor).hexdigest()}\n",
                 f"SHA256({href})= {hashlib.sha256(DISK).hexdigest()}\n"]
        (package / "vm.mf").write_text("".join(lines))
    return package


def outside(tmp_path: Path) -> Path:
    """A directory outside the package, holding a secret."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_bytes(SECRET)
    return elsewhere


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path handed to ``open`` or ``os.open`` (relative ones as given)."""
    seen: list[str] = []

    def spy(real: Callable[..., Any]) -> Callable[..., Any]:
        def recording(path: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike))
                        else str(path))
            return real(path, *args, **kwargs)
        return recording

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    monkeypatch.setattr(os, "open", spy(os.open))
    return seen


def assert_refused_without_secret(caught: pytest.ExceptionInfo[PackageError], *,
                                  names: str, says: str) -> None:
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert names in message and says in message, message
    assert "TOPSECRET" not in message and "second line" not in message


@pytest.mark.parametrize("given", ["directory", "descriptor"])
async def test_an_href_through_a_symlinked_directory_is_refused_and_never_opened(
    tmp_path: Path, opened: list[str], given: str
) -> None:
    package = write_ovf_directory(tmp_path, "sub/secret.txt", manifest=False)
    (package / "sub").symlink_to(outside(tmp_path), target_is_directory=True)
    location = package if given == "directory" else package / "vm.ovf"
    with pytest.raises(PackageError) as caught:
        await open_package(location)
    assert_refused_without_secret(caught, names="sub/secret.txt",
                                  says="sub is a symbolic link")
    assert not [path for path in opened if path.endswith("secret.txt")]


async def test_a_symlinked_directory_pointing_inside_the_package_is_refused_too(
    tmp_path: Path,
) -> None:
    # The package's own tools never write links: any link in a package is refused.
    package = write_ovf_directory(tmp_path, "sub/vm-disk1.vmdk")
    (package / "real").mkdir()
    (package / "real" / "vm-disk1.vmdk").write_bytes(DISK)
    (package / "sub").symlink_to("real", target_is_directory=True)
    with pytest.raises(PackageError, match="sub/vm-disk1.vmdk: sub is a symbolic link"):
        await open_package(package)


async def test_a_fifo_behind_a_symlinked_directory_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "pipe")
    package = write_ovf_directory(tmp_path, "sub/pipe", manifest=False)
    (package / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(PackageError, match="sub/pipe: sub is a symbolic link"):
        await open_package(package)


@pytest.mark.parametrize("sidecar", ["mf", "cert"])
async def test_a_symlinked_manifest_or_certificate_is_refused_before_it_is_read(
    tmp_path: Path, opened: list[str], sidecar: str
) -> None:
    built = build_package(tmp_path, "s", ova=False, manifest=sidecar == "mf")
    link = built.path / f"s.{sidecar}"
    link.unlink(missing_ok=True)
    link.symlink_to(outside(tmp_path) / "secret.txt")
    with pytest.raises(PackageError) as caught:
        await open_package(built.path)
    assert_refused_without_secret(caught, names=f"s.{sidecar}", says="is a symbolic link")
    assert not [path for path in opened if path.endswith("secret.txt")]


async def test_a_symlinked_disk_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "l", ova=False)
    disk = built.path / built.disk_names[0]
    disk.unlink()
    disk.symlink_to(outside(tmp_path) / "secret.txt")
    with pytest.raises(PackageError) as caught:
        await open_package(built.path)
    assert_refused_without_secret(caught, names="l-disk1.vmdk", says="is a symbolic link")


async def test_a_symlinked_chunk_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "c", ova=False, chunk_size=64 * 1024)
    chunk = built.path / f"{built.disk_names[0]}.000000001"
    chunk.unlink()
    chunk.symlink_to(outside(tmp_path) / "secret.txt")
    with pytest.raises(PackageError, match=r"c-disk1\.vmdk\.000000001 is a symbolic link"):
        await open_package(built.path)


async def test_a_symlinked_descriptor_in_a_package_directory_is_refused(tmp_path: Path) -> None:
    built = build_package(tmp_path, "d", ova=False)
    descriptor = built.path / built.descriptor_name
    real = tmp_path / "real.ovf"
    descriptor.rename(real)
    descriptor.symlink_to(real)
    with pytest.raises(PackageError, match=r"d\.ovf is a symbolic link"):
        await open_package(built.path)


async def test_a_disk_that_is_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    built = build_package(tmp_path, "f", ova=False)
    disk = built.path / built.disk_names[0]
    disk.unlink()
    os.mkfifo(disk)
    with pytest.raises(PackageError, match=r"f-disk1\.vmdk is not a regular file"):
        await open_package(built.path)


async def test_a_file_in_a_nested_directory_is_read(tmp_path: Path) -> None:
    package = write_ovf_directory(tmp_path, "disks/a/vm-disk1.vmdk")
    (package / "disks" / "a").mkdir(parents=True)
    (package / "disks" / "a" / "vm-disk1.vmdk").write_bytes(DISK)
    opened = await open_package(package)
    check_files(opened)
    assert opened.member("disks/a/vm-disk1.vmdk").size == len(DISK)
    received = b""
    async with open_content(opened, "disks/a/vm-disk1.vmdk") as content:
        async for chunk in content.chunks():
            received += chunk
    assert received == DISK


async def test_a_package_directory_reached_through_a_symlink_is_read(tmp_path: Path) -> None:
    # The path the user gives is theirs to choose; links *inside* the package are refused.
    package = write_ovf_directory(tmp_path, "vm-disk1.vmdk")
    (package / "vm-disk1.vmdk").write_bytes(DISK)
    alias = tmp_path / "alias"
    alias.symlink_to(package, target_is_directory=True)
    opened = await open_package(alias)
    check_files(opened)
    assert opened.member("vm-disk1.vmdk").size == len(DISK)


async def test_a_missing_file_below_a_real_directory_is_missing_not_refused(
    tmp_path: Path,
) -> None:
    package = write_ovf_directory(tmp_path, "disks/vm-disk1.vmdk", manifest=False)
    (package / "disks").write_bytes(b"a file where a directory is expected")
    opened = await open_package(package)
    with pytest.raises(PackageError, match="references disks/vm-disk1.vmdk, which the package "
                                           "does not contain"):
        check_files(opened)


async def test_a_directory_swapped_for_a_link_after_the_checks_is_refused_at_upload(
    tmp_path: Path,
) -> None:
    """Checked at open_package, used at upload: the upload opens the disk the same
    confined way, so a component turned into a link in between is not followed."""
    package = write_ovf_directory(tmp_path, "disks/vm-disk1.vmdk", manifest=False)
    (package / "disks").mkdir()
    (package / "disks" / "vm-disk1.vmdk").write_bytes(DISK)
    opened = await open_package(package)
    check_files(opened)
    elsewhere = outside(tmp_path)
    (elsewhere / "vm-disk1.vmdk").write_bytes(SECRET)
    (package / "disks" / "vm-disk1.vmdk").unlink()
    (package / "disks").rmdir()
    (package / "disks").symlink_to(elsewhere)
    with pytest.raises(PackageError) as caught:
        async with open_content(opened, "disks/vm-disk1.vmdk") as content:
            async for _ in content.chunks():
                pass
    assert "disks is a symbolic link" in str(caught.value)
    assert "TOPSECRET" not in str(caught.value)
