"""Find the members of an OVA (a tar) by walking its headers, without extracting.

One sequential pass over the headers: each 512-byte header is read, its data
skipped (a seek locally, a new Range request remotely), and the member's
offset recorded, so every member can later be read in place. The walk works on
any :class:`~asyncovf.ovf.blobs.BlobReader`, so a local OVA and one on a web
server go through the same code — and the same hostile-input checks.

Headers are decoded by :meth:`tarfile.TarInfo.frombuf` (checksums, base-256
sizes); the extended headers OVA writers use — pax ``x`` records and GNU long
names — are applied here. Anything but regular files and directories is
reported with its kind, so the caller can refuse links and devices by name.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import Final

from asyncovf.errors import PackageError
from asyncovf.ovf.blobs import BlobReader

BLOCK: Final = 512
#: Extended headers (long names, pax records) are metadata: a few KiB at most.
MAX_EXTENDED_HEADER: Final = 1024 * 1024

_ZERO_BLOCK: Final = bytes(BLOCK)
_LINKS = {tarfile.SYMTYPE: "link", tarfile.LNKTYPE: "link"}
_REGULAR = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}


@dataclass(frozen=True)
class TarEntry:
    """One member: its name as written, what it is, and where its data is."""

    name: str
    kind: str  # "file", "directory", "link" or "special"
    offset: int
    size: int


async def walk_tar(reader: BlobReader, *, location: str,
                   total_size: int | None = None) -> list[TarEntry]:
    """Every member of the tar ``reader`` is positioned at the start of."""
    entries: list[TarEntry] = []
    pending_name: str | None = None
    pending_size: int | None = None
    while True:
        header_offset = reader.position
        block = await reader.read(BLOCK)
        if not block:
            if not entries:
                raise PackageError("empty or truncated OVA: no tar members", file=location)
            break  # end without the zero blocks: tolerated, as tar(1) does
        if len(block) < BLOCK:
            raise PackageError(f"truncated tar: header at offset {header_offset} is "
                               f"{len(block)} bytes", file=location)
        if block == _ZERO_BLOCK:
            break  # end-of-archive marker
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            what = "not a readable OVA (tar)" if not entries else "corrupt tar"
            raise PackageError(f"{what}: bad header at offset {header_offset}: {exc}",
                               file=location) from exc

        data_offset = header_offset + BLOCK
        size = info.size
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK, tarfile.SOLARIS_XHDTYPE):
            if size > MAX_EXTENDED_HEADER:
                raise PackageError(f"extended tar header at offset {header_offset} is {size} "
                                   "bytes; refusing", file=location)
            data = await reader.read(size)
            if len(data) < size:
                raise PackageError(f"truncated tar: extended header at offset {header_offset}",
                                   file=location)
            await _skip_exactly(reader, _padding(size), location)
            if info.type == tarfile.GNUTYPE_LONGNAME:
                pending_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                records = _pax_records(data, header_offset, location)
                pending_name = records.get("path", pending_name)
                if "size" in records:
                    if not records["size"].isdigit():
                        raise PackageError(f"pax header at offset {header_offset} has size "
                                           f"{records['size']!r}", file=location)
                    pending_size = int(records["size"])
            continue  # global headers and long link names change nothing we use

        name = pending_name if pending_name is not None else info.name
        if pending_size is not None:
            size = pending_size
        pending_name = pending_size = None
        if info.type in _REGULAR:
            kind = "file"
        elif info.type == tarfile.DIRTYPE:
            kind = "directory"
        else:
            kind = _LINKS.get(info.type, "special")
        has_data = kind == "file"
        entries.append(TarEntry(name, kind, data_offset, size if has_data else 0))
        if has_data:
            needed = data_offset + size
            if total_size is not None and needed > total_size:
                raise PackageError(
                    f"truncated: member {name!r} needs {size} bytes at offset {data_offset}, "
                    f"file has {total_size}", file=location)
            await _skip_exactly(reader, size + _padding(size), location, member=name,
                                required=size)
    return entries


def _padding(size: int) -> int:
    return -size % BLOCK


async def _skip_exactly(reader: BlobReader, size: int, location: str, *,
                        member: str | None = None, required: int | None = None) -> None:
    if size <= 0:
        return
    start = reader.position
    skipped = await reader.skip(size)
    if skipped >= (size if required is None else required):
        return  # (a member's data complete with only its padding missing is tolerated)
    what = f"member {member!r}" if member else "extended header"
    raise PackageError(f"truncated: {what} at offset {start} ends after {skipped} of "
                       f"{size} bytes", file=location)


def _pax_records(data: bytes, offset: int, location: str) -> dict[str, str]:
    """``"<len> key=value\\n"`` records (POSIX.1-2001)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] not in (b"", b"\0"):
        space = data.find(b" ", pos)
        length_text = data[pos:space]
        if space < 0 or not length_text.isdigit() or int(length_text) <= 0:
            raise PackageError(f"malformed pax header at offset {offset}", file=location)
        end = pos + int(length_text)
        record = data[space + 1:end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise PackageError(f"malformed pax header at offset {offset}", file=location)
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


__all__ = ["TarEntry", "walk_tar"]
