"""Hostile tar headers in an OVA: each refused by name, in one line, before its data is read.

Python's :meth:`tarfile.TarInfo.frombuf` takes a GNU base-256 size of −1 (a
read of −1 bytes reads to the end of the file) and an octal ``-5`` (a read of
−5 bytes raises a bare ValueError); the walk over the headers checks every
numeric field itself. And whatever else goes wrong opening one source is that
source's refusal, never the batch's crash.
"""

from __future__ import annotations

import asyncio
import io
import struct
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from asyncovf.engine.plan import BatchPlan, JobSpec
from asyncovf.engine.run import open_sources
from asyncovf.errors import PackageError
from asyncovf.ovf import package as package_module
from asyncovf.ovf.blobs import BlobReader, LocalBlob
from asyncovf.ovf.source import open_package
from asyncovf.vsphere.inventory import PlacementRequest
from tests.factory import DiskSpec, build_package, ovf_descriptor

pytestmark = pytest.mark.anyio

DESCRIPTOR = ovf_descriptor("vm", [("vm-disk1.vmdk", 4, 16)]).encode()
#: After the archive: what a read "to the end of the file" would read.
TAIL = 4 * 1024 * 1024
#: Bytes the walk may read before it refuses: a few headers and the descriptor.
READ_LIMIT = 64 * 1024


def base256(value: int, length: int = 12) -> bytes:
    """A GNU base-256 number field (0x80 first, or 0xff for a negative number)."""
    if value < 0:
        return b"\xff" + ((1 << (8 * length - 8)) + value).to_bytes(length - 1, "big")
    return b"\x80" + value.to_bytes(length - 1, "big")


def octal(text: bytes, length: int = 12) -> bytes:
    return text.ljust(length, b"\0")


def with_checksum(header: bytearray) -> bytearray:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return header


def write_hostile_ova(path: Path, field: tuple[int, bytes] | None = None, *,
                      extended: bool = False) -> dict[str, int]:
    """``vm.ovf``, an empty ``vm.mf`` and ``vm-disk1.vmdk``, then :data:`TAIL` bytes.

    ``field`` (start, bytes) is written into ``vm.mf``'s header (its checksum
    made right again: the header is well-formed, its number is not); with
    ``extended``, into the GNU long-name header before it. Returns the offsets
    and the file's size, for the expected messages.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in (("vm.ovf", DESCRIPTOR), ("vm.mf" + "x" * 100 * extended, b""),
                              ("vm-disk1.vmdk", b"abcd")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data = bytearray(buffer.getvalue())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        offsets = [m.offset for m in tar.getmembers()]  # the first header of each
    header = offsets[1]  # vm.mf's first header: its long name's, with ``extended``
    if field is not None:
        start, value = field
        block = bytearray(data[header:header + 512])
        block[start:start + len(value)] = value
        data[header:header + 512] = with_checksum(block)
    data += bytes(TAIL)
    path.write_bytes(bytes(data))
    return {"header": header, "data": header + 512, "total": len(data)}


SIZE = 124
MODE = 100
CASES: dict[str, tuple[tuple[int, bytes], str]] = {
    # (field start, its bytes), the message after "<path>: "
    "size-minus-1": ((SIZE, base256(-1)),
                     "member 'vm.mf' (header at offset {header}): negative size -1"),
    "size-minus-5": ((SIZE, base256(-5)),
                     "member 'vm.mf' (header at offset {header}): negative size -5"),
    "octal-minus-5": ((SIZE, octal(b"-5")),
                      "member 'vm.mf' (header at offset {header}): size field b'-5' is not "
                      "a number"),
    "non-numeric-size": ((SIZE, octal(b"00000z00012")),
                         "member 'vm.mf' (header at offset {header}): size field "
                         "b'00000z00012' is not a number"),
    "non-numeric-mode": ((MODE, octal(b"0000+44", 8)),
                         "member 'vm.mf' (header at offset {header}): mode field b'0000+44' "
                         "is not a number"),
    "overflowing-size": ((SIZE, base256(2**80)),
                         f"member 'vm.mf' (header at offset {{header}}): size {2**80} is "
                         "larger than any file"),
    "size-past-eof": ((SIZE, octal(b"77777777777")),
                      "truncated: member 'vm.mf' needs 8589934591 bytes at offset {data}, "
                      "file has {total}"),
}


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every read of a local file from now on, in bytes (skips are seeks, not reads)."""
    sizes: list[int] = []
    opener: Callable[..., AbstractAsyncContextManager[BlobReader]] = LocalBlob.open

    class Counting:
        def __init__(self, inner: BlobReader) -> None:
            self.inner = inner

        @property
        def position(self) -> int:
            return self.inner.position

        async def read(self, size: int, digest: Any = None) -> bytes:
            data = await self.inner.read(size, digest)
            sizes.append(len(data))
            return data

        async def skip(self, size: int) -> int:
            return await self.inner.skip(size)

    @asynccontextmanager
    async def counting_open(blob: LocalBlob, offset: int = 0) -> AsyncIterator[Any]:
        async with opener(blob, offset) as reader:
            yield Counting(reader)

    monkeypatch.setattr(LocalBlob, "open", counting_open)
    return sizes


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_a_hostile_size_field_is_refused_by_name_before_its_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    field, message = CASES[case]
    path = tmp_path / "evil.ova"
    where = write_hostile_ova(path, field)
    reads = count_reads(monkeypatch)
    with pytest.raises(PackageError) as caught:
        await open_package(path)
    assert str(caught.value) == f"{path}: {message.format(**where)}"
    assert sum(reads) <= READ_LIMIT < TAIL  # never "to the end of the file"


