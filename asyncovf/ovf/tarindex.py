"""Find the members of an OVA (a tar) by walking its headers, without extracting.

One sequential pass over the headers: each 512-byte header is read, its data
skipped (a seek locally, a new Range request remotely), and the member's
offset recorded, so every member can later be read in place. The walk works on
any :class:`~asyncovf.ovf.blobs.BlobReader`, so a local OVA and one on a web
server go through the same code — and the same hostile-input checks.

Headers are decoded by :meth:`tarfile.TarInfo.frombuf` (checksums, names);
the extended headers OVA writers use — pax ``x`` records and GNU long names —
are applied here. Anything but regular files and directories is reported with
its kind, so the caller can refuse links and devices by name.

Every numeric field is checked here too, because ``frombuf`` is lenient where
a hostile OVA would like it to be: an octal field goes through ``int(text, 8)``,
which takes a sign, underscores and whitespace (``-5`` is a size of −5), and a
GNU base-256 field (first byte ``0x80``, or ``0xff`` for a negative number) is
taken whatever its value. A member whose size is negative (whose data would
then be read "to the end"), not a number, larger than a file offset can be, or
past the end of the file is refused by name before any of its data is read.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from typing import Final

from asyncovf.errors import PackageError
from asyncovf.ovf.blobs import BlobReader

BLOCK: Final = 512
#: Extended headers (long names, pax records) are metadata: a few KiB at most.
MAX_EXTENDED_HEADER: Final = 1024 * 1024

#: The largest offset a file (or an HTTP range) can address: a member must end before it.
MAX_OFFSET: Final = 2**63 - 1

_ZERO_BLOCK: Final = bytes(BLOCK)
#: The numeric fields ``frombuf`` decodes: (name, start, length, is a size or offset).
_NUMERIC_FIELDS: Final[tuple[tuple[str, int, int, bool], ...]] = (
    ("mode", 100, 8, False), ("uid", 108, 8, False), ("gid", 116, 8, False),
    ("size", 124, 12, True), ("mtime", 136, 12, False), ("checksum", 148, 8, False),
    ("devmajor", 329, 8, False), ("devminor", 337, 8, False),
)
#: GNU's old sparse header ('S') adds four (offset, size) pairs and the real size.
_SPARSE_FIELDS: Final = tuple(
    (f"sparse {what} {i}", 386 + 24 * i + skip, 12, True)
    for i in range(4) for what, skip in (("offset", 0), ("size", 12))
) + (("real size", 483, 12, True),)
#: An octal field as tar writers write it: digits, padded with spaces (then a NUL
#: ends it, as :func:`tarfile.nts` reads it).
_OCTAL: Final = re.compile(rb" *[0-7]* *")
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
            if _checksum_matches(block):
                # A header, but a field frombuf cannot read: say which, of which member.
                _check_numbers(block, header_offset, _raw_name(block, pending_name), location)
            what = "not a readable OVA (tar)" if not entries else "corrupt tar"
            raise PackageError(f"{what}: bad header at offset {header_offset}: {exc}",
                               file=location) from exc

        data_offset = header_offset + BLOCK
        size = _check_numbers(block, header_offset, pending_name or info.name, location)
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK, tarfile.SOLARIS_XHDTYPE):
            if size > MAX_EXTENDED_HEADER:
                raise PackageError(f"extended tar header at offset {header_offset} is {size} "
                                   "bytes; refusing", file=location)
            _check_within(info.name, size, data_offset, total_size, location)
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
                    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
                    if re.fullmatch(r"[0-9]+", records["size"], re.ASCII) is None:
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
        if has_data:
            _check_within(name, size, data_offset, total_size, location)
        entries.append(TarEntry(name, kind, data_offset, size if has_data else 0))
        if has_data:
            await _skip_exactly(reader, size + _padding(size), location, member=name,
                                required=size)
    return entries


def _number(field: bytes) -> int | None:
    """A numeric header field's value, as tar writers write it; ``None`` when malformed."""
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256, big-endian; 0xff: negative
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0]
    if _OCTAL.fullmatch(text) is None:
        return None
    digits = text.strip(b" ")
    return int(digits, 8) if digits else 0


def _check_numbers(block: bytes, header_offset: int, name: str, location: str) -> int:
    """The header's size, once every numeric field of ``block`` reads as a number.

    A size or offset must also be one a file can have: not negative (a read of
    −1 bytes reads to the end), and below :data:`MAX_OFFSET`.
    """
    fields = _NUMERIC_FIELDS
    if block[156:157] == tarfile.GNUTYPE_SPARSE:
        fields += _SPARSE_FIELDS
    for field, start, length, is_offset in fields:
        raw = block[start:start + length]
        value = _number(raw)
        if value is None:
            raise PackageError(f"member {name!r} (header at offset {header_offset}): {field} "
                               f"field {raw.rstrip(bytes(1))!r} is not a number", file=location)
        if is_offset and value < 0:
            raise PackageError(f"member {name!r} (header at offset {header_offset}): "
                               f"negative {field} {value}", file=location)
        if is_offset and value > MAX_OFFSET:
            raise PackageError(f"member {name!r} (header at offset {header_offset}): "
                               f"{field} {value} is larger than any file", file=location)
    size = _number(block[124:136])
    assert size is not None
    return size


def _check_within(name: str, size: int, data_offset: int, total_size: int | None,
                  location: str) -> None:
    """Refuse data that would run past the end of the file (or of any file)."""
    if size > MAX_OFFSET - data_offset:
        raise PackageError(f"member {name!r}: size {size} at offset {data_offset} is larger "
                           "than any file", file=location)
    if total_size is not None and data_offset + size > total_size:
        raise PackageError(f"truncated: member {name!r} needs {size} bytes at offset "
                           f"{data_offset}, file has {total_size}", file=location)


def _checksum_matches(block: bytes) -> bool:
    """Whether ``block`` is a header (its checksum right) whatever its other fields say."""
    checksum = _number(block[148:156])
    counted = block[:148] + b" " * 8 + block[156:]  # the checksum field counts as spaces
    unsigned = sum(counted)
    signed = unsigned - 256 * sum(1 for byte in counted if byte >= 0x80)  # old Sun tar
    return checksum in (unsigned, signed)


def _raw_name(block: bytes, pending_name: str | None) -> str:
    """The member's name when ``frombuf`` could not read its header."""
    if pending_name is not None:
        return pending_name
    return block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


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
