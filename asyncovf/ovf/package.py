"""OVF packages as streaming sources: an OVF directory or an OVA, local or on a web server.

Nothing is ever extracted to disk. An OVA is a plain tar; we find every
member's offset once (:mod:`asyncovf.ovf.tarindex`) and later read each member
in place (:mod:`asyncovf.ovf.blobs`). Every member is checked for path
traversal, links, devices and truncation before it is trusted.

A ``References/File`` maps to a :class:`PackageFile`: the bytes as stored (one
member, or its ``ovf:chunkSize`` chunks ``href.000000000``, ``href.000000001``
…) and what vCenter must receive (the same bytes, or their gunzipped form for
``ovf:compression="gzip"``). How those bytes are streamed, verified and
decompressed is :mod:`asyncovf.ovf.content`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import urlsplit

import anyio.to_thread

from asyncovf.errors import PackageError
from asyncovf.ovf.blobs import (
    Blob,
    HttpBlob,
    HttpSourceSettings,
    LocalBlob,
    blob_for,
    is_url,
    read_at,
)
from asyncovf.ovf.certificate import SignatureCheck, check_signature
from asyncovf.ovf.descriptor import (
    MAX_DISK_CAPACITY,
    Descriptor,
    FileReference,
    parse_descriptor,
)
from asyncovf.ovf.manifest import Manifest, check_digest, parse_manifest
from asyncovf.ovf.tarindex import walk_tar

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
#: Manifests and certificates are a few lines; anything bigger is not one.
MAX_SIDECAR_BYTES: Final = 4 * 1024 * 1024
#: OVF 1.x/2.x name chunks with a nine-digit sequence number (DSP0243, 5.2).
CHUNK_SUFFIX_DIGITS: Final = 9
SUPPORTED_COMPRESSION: Final = ("gzip",)
#: A compressed file that backs no disk (an nvram, an ISO, a floppy image) expands
#: to at most this: an ISO is the largest such file an appliance ships, and one of
#: a few GiB is not gzipped into an OVA; 1 GiB refuses a bomb within seconds.
MAX_EXPANDED_OTHER: Final = 2**30
#: What a disk's file may expand to beyond its capacity: a streamOptimized VMDK
#: holds its header, embedded descriptor, grain tables and footer (a few KiB, and
#: 2 KiB per 32 MiB of capacity) and, per 64 KiB grain, a 12-byte marker, the
#: deflate framing of incompressible data and padding to a 512-byte sector: under
#: 1 KiB a grain, so 1/64 of the capacity plus 1 MiB is never reached by a real disk.
EXPANDED_DISK_MARGIN: Final = 2**20
EXPANDED_DISK_MARGIN_FRACTION: Final = 64


@dataclass(frozen=True)
class Member:
    """One stored file of a package: which blob holds its bytes, where, and how many."""

    name: str
    blob: Blob
    offset: int
    size: int

    @property
    def path(self) -> Path | None:
        """The local file holding it (``None`` for a member on a web server)."""
        return self.blob.path if isinstance(self.blob, LocalBlob) else None


@dataclass(frozen=True)
class PackageFile:
    """A ``References/File`` as the package holds it, and what vCenter is sent."""

    ref: FileReference
    parts: tuple[Member, ...]
    content_size: int | None  # None: compressed and not measured (see open_package)
    #: The capacity in bytes of the disk(s) this file backs (the largest); ``None``
    #: when it backs no disk, or a disk whose capacity is a ``${property}``.
    disk_capacity: int | None = None
    backs_disk: bool = False

    @property
    def href(self) -> str:
        return self.ref.href

    @property
    def expanded_limit(self) -> int:
        """The most bytes a compressed file may decompress to: the one bound that
        measuring and uploading both stop at (``ovf:size`` is the compressed size).

        A disk's file: its capacity plus :data:`EXPANDED_DISK_MARGIN` and
        1/:data:`EXPANDED_DISK_MARGIN_FRACTION` of it. A disk whose capacity is
        set by a property at deploy time is only bounded by the largest capacity
        accepted (:data:`MAX_DISK_CAPACITY`). Any other file:
        :data:`MAX_EXPANDED_OTHER`.
        """
        if not self.backs_disk:
            return MAX_EXPANDED_OTHER
        capacity = self.disk_capacity if self.disk_capacity is not None else MAX_DISK_CAPACITY
        return capacity + EXPANDED_DISK_MARGIN + capacity // EXPANDED_DISK_MARGIN_FRACTION

    def expanded_past_limit(self, location: str) -> PackageError:
        """The refusal of a file that decompresses to more than :attr:`expanded_limit`."""
        if not self.backs_disk:
            bound = "the bound for a compressed file that backs no disk"
        elif self.disk_capacity is None:
            bound = "the bound for a disk whose capacity a property sets"
        else:
            bound = (f"the bound for its disk of {self.disk_capacity} bytes "
                     "(capacity + 1/64 + 1 MiB)")
        return PackageError(f"{self.href} decompresses to more than {self.expanded_limit} "
                            f"bytes, {bound}", file=location)

    @property
    def compression(self) -> str | None:
        return self.ref.compression

    @property
    def stored_size(self) -> int:
        return sum(part.size for part in self.parts)


@dataclass(frozen=True)
class Package:
    """A readable OVF package: its descriptor, manifest and members."""

    location: str
    kind: str  # "ovf" or "ova"
    descriptor: Descriptor
    manifest: Manifest | None
    members: dict[str, Member]
    certificate: bytes | None = None
    warnings: tuple[str, ...] = ()
    files: dict[str, PackageFile] = field(default_factory=dict)

    @property
    def has_certificate(self) -> bool:
        return self.certificate is not None

    def signature(self) -> SignatureCheck | None:
        """Verify the ``.cert`` against the manifest (``None`` when unsigned)."""
        if self.certificate is None:
            return None
        if self.manifest is None:
            raise PackageError("the package has a certificate but no manifest for it to sign",
                               file=self.location)
        return check_signature(self.certificate, self.manifest.raw, self.manifest.name,
                               location=self.location)

    def member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise PackageError(f"package has no file {name!r}", file=self.location) from None

    def file(self, href: str) -> PackageFile:
        """The referenced file ``href``, with its chunks and upload size."""
        try:
            return self.files[href]
        except KeyError:
            raise PackageError(f"package has no file {href!r}", file=self.location) from None

    def content_size(self, href: str) -> int:
        """How many bytes vCenter receives for ``href``."""
        found = self.file(href)
        if found.content_size is None:
            raise PackageError(f"{href}: the size of its decompressed content was not measured",
                               file=self.location)
        return found.content_size


def _checked_member_name(raw: str, location: str) -> str:
    """Refuse absolute paths and ``..``: a package must not reach outside itself."""
    name = raw.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise PackageError(f"member {raw!r} has an absolute path", file=location)
    if ".." in path.parts:
        raise PackageError(f"member {raw!r} escapes the package with '..'", file=location)
    if "://" in name:
        raise PackageError(f"member {raw!r} is a URL; a package holds its own files",
                           file=location)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise PackageError(f"member {raw!r} has an empty name", file=location)
    return "/".join(parts)


def chunk_name(href: str, index: int) -> str:
    return f"{href}.{index:0{CHUNK_SUFFIX_DIGITS}d}"


async def open_unmeasured(location: str | os.PathLike[str], max_descriptor_bytes: int,
                          http: HttpSourceSettings | None) -> Package:
    """The package at ``location``, its compressed files not yet measured
    (:func:`asyncovf.ovf.source.open_package` measures them)."""
    if is_url(location):
        url = str(location)
        blob = blob_for(url, http)
        suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
        if suffix == ".ovf":
            return await _open_descriptor(blob, max_descriptor_bytes)
        return await _open_ova(blob, max_descriptor_bytes)
    path = Path(location)
    if await anyio.to_thread.run_sync(path.is_dir):
        # The directory is the package: its descriptor is one of its files.
        return await _open_descriptor(
            LocalBlob.inside(path, await anyio.to_thread.run_sync(_only_descriptor_in, path)),
            max_descriptor_bytes)
    if not await anyio.to_thread.run_sync(path.exists):
        raise PackageError("no such file or directory", file=str(location))
    suffix = path.suffix.lower()
    if suffix == ".ovf" or (
            suffix != ".ova" and await anyio.to_thread.run_sync(_looks_like_xml, path)):
        return await _open_descriptor(LocalBlob(path), max_descriptor_bytes)
    return await _open_ova(LocalBlob(path), max_descriptor_bytes)


def _only_descriptor_in(path: Path) -> str:
    candidates = sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".ovf")
    if len(candidates) != 1:
        found = ", ".join(candidates) or "none"
        raise PackageError(f"expected exactly one .ovf descriptor, found {found}", file=str(path))
    return candidates[0]


def _looks_like_xml(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


async def _read_sidecar(blob: Blob, location: str) -> bytes | None:
    size = await blob.size()
    if size is None:
        return None
    if size > MAX_SIDECAR_BYTES:
        raise PackageError(f"{blob.display} is {size} bytes; not a manifest or certificate",
                           file=location)
    return await read_at(blob, 0, size)


async def _open_descriptor(blob: Blob, max_descriptor_bytes: int) -> Package:
    """An ``.ovf`` file: its references are files (or URLs) next to it."""
    location = blob.display
    size = await blob.size()
    if size is None:
        raise PackageError("no such file", file=location)
    if size > max_descriptor_bytes:
        raise PackageError(f"descriptor is {size} bytes, over the {max_descriptor_bytes}-byte "
                           "limit", file=location)
    data = await read_at(blob, 0, size)
    name = PurePosixPath(urlsplit(location).path).name if isinstance(blob, HttpBlob) \
        else Path(location).name
    descriptor = parse_descriptor(data, name=name, max_bytes=max_descriptor_bytes,
                                  location=location)
    members: dict[str, Member] = {}

    async def add(member_name: str) -> bool:
        """Record ``member_name`` if it exists; links and non-files are refused
        (a local sibling's ``size`` opens it inside the package directory)."""
        checked = _checked_member_name(member_name, location)
        sibling = blob.sibling(checked)
        member_size = await sibling.size()
        if member_size is None:
            return False
        members[member_name] = Member(member_name, sibling, 0, member_size)
        return True

    for ref in descriptor.files:
        if ref.chunk_size:
            index = 0
            while await add(chunk_name(ref.href, index)):
                index += 1
                if ref.size is not None and index * ref.chunk_size >= ref.size:
                    break
        else:
            await add(ref.href)

    stem = name.rsplit(".", 1)[0]
    manifest_bytes = await _read_sidecar(blob.sibling(f"{stem}.mf"), location)
    manifest = parse_manifest(manifest_bytes, name=f"{stem}.mf") if manifest_bytes else None
    certificate = await _read_sidecar(blob.sibling(f"{stem}.cert"), location)
    package = Package(location=location, kind="ovf", descriptor=descriptor, manifest=manifest,
                      members=members, certificate=certificate)
    return replace(package, files=_assemble_files(package))


async def _open_ova(blob: Blob, max_descriptor_bytes: int) -> Package:
    location = blob.display
    total = await blob.size()
    if total is None:
        raise PackageError("no such file or directory", file=location)
    async with blob.open(0) as reader:
        entries = await walk_tar(reader, location=location, total_size=total)

    members: dict[str, Member] = {}
    order: list[str] = []
    for entry in entries:
        name = _checked_member_name(entry.name, location)
        if entry.kind == "directory":
            continue
        if entry.kind != "file":
            kind = "link" if entry.kind == "link" else "device or special file"
            raise PackageError(f"member {entry.name!r} is a {kind}; only regular files are "
                               "allowed", file=location)
        if name in members:
            raise PackageError(f"member {name!r} appears twice", file=location)
        members[name] = Member(name, blob, entry.offset, entry.size)
        order.append(name)

    descriptors = [n for n in order if n.lower().endswith(".ovf")]
    if len(descriptors) != 1:
        raise PackageError(
            f"expected exactly one .ovf descriptor in the OVA, found {len(descriptors)}",
            file=location,
        )
    warnings: list[str] = []
    descriptor_name = descriptors[0]
    if order[0] != descriptor_name:
        # The OVF spec requires the descriptor first (so OVAs can be streamed);
        # we read in place, so we cope, but say so.
        warnings.append(f"descriptor {descriptor_name} is not the first member of the OVA")
    descriptor_member = members[descriptor_name]
    if descriptor_member.size > max_descriptor_bytes:
        raise PackageError(
            f"descriptor is {descriptor_member.size} bytes, over the "
            f"{max_descriptor_bytes}-byte limit",
            file=f"{location}:{descriptor_name}",
        )
    descriptor = parse_descriptor(await _read_member(descriptor_member, location),
                                  name=descriptor_name, max_bytes=max_descriptor_bytes,
                                  location=f"{location}:{descriptor_name}")

    stem = descriptor_name.rsplit(".", 1)[0]
    manifest = None
    manifest_name = next((n for n in order if n.lower() == f"{stem}.mf".lower()), None)
    if manifest_name is not None:
        manifest = parse_manifest(await _read_member(members[manifest_name], location),
                                  name=manifest_name)
    certificate_name = next((n for n in order if n.lower() == f"{stem}.cert".lower()), None)
    certificate = None
    if certificate_name is not None:
        certificate = await _read_member(members[certificate_name], location)
    package = Package(location=location, kind="ova", descriptor=descriptor, manifest=manifest,
                      members=members, certificate=certificate, warnings=tuple(warnings))
    return replace(package, files=_assemble_files(package))


async def _read_member(member: Member, location: str) -> bytes:
    if member.size > MAX_SIDECAR_BYTES and not member.name.lower().endswith(".ovf"):
        raise PackageError(f"{member.name} is {member.size} bytes; not a manifest or "
                           "certificate", file=location)
    data = await read_at(member.blob, member.offset, member.size)
    if len(data) != member.size:
        raise PackageError(f"{member.name} is truncated", file=location)
    return data


def _assemble_files(package: Package) -> dict[str, PackageFile]:
    """Each reference's stored parts; references with a part missing are left out
    (:func:`check_files` names what is missing)."""
    files: dict[str, PackageFile] = {}
    for ref in package.descriptor.files:
        parts = _parts_of(ref, package.members)
        if not parts:
            continue
        size = sum(part.size for part in parts)
        content = size if not ref.compression else None
        capacities = [d.capacity_bytes for d in package.descriptor.disks if d.file_ref == ref.id]
        known = [c for c in capacities if c is not None]
        capacity = max(known) if capacities and len(known) == len(capacities) else None
        files[ref.href] = PackageFile(ref, tuple(parts), content, disk_capacity=capacity,
                                      backs_disk=bool(capacities))
    return files


def _parts_of(ref: FileReference, members: dict[str, Member]) -> list[Member]:
    if not ref.chunk_size:
        member = members.get(ref.href)
        return [member] if member is not None else []
    parts: list[Member] = []
    while (member := members.get(chunk_name(ref.href, len(parts)))) is not None:
        parts.append(member)
    return parts


def check_compression(package: Package) -> None:
    for ref in package.descriptor.files:
        if ref.compression and ref.compression.lower() not in SUPPORTED_COMPRESSION:
            raise PackageError(f"{ref.href}: ovf:compression={ref.compression!r} is not "
                               "supported (only gzip)", file=package.location)


def check_parts(package: Package, ref: FileReference, found: PackageFile | None) -> None:
    if found is None:
        missing = chunk_name(ref.href, 0) if ref.chunk_size else ref.href
        raise PackageError(f"descriptor references {missing}, which the package does not "
                           "contain", file=package.location)
    if ref.chunk_size:
        for part in found.parts[:-1]:
            if part.size != ref.chunk_size:
                raise PackageError(f"chunk {part.name} is {part.size} bytes, not its "
                                   f"ovf:chunkSize={ref.chunk_size}", file=package.location)
        if found.parts[-1].size > ref.chunk_size:
            raise PackageError(f"chunk {found.parts[-1].name} is {found.parts[-1].size} bytes, "
                               f"over its ovf:chunkSize={ref.chunk_size}", file=package.location)
        if ref.size is not None and found.stored_size < ref.size:
            raise PackageError(
                f"{ref.href} is {found.stored_size} bytes in {len(found.parts)} chunks, shorter "
                f"than its ovf:size={ref.size}: chunk "
                f"{chunk_name(ref.href, len(found.parts))} is missing", file=package.location)
    if ref.size is not None and ref.size != found.stored_size:
        relation = "shorter" if found.stored_size < ref.size else "longer"
        raise PackageError(
            f"{ref.href} is {found.stored_size} bytes, {relation} than its ovf:size={ref.size}",
            file=package.location,
        )


def stored_names(package: Package, refs: Sequence[FileReference] | None = None) -> list[str]:
    """The member names the references are stored as (chunks included)."""
    names: list[str] = []
    for ref in refs if refs is not None else package.descriptor.files:
        found = package.files.get(ref.href)
        names.extend(p.name for p in found.parts) if found else names.append(ref.href)
    return names


def check_files(package: Package, *, verify_manifest: bool = True) -> None:
    """Check, before anything touches vCenter, that every referenced file is there and whole.

    With ``verify_manifest``, a ``.cert`` whose signature does not verify
    against the manifest is refused too (digests are then checked while
    streaming).

    A file shorter or longer than its ``ovf:size``, a missing chunk, or an
    unsupported compression is refused here rather than discovered half-way
    through an upload with a lease open.
    """
    descriptor = package.descriptor
    check_compression(package)
    for ref in descriptor.files:
        check_parts(package, ref, package.files.get(ref.href))
    if verify_manifest and package.certificate is not None:
        signature = package.signature()
        if signature is not None and not signature.valid:
            raise PackageError(signature.describe(), file=package.location)
    if verify_manifest and package.manifest is not None:
        listed = package.manifest.entries
        own = listed.get(descriptor.name)
        if own is not None:
            digest = own.new_hash()
            digest.update(descriptor.text.encode("utf-8"))
            check_digest(own, digest, manifest=package.manifest.name)
        for name in stored_names(package):
            if name not in listed:
                raise PackageError(f"{name} is not listed in manifest "
                                   f"{package.manifest.name}", file=package.location)
        for name in listed:
            if name != descriptor.name and name not in package.members:
                raise PackageError(f"manifest {package.manifest.name} lists {name}, which the "
                                   "package does not contain", file=package.location)


__all__ = ["DEFAULT_CHUNK_SIZE", "EXPANDED_DISK_MARGIN", "EXPANDED_DISK_MARGIN_FRACTION",
           "MAX_EXPANDED_OTHER", "Member", "Package", "PackageFile", "check_compression",
           "check_files", "check_parts", "chunk_name", "open_unmeasured", "stored_names"]
