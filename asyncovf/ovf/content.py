"""What vCenter receives for one file: stored bytes, verified and decompressed, read ahead.

The bytes of a ``References/File`` go through up to two stages, each its own
task, joined by one-slot memory streams, ahead of the sender:

    read parts + hash + check digest ──▶ gunzip (ovf:compression) ──▶ sender

so reading and hashing chunk N+1 overlaps with sending chunk N instead of
taking turns. A local read and its hash share one worker-thread hop (hashlib
and zlib release the GIL on large buffers), so they run beside the event loop
that sends.

Each part's digest is checked as its last chunk is hashed, *before* that chunk
is passed on: a file that fails its manifest never reaches vCenter whole.
Memory per open stream is bounded by a few chunks, and decompression output is
bounded too (``max_length``), so a gzip bomb cannot balloon it. Its total is
bounded as well, measuring or uploading alike: past the file's
:attr:`~asyncovf.ovf.package.PackageFile.expanded_limit` (a disk's capacity and
a small margin) decompression stops and the file is refused; and an upload
stops at the size measured before it.

The stages live in a task group owned by :func:`open_content`'s caller, so a
failure in any stage cancels the sender, and leaving the block for any reason
cancels the stages: no task outlives the upload it feeds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream as ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream as ObjectSendStream

from asyncovf.errors import PackageError, first_error
from asyncovf.ovf.blobs import LocalBlob
from asyncovf.ovf.manifest import ManifestEntry, check_digest
from asyncovf.ovf.package import DEFAULT_CHUNK_SIZE, Member, Package, PackageFile

log = logging.getLogger(__name__)

#: Read-ahead depth between stages: one chunk waiting per stage.
STAGE_BUFFER: Final = 1


@dataclass(frozen=True)
class _Piece:
    data: bytes
    part: int
    last_of_part: bool


Stage = Callable[[ObjectReceiveStream[_Piece] | None, ObjectSendStream[_Piece]], Awaitable[None]]


class ContentStream:
    """The chunks of one file as vCenter must receive them, and how many bytes in all."""

    def __init__(self, size: int, receive: ObjectReceiveStream[_Piece]) -> None:
        self.size = size
        self._receive = receive

    async def chunks(self) -> AsyncIterator[bytes]:
        async for piece in self._receive:
            yield piece.data


@asynccontextmanager
async def open_content(
    package: Package,
    href: str,
    *,
    verify: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    measuring: bool = False,
) -> AsyncIterator[ContentStream]:
    """Stream ``href``'s content; every call reopens the source (a retry starts afresh).

    ``verify`` checks each stored part against the manifest while streaming
    (only when the package has one). Raises :class:`ManifestError` on a
    mismatch, :class:`PackageError` when the source ends early or decompresses
    to the wrong size or past its bound (``PackageFile.expanded_limit``),
    :class:`SourceError` when a remote read fails.
    ``measuring`` is for :func:`measure_content`: the size is not known yet.
    """
    found = package.file(href)
    size = None if measuring else package.content_size(href)
    entries: list[ManifestEntry | None] | None = None
    if verify and package.manifest is not None:
        entries = [package.manifest.entry(part.name) for part in found.parts]
    manifest_name = package.manifest.name if package.manifest is not None else ""

    stages: list[Stage] = []
    if found.compression:
        stages.append(lambda rx, tx: _gunzip(rx, tx, found, size, chunk_size, package.location))

    streams: list[ObjectSendStream[_Piece] | ObjectReceiveStream[_Piece]] = []
    try:
        async with anyio.create_task_group() as tg:
            send, receive = anyio.create_memory_object_stream[_Piece](STAGE_BUFFER)
            streams += (send, receive)
            cursors = _cursors(found, entries, manifest_name, package.location)
            if all(isinstance(part.blob, LocalBlob) for part in found.parts):
                # Own limiter: a long-lived reader thread per upload must not eat
                # the shared pool's tokens that short file operations need.
                reader = lambda _, tx: anyio.to_thread.run_sync(  # noqa: E731
                    _read_local_parts, tx, cursors, chunk_size,
                    limiter=anyio.CapacityLimiter(1))
                tg.start_soon(_run_stage, reader, None, send)
            else:
                tg.start_soon(_run_stage, lambda _, tx: _read_parts(tx, cursors, chunk_size),
                              None, send)
            for stage in stages:
                next_send, next_receive = anyio.create_memory_object_stream[_Piece](STAGE_BUFFER)
                streams += (next_send, next_receive)
                tg.start_soon(_run_stage, stage, receive, next_send)
                receive = next_receive
            try:
                yield ContentStream(size if size is not None else 0, receive)
            finally:
                # The consumer is done: nothing more is wanted. Closing its end
                # first frees a reader thread blocked handing over a chunk.
                receive.close()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    finally:
        for stream in streams:
            stream.close()


async def _run_stage(stage: Stage, receive: ObjectReceiveStream[_Piece] | None,
                     send: ObjectSendStream[_Piece]) -> None:
    await stage(receive, send)
    # Only a stage that finished closes its output: closing after an error would
    # look downstream like a clean end of data. (open_content closes the rest.)
    send.close()


class _PartCursor:
    """Reading one stored part: bytes left, its digest, and the check at its end.

    A part's digest is checked after its last chunk is hashed and before that
    chunk is passed on, so a file failing its manifest never reaches vCenter whole.
    """

    def __init__(self, index: int, part: Member, entry: ManifestEntry | None, manifest: str,
                 location: str) -> None:
        self.index = index
        self.part = part
        self.entry = entry
        self.digest = entry.new_hash() if entry is not None else None
        self.remaining = part.size
        self._manifest = manifest
        self._location = location

    def take(self, data: bytes) -> _Piece:
        """Account for ``data`` (already fed to the digest) as the next chunk."""
        if not data and self.remaining:
            raise PackageError(f"{self.part.name} ended after {self.part.size - self.remaining} "
                               f"of {self.part.size} bytes", file=self._location)
        self.remaining -= len(data)
        if self.remaining == 0 and self.entry is not None and self.digest is not None:
            check_digest(self.entry, self.digest, manifest=self._manifest)
        return _Piece(data, self.index, self.remaining == 0)


def _cursors(found: PackageFile, entries: list[ManifestEntry | None] | None, manifest: str,
             location: str) -> list[_PartCursor]:
    return [_PartCursor(index, part, entries[index] if entries is not None else None, manifest,
                        location) for index, part in enumerate(found.parts)]


async def _read_parts(send: ObjectSendStream[_Piece], cursors: list[_PartCursor],
                      chunk_size: int) -> None:
    """Read each part on the event loop (remote blobs: the reads are network I/O)."""
    for cursor in cursors:
        async with cursor.part.blob.open(cursor.part.offset) as reader:
            while True:
                data = await reader.read(min(chunk_size, cursor.remaining), cursor.digest)
                await send.send(cursor.take(data))
                if not cursor.remaining:
                    break


def _read_local_parts(send: ObjectSendStream[_Piece], cursors: list[_PartCursor],
                      chunk_size: int) -> None:
    """Read and hash local parts in one worker thread for the whole file.

    One thread doing the whole loop, handing each chunk over to the event loop,
    overlaps with sending far better than a thread hop per chunk: a per-chunk
    hop needs the event loop to start each read, and the loop is busy sending.
    Stops quietly when the consumer has gone (stream closed, or cancelled).
    """
    for cursor in cursors:
        blob = cursor.part.blob
        assert isinstance(blob, LocalBlob)  # only local parts are read here
        # Opened as the package was checked: inside its directory, no link on the way
        # (a component swapped for a link since open_package is refused, not followed).
        with blob.open_at(cursor.part.offset) as handle:
            while True:
                data = handle.read(min(chunk_size, cursor.remaining))
                if cursor.digest is not None and data:
                    cursor.digest.update(data)  # releases the GIL on large buffers
                if not _hand_over(send, cursor.take(data)):
                    return
                if not cursor.remaining:
                    break


def _hand_over(send: ObjectSendStream[_Piece], piece: _Piece) -> bool:
    """Pass ``piece`` to the event loop from a worker thread; False if nobody wants it."""
    try:
        try:
            anyio.from_thread.run_sync(send.send_nowait, piece)
        except anyio.WouldBlock:
            anyio.from_thread.run(send.send, piece)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError,
            concurrent.futures.CancelledError):
        return False
    return True


class _Gunzip:
    """gzip decompression with bounded output (a gzip bomb stops at the expected size).

    Concatenated gzip members (what ``cat a.gz b.gz`` and pigz produce) are
    decompressed one after another, as gunzip(1) does.
    """

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self.started_member = False

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def feed(self, data: bytes) -> None:
        self._pending = self._pending + data if self._pending else data

    def pull(self, limit: int) -> bytes:
        """Up to ``limit`` decompressed bytes from what was fed (runs in a thread)."""
        if self._inflater.eof:
            leftover = self._inflater.unused_data + self._pending
            if not leftover.strip(b"\0"):  # trailing zero padding after the last member
                self._pending = b""
                return b""
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._pending = leftover
        data, self._pending = self._pending, b""
        self.started_member = True
        out = self._inflater.decompress(data, limit)
        self._pending = self._inflater.unconsumed_tail
        return out

    @property
    def finished(self) -> bool:
        return self._inflater.eof and not self._pending


async def _gunzip(receive: ObjectReceiveStream[_Piece] | None, send: ObjectSendStream[_Piece],
                  found: PackageFile, size: int | None, chunk_size: int,
                  location: str) -> None:
    assert receive is not None
    inflater = _Gunzip()
    produced = 0
    limit = found.expanded_limit
    async for piece in receive:
        inflater.feed(piece.data)
        while True:
            # Never more than one byte past the bound: a bomb costs the bound, not
            # its whole expansion.
            wanted = min(chunk_size, limit + 1 - produced)
            try:
                out = await anyio.to_thread.run_sync(inflater.pull, wanted)
            except zlib.error as exc:
                raise PackageError(f"{found.href}: not valid gzip data: {exc}",
                                   file=location) from exc
            if out:
                produced += len(out)
                if produced > limit:
                    raise found.expanded_past_limit(location)
                if size is not None and produced > size:
                    raise PackageError(f"{found.href} decompresses to more than the {size} bytes "
                                       "measured before the upload; was it changed?",
                                       file=location)
                await send.send(_Piece(out, piece.part, False))
            if not inflater.pending and not out:
                break
    if not inflater.finished:
        raise PackageError(f"{found.href}: gzip data ends early (truncated)", file=location)
    if size is not None and produced != size:
        raise PackageError(f"{found.href} decompressed to {produced} bytes, not the {size} "
                           "measured before the upload; was it changed?", file=location)


async def measure_content(package: Package, found: PackageFile,
                          chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """How many bytes ``found`` decompresses to: one streaming pass, nothing kept."""
    total = 0
    async with open_content(package, found.href, verify=False, chunk_size=chunk_size,
                            measuring=True) as content:
        async for chunk in content.chunks():
            total += len(chunk)
    return total


__all__ = ["ContentStream", "measure_content", "open_content"]
