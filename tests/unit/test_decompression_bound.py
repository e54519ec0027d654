"""A gzip-compressed file stops at its bound: a disk's capacity and a small margin,
a file that backs no disk at :data:`MAX_EXPANDED_OTHER` — while measuring and
while streaming, with the same one-line refusal, after about the bound's bytes
rather than the whole expansion."""

from __future__ import annotations

import gzip
import re
from dataclasses import replace
from pathlib import Path

import pytest

import asyncovf.ovf.package as package_module
from asyncovf.errors import PackageError, retry_scopes
from asyncovf.ovf.content import open_content
from asyncovf.ovf.descriptor import MAX_DISK_CAPACITY
from asyncovf.ovf.package import Package
from asyncovf.ovf.source import open_package
from tests.factory import BuiltPackage, DiskSpec, build_package

pytestmark = pytest.mark.anyio

CAPACITY = 2 * 2**20  # the disk's ovf:capacity: 2 MiB
LIMIT = CAPACITY + 2**20 + CAPACITY // 64  # 3,178,496 bytes
CHUNK = 65536


def bomb(expanded: int, stored_size: int) -> bytes:
    """gzip data expanding to ``expanded`` zero bytes, zero-padded to ``stored_size``
    (padding after the last member is allowed), so ``ovf:size`` still matches."""
    data = gzip.compress(bytes(expanded), compresslevel=9, mtime=0)
    assert len(data) <= stored_size
    return data + bytes(stored_size - len(data))


def disk_bomb(tmp_path: Path, expanded: int) -> tuple[BuiltPackage, str]:
    """A 2 MiB disk whose gzip-compressed file expands to ``expanded`` bytes."""
    built = build_package(tmp_path, "bomb", disks=(DiskSpec(2, 256 * 1024),), ova=False,
                          manifest=False, compression="gzip")
    href = built.disk_names[0]
    stored = built.path / href
    stored.write_bytes(bomb(expanded, stored.stat().st_size))
    return built, href


def refusal(location: str, href: str) -> str:
    return (f"{location}: {href} decompresses to more than {LIMIT} bytes, the bound for its "
            f"disk of {CAPACITY} bytes (capacity + 1/64 + 1 MiB)")


async def produced_until_refused(package: Package, href: str, *, measuring: bool
                                 ) -> tuple[int, PackageError]:
    """The bytes the content pipeline handed on before it refused ``href``."""
    total = 0
    with pytest.raises(PackageError) as refused:
        async with open_content(package, href, verify=False, chunk_size=CHUNK,
                                measuring=measuring) as content:
            async for chunk in content.chunks():
                total += len(chunk)
    return total, refused.value


async def test_a_disk_file_is_bounded_by_its_capacity_and_a_margin_for_stream_optimized_metadata(
    tmp_path: Path
) -> None:
    built, href = disk_bomb(tmp_path, LIMIT)
    package = await open_package(built.path, measure_compressed=False)
    assert package.file(href).expanded_limit == LIMIT
    assert package_module.MAX_EXPANDED_OTHER == 2**30


async def test_a_disk_that_expands_past_its_bound_is_refused_while_measuring(
    tmp_path: Path
) -> None:
    built, href = disk_bomb(tmp_path, 8 * 2**20)
    location = (await open_package(built.path, measure_compressed=False)).location
    with pytest.raises(PackageError) as refused:
        await open_package(built.path)
    assert str(refused.value) == refusal(location, href)
    assert "\n" not in str(refused.value)
    assert retry_scopes(refused.value) == frozenset()  # an input error: never retried


@pytest.mark.parametrize("measuring", [True, False], ids=["measuring", "streaming"])
async def test_decompression_stops_at_the_bound_not_at_the_whole_expansion(
    tmp_path: Path, measuring: bool
) -> None:
    expanded = 12 * 2**20
    built, href = disk_bomb(tmp_path, expanded)
    package = await open_package(built.path, measure_compressed=False)
    if not measuring:
        # An upload given the whole expansion as its size (a package measured
        # without the bound) still stops at the bound.
        files = dict(package.files)
        files[href] = replace(files[href], content_size=expanded)
        package = replace(package, files=files)
    total, error = await produced_until_refused(package, href, measuring=measuring)
    assert str(error) == refusal(package.location, href)
    assert LIMIT - CHUNK <= total <= LIMIT


async def test_a_disk_that_expands_to_exactly_its_bound_is_measured(tmp_path: Path) -> None:
    built, href = disk_bomb(tmp_path, LIMIT)
    package = await open_package(built.path)
    assert package.content_size(href) == LIMIT


async def test_a_compressed_file_that_backs_no_disk_is_bounded_by_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(package_module, "MAX_EXPANDED_OTHER", 2**20)
    built = build_package(tmp_path, "nvram", disks=(DiskSpec(2, 4096),), ova=False,
                          manifest=False)
    data = gzip.compress(bytes(3 * 2**20), mtime=0)
    (built.path / "nvram.bin").write_bytes(data)
    descriptor = built.path / built.descriptor_name
    text = descriptor.read_text()
    text, count = re.subn(r"<References>", '<References>\n    <File ovf:href="nvram.bin" '
                          f'ovf:id="nvram" ovf:size="{len(data)}" ovf:compression="gzip"/>',
                          text)
    assert count == 1
    descriptor.write_text(text)
    location = (await open_package(built.path, measure_compressed=False)).location
    with pytest.raises(PackageError) as refused:
        await open_package(built.path)
    assert str(refused.value) == (f"{location}: nvram.bin decompresses to more than {2**20} "
                                  "bytes, the bound for a compressed file that backs no disk")


async def test_a_disk_whose_capacity_a_property_sets_is_bounded_by_the_largest_capacity(
    tmp_path: Path
) -> None:
    built, href = disk_bomb(tmp_path, LIMIT)
    descriptor = built.path / built.descriptor_name
    text = descriptor.read_text()
    assert 'ovf:capacity="2"' in text
    descriptor.write_text(text.replace('ovf:capacity="2"', 'ovf:capacity="${disk.size}"'))
    found = (await open_package(built.path, measure_compressed=False)).file(href)
    assert (found.backs_disk, found.disk_capacity) == (True, None)
    assert found.expanded_limit == MAX_DISK_CAPACITY + 2**20 + MAX_DISK_CAPACITY // 64
    assert str(found.expanded_past_limit("x.ova")).endswith(
        "the bound for a disk whose capacity a property sets")
