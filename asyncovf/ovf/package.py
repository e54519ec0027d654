"""OVF packages as streaming sources: an OVF directory or an OVA read in place.

Nothing is ever extracted to disk. An OVA is a plain tar; we find every member's
offset once (in a worker thread: tar headers are file reads) and later read each
member by seeking. Every member is checked for path traversal, links, devices
and truncation before it is trusted. File reads and hashing run off the event
loop, one thread hop per chunk doing both.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

import anyio
import anyio.to_thread

from asyncovf.errors import PackageError
from asyncovf.ovf.descriptor import Descriptor, parse_descriptor
from asyncovf.ovf.manifest import Manifest, check_digest, parse_manifest
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE: Final = 1024 * 1024


@dataclass(frozen=True)
class Member:
    """One file of a package: where its bytes are and how many there are."""

    name: str
    path: Path
    offset: int
    size: int


@dataclass(frozen=True)
class Package:
    """A readable OVF package: its descriptor, manifest and members."""

    location: str
    kind: str  # "ovf" or "ova"
    descriptor: Descriptor
    manifest: Manifest | None
    members: dict[str, Member]
    has_certificate: bool
    warnings: tuple[str, ...] = ()

    def member(self, name: str) -> Member:
        try:
            return self.members[name]
        except KeyError:
            raise PackageError(f"package has no file {name!r}", file=self.location) from None

    @asynccontextmanager
    async def open_member(
        self, name: str, *, digest: hashlib._Hash | None = None
    ) -> AsyncIterator[MemberReader]:
        """Open one member for reading; the file is closed when the block exits.

        The handle's lifetime belongs to the caller's task, not to whichever
        task iterates the chunks (aiohttp writes request bodies from its own
        task), so it is released deterministically on every path.
        """
        member = self.member(name)
        handle: BinaryIO = await anyio.to_thread.run_sync(_open_at, member.path, member.offset)
        try:
            yield MemberReader(member, handle, digest, self.location)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(handle.close)

    async def stream(
        self,
        name: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        digest: hashlib._Hash | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Yield a member's bytes chunk by chunk, feeding ``digest`` on the way.

        Each call reopens the file, so a retried upload starts from a fresh source.
        """
        async with self.open_member(name, digest=digest) as reader:
            async for chunk in reader.chunks(chunk_size):
                yield chunk


class MemberReader:
    """Sequential reads of one open member; reads and hashing run in a worker thread."""

    def __init__(self, member: Member, handle: BinaryIO, digest: hashlib._Hash | None,
                 location: str) -> None:
        self.member = member
        self._handle = handle
        self._digest = digest
        self._location = location
        self.remaining = member.size

    async def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncGenerator[bytes, None]:
        """The rest of the member; a member that ends early (truncated since) raises."""
        while self.remaining > 0:
            chunk = await anyio.to_thread.run_sync(
                _read_and_hash, self._handle, min(chunk_size, self.remaining), self._digest
            )
            if not chunk:
                raise PackageError(
                    f"{self.member.name} ended after {self.member.size - self.remaining} of "
                    f"{self.member.size} bytes",
                    file=self._location,
                )
            self.remaining -= len(chunk)
            yield chunk


def _open_at(path: Path, offset: int) -> BinaryIO:
    handle = open(path, "rb")  # noqa: SIM115 - closed by Package.stream
    if offset:
        handle.seek(offset)
    return handle


def _read_and_hash(handle: BinaryIO, size: int, digest: hashlib._Hash | None) -> bytes:
    # Runs in a worker thread: the read and the hash (hashlib releases the GIL on
    # large buffers) both stay off the event loop, in one hop.
    data = handle.read(size)
    if digest is not None and data:
        digest.update(data)
    return data