async def test_an_extended_header_with_a_negative_size_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A GNU long name whose header says −1: read(−1) would take the whole file.
    path = tmp_path / "evil.ova"
    where = write_hostile_ova(path, (SIZE, base256(-1)), extended=True)
    reads = count_reads(monkeypatch)
    with pytest.raises(PackageError) as caught:
        await open_package(path)
    assert str(caught.value) == (f"{path}: member '././@LongLink' (header at offset "
                                 f"{where['header']}): negative size -1")
    assert sum(reads) <= READ_LIMIT


def write_pax_ova(path: Path, size: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("vm.ovf")
        info.size = len(DESCRIPTOR)
        info.pax_headers = {"size": size}
        tar.addfile(info, io.BytesIO(DESCRIPTOR))
    path.write_bytes(buffer.getvalue() + bytes(TAIL))


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("²", "pax header at offset 0 has size '²'"),  # str.isdigit() says yes; int() no
        ("-1", "pax header at offset 0 has size '-1'"),
        (str(2**70), f"member 'vm.ovf': size {2**70} at offset 1536 is larger than any file"),
        (str(2**30), "truncated: member 'vm.ovf' needs 1073741824 bytes at offset 1536, "
                     "file has {total}"),
    ],
    ids=["superscript", "negative", "overflowing", "past-eof"],
)
async def test_a_hostile_pax_size_is_refused(tmp_path: Path, size: str, message: str) -> None:
    path = tmp_path / "evil.ova"
    write_pax_ova(path, size)
    with pytest.raises(PackageError) as caught:
        await open_package(path)
    total = path.stat().st_size
    assert str(caught.value) == f"{path}: {message.format(total=total)}"


async def test_honest_number_fields_still_read(tmp_path: Path) -> None:
    # Space-padded octal (old tar writers) and base-256 sizes are numbers.
    path = tmp_path / "ok.ova"
    write_hostile_ova(path, (SIZE, octal(b"          0 ")))
    assert (await open_package(path)).member("vm.mf").size == 0
    write_hostile_ova(path, (SIZE, base256(0)))
    assert (await open_package(path)).member("vm.mf").size == 0


# -- whatever else breaks opening one source -------------------------------------------

def plan_of(*sources: str) -> BatchPlan:
    jobs = tuple(JobSpec(index=i, name=f"vm-{i}", source=source, placement=PlacementRequest(),
                         origin="test") for i, source in enumerate(sources))
    return BatchPlan("test", {}, jobs)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ValueError("read length must be non-negative or -1"),
         "cannot be read: ValueError: read length must be non-negative or -1"),
        (struct.error("unpack requires a buffer of 4 bytes"),
         "cannot be read: error: unpack requires a buffer of 4 bytes"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
         "cannot be read: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in "
         "position 0: invalid start byte"),
        (OSError(5, "Input/output error"), "cannot be read: OSError: [Errno 5] Input/output "
                                           "error"),
        (RuntimeError("two\nlines"), "cannot be read: RuntimeError: two lines"),
    ],
    ids=["ValueError", "struct.error", "UnicodeDecodeError", "OSError", "multi-line"],
)
async def test_an_unforeseen_error_opening_one_source_is_that_sources_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, message: str
) -> None:
    bad = tmp_path / "bad.ova"
    good = build_package(tmp_path, "good", disks=(DiskSpec(16, 1024),)).path
    real = package_module.open_unmeasured

    async def open_unmeasured(location: Any, *args: Any) -> Any:
        if Path(location) == bad:
            raise error
        return await real(location, *args)

    monkeypatch.setattr("asyncovf.ovf.source.open_unmeasured", open_unmeasured)
    packages, errors = await open_sources(plan_of(str(bad), str(good), str(bad)))
    assert errors == {str(bad): f"{bad}: {message}"}
    assert list(packages) == [str(good)]
    with pytest.raises(PackageError) as caught:  # `asyncovf import` and `spec` alike
        await open_package(bad)
    assert str(caught.value) == f"{bad}: {message}"
    assert caught.value.__cause__ is error


async def test_a_cancellation_while_opening_a_source_is_not_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def open_unmeasured(location: Any, *args: Any) -> Any:
        raise asyncio.CancelledError

    monkeypatch.setattr("asyncovf.ovf.source.open_unmeasured", open_unmeasured)
    with pytest.raises(asyncio.CancelledError):
        await open_sources(plan_of(str(tmp_path / "any.ova")))


async def test_an_error_checking_an_opened_source_is_that_sources_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = build_package(tmp_path, "good", disks=(DiskSpec(16, 1024),)).path

    def check_files(package: Any, **kwargs: Any) -> None:
        raise KeyError("vmdisk1")

    monkeypatch.setattr("asyncovf.engine.run.check_files", check_files)
    packages, errors = await open_sources(plan_of(str(good)))
    assert (packages, errors) == ({}, {str(good): f"{good}: cannot be read: KeyError: "
                                                   "'vmdisk1'"})