def _checked_member_name(raw: str, location: str) -> str:
    """Refuse absolute paths and ``..``: a package must not reach outside itself."""
    name = raw.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise PackageError(f"member {raw!r} has an absolute path", file=location)
    if ".." in path.parts:
        raise PackageError(f"member {raw!r} escapes the package with '..'", file=location)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise PackageError(f"member {raw!r} has an empty name", file=location)
    return "/".join(parts)


async def open_package(
    location: str | os.PathLike[str],
    *,
    max_descriptor_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES,
) -> Package:
    """Open an ``.ova`` file, an ``.ovf`` file, or a directory holding one ``.ovf``."""
    path = Path(location)
    opener: Callable[[Path, int], Package]
    if await anyio.to_thread.run_sync(path.is_dir):
        opener = _open_directory_containing
    elif path.suffix.lower() == ".ova":
        opener = _open_ova
    elif path.suffix.lower() == ".ovf":
        opener = _open_ovf_file
    elif await anyio.to_thread.run_sync(path.exists):
        opener = _open_ova if await anyio.to_thread.run_sync(tarfile.is_tarfile, path) else \
            _open_ovf_file
    else:
        raise PackageError("no such file or directory", file=str(location))
    return await anyio.to_thread.run_sync(opener, path, max_descriptor_bytes)


def _open_directory_containing(path: Path, max_descriptor_bytes: int) -> Package:
    candidates = sorted(p for p in path.iterdir() if p.suffix.lower() == ".ovf")
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise PackageError(f"expected exactly one .ovf descriptor, found {found}", file=str(path))
    return _open_ovf_file(candidates[0], max_descriptor_bytes)


def _open_ovf_file(path: Path, max_descriptor_bytes: int) -> Package:
    location = str(path)
    try:
        stat = path.stat()
        if stat.st_size > max_descriptor_bytes:
            raise PackageError(
                f"descriptor is {stat.st_size} bytes, over the {max_descriptor_bytes}-byte limit",
                file=location,
            )
        data = path.read_bytes()
    except OSError as exc:
        raise PackageError(exc.strerror or str(exc), file=location) from exc
    descriptor = parse_descriptor(data, name=path.name, max_bytes=max_descriptor_bytes,
                                  location=location)
    base = path.parent
    members: dict[str, Member] = {}
    for ref in descriptor.files:
        name = _checked_member_name(ref.href, location)
        member_path = base / name
        # A link could point anywhere on this machine; a package is what is inside it.
        if member_path.is_symlink():
            raise PackageError(f"{ref.href} is a symbolic link", file=location)
        try:
            member_stat = member_path.stat()
        except FileNotFoundError:
            continue  # reported by check_files with the descriptor's context
        except OSError as exc:
            raise PackageError(f"{ref.href}: {exc.strerror}", file=location) from exc
        if not member_path.is_file():
            raise PackageError(f"{ref.href} is not a regular file", file=location)
        members[ref.href] = Member(ref.href, member_path, 0, member_stat.st_size)

    manifest = None
    manifest_path = path.with_suffix(".mf")
    if manifest_path.is_file():
        manifest = parse_manifest(manifest_path.read_bytes(), name=manifest_path.name)
    return Package(
        location=location,
        kind="ovf",
        descriptor=descriptor,
        manifest=manifest,
        members=members,
        has_certificate=path.with_suffix(".cert").is_file(),
    )


def _open_ova(path: Path, max_descriptor_bytes: int) -> Package:
    location = str(path)
    warnings: list[str] = []
    try:
        file_size = path.stat().st_size
        with tarfile.open(path, mode="r:") as tar:
            infos = _tar_members(tar, location)
    except tarfile.ReadError as exc:
        raise PackageError(f"not a readable OVA (tar): {exc}", file=location) from exc
    except OSError as exc:
        raise PackageError(exc.strerror or str(exc), file=location) from exc

    members: dict[str, Member] = {}
    order: list[str] = []
    for info in infos:
        name = _checked_member_name(info.name, location)
        if info.isdir():
            continue
        if not info.isreg():
            kind = "link" if (info.issym() or info.islnk()) else "device or special file"
            raise PackageError(f"member {info.name!r} is a {kind}; only regular files are allowed",
                               file=location)
        if info.offset_data + info.size > file_size:
            raise PackageError(
                f"truncated: member {name!r} needs {info.size} bytes at offset "
                f"{info.offset_data}, file has {file_size}",
                file=location,
            )
        if name in members:
            raise PackageError(f"member {name!r} appears twice", file=location)
        members[name] = Member(name, path, info.offset_data, info.size)
        order.append(name)

    descriptors = [n for n in order if n.lower().endswith(".ovf")]
    if len(descriptors) != 1:
        raise PackageError(
            f"expected exactly one .ovf descriptor in the OVA, found {len(descriptors)}",
            file=location,
        )
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
    descriptor = parse_descriptor(_read_member(descriptor_member), name=descriptor_name,
                                  max_bytes=max_descriptor_bytes,
                                  location=f"{location}:{descriptor_name}")

    stem = descriptor_name.rsplit(".", 1)[0]
    manifest = None
    manifest_name = next((n for n in order if n.lower() == f"{stem}.mf".lower()), None)
    if manifest_name is not None:
        manifest = parse_manifest(_read_member(members[manifest_name]), name=manifest_name)
    has_certificate = any(n.lower() == f"{stem}.cert".lower() for n in order)
    return Package(
        location=location,
        kind="ova",
        descriptor=descriptor,
        manifest=manifest,
        members=members,
        has_certificate=has_certificate,
        warnings=tuple(warnings),
    )


def _tar_members(tar: tarfile.TarFile, location: str) -> list[tarfile.TarInfo]:
    try:
        infos = list(tar)
    except tarfile.TarError as exc:
        raise PackageError(f"corrupt or truncated tar: {exc}", file=location) from exc
    if not infos:
        raise PackageError("empty or truncated OVA: no tar members", file=location)
    return infos


def _read_member(member: Member) -> bytes:
    with open(member.path, "rb") as handle:
        handle.seek(member.offset)
        data = handle.read(member.size)
    if len(data) != member.size:
        raise PackageError(f"{member.name} is truncated", file=str(member.path))
    return data


def check_files(package: Package, *, verify_manifest: bool = True) -> None:
    """Check, before anything touches vCenter, that every referenced file is there and whole.

    A file shorter or longer than its ``ovf:size`` is refused here rather than
    discovered half-way through an upload with a lease open.
    """
    descriptor = package.descriptor
    for ref in descriptor.files:
        if ref.chunk_size:
            raise PackageError(f"{ref.href}: chunked files (ovf:chunkSize) are not supported yet",
                               file=package.location)
        member = package.members.get(ref.href)
        if member is None:
            raise PackageError(f"descriptor references {ref.href}, which the package does not "
                               "contain", file=package.location)
        if ref.size is not None and ref.size != member.size:
            relation = "shorter" if member.size < ref.size else "longer"
            raise PackageError(
                f"{ref.href} is {member.size} bytes, {relation} than its ovf:size={ref.size}",
                file=package.location,
            )
    if verify_manifest and package.manifest is not None:
        listed = package.manifest.entries
        own = listed.get(descriptor.name)
        if own is not None:
            digest = own.new_hash()
            digest.update(descriptor.text.encode("utf-8"))
            check_digest(own, digest, manifest=package.manifest.name)
        for ref in descriptor.files:
            if ref.href not in listed:
                raise PackageError(f"{ref.href} is not listed in manifest "
                                   f"{package.manifest.name}", file=package.location)
        for name in listed:
            if name != descriptor.name and name not in package.members:
                raise PackageError(f"manifest {package.manifest.name} lists {name}, which the "
                                   "package does not contain", file=package.location)


__all__ = ["DEFAULT_CHUNK_SIZE", "Member", "MemberReader", "Package", "check_files", "open_package"]
