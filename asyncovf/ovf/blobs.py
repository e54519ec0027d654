"""Where a package's bytes live: a local file or an http(s) URL, read as a stream.

A package is a handful of *blobs* (one OVA file, or the files of an OVF
directory) and every read is sequential from some offset: walking tar headers,
reading the descriptor, streaming a disk to vCenter. So a blob offers exactly
that — ``open(offset)`` giving a reader with ``read`` and ``skip`` — and the
two kinds differ only in how they get there:

* a local file seeks, and reads in a worker thread (file I/O would block the
  event loop);
* a URL uses an HTTP ``Range`` request when the server honours it, and
  otherwise reads from the start and discards up to the offset. Servers that
  ignore ``Range`` (``python3 -m http.server`` is one) still work, at the cost
  of re-reading what lies before the offset; we warn once per URL.

Each reader owns its connection (an aiohttp session of its own), so readers
for different jobs never share a client object, and closing the reader
releases everything it opened.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import ssl
import stat
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio
import anyio.to_thread

from asyncovf.errors import PackageError, SourceError
from asyncovf.tls import ContextCache

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

log = logging.getLogger(__name__)

#: Forward skips shorter than this are read and discarded; longer ones start a
#: new ranged request (cheaper than reading megabytes we do not need).
RANGE_SKIP_THRESHOLD: Final = 4 * 1024 * 1024
#: Hash in a worker thread only when there is enough to hash; below this the
#: thread hop costs more than it saves.
THREAD_HASH_MIN: Final = 64 * 1024


class BlobReader(Protocol):
    """Sequential reads from some offset of a blob."""

    position: int

    async def read(self, size: int, digest: Hash | None = None) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the blob), fed to ``digest``.

        Hashing here, rather than after, lets a local read and its hash share
        one worker-thread hop.
        """
        ...

    async def skip(self, size: int) -> int:
        """Move forward ``size`` bytes; returns how many there were to skip."""
        ...


class Blob(Protocol):
    """One file of a package's storage: local or remote."""

    @property
    def display(self) -> str:
        """How error messages name it."""
        ...

    async def size(self) -> int | None:
        """Its length in bytes; ``None`` when it does not exist."""
        ...

    def open(self, offset: int = 0) -> AbstractAsyncContextManager[BlobReader]:
        ...

    def sibling(self, name: str) -> Blob:
        """The blob ``name`` resolves to, relative to this one (OVF file references)."""
        ...


async def read_at(blob: Blob, offset: int, size: int) -> bytes:
    """A small read (a descriptor, a manifest) in one call."""
    async with blob.open(offset) as reader:
        return await reader.read(size)


# --- local files ---------------------------------------------------------------------


@dataclass(frozen=True)
class LocalBlob:
    """A local file: one the user named (an ``.ova``, an ``.ovf``), or a file of
    an OVF directory, which is read only from inside that directory."""

    path: Path
    #: The OVF directory this file belongs to (``None``: a path the user gave);
    #: its reads then go through :func:`open_inside`.
    directory: Path | None = None
    #: Its name inside ``directory``, as the package wrote it.
    name: str = ""

    @classmethod
    def inside(cls, directory: Path, name: str) -> LocalBlob:
        """The file ``name`` of the package directory ``directory``."""
        return cls(directory / name, directory, name)

    @property
    def display(self) -> str:
        return str(self.path)

    async def size(self) -> int | None:
        if self.directory is not None:
            return await anyio.to_thread.run_sync(self._size_inside)
        try:
            found = await anyio.to_thread.run_sync(self.path.stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PackageError(exc.strerror or str(exc), file=str(self.path)) from exc
        return found.st_size

    def _size_inside(self) -> int | None:
        handle = self.open_file()
        if handle is None:
            return None
        with handle:
            return os.fstat(handle.fileno()).st_size

    def open_file(self) -> BinaryIO | None:
        """The file opened for reading (blocking: call it in a worker thread);
        ``None`` when a file of a package directory does not exist."""
        if self.directory is not None:
            return open_inside(self.directory, self.name)
        try:
            return open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise PackageError(exc.strerror or str(exc), file=str(self.path)) from exc

    def open_at(self, offset: int = 0) -> BinaryIO:
        """The file opened for reading at ``offset`` (blocking: call it in a worker
        thread); a :class:`PackageError` when it does not exist."""
        handle = self.open_file()
        if handle is None:
            raise PackageError("no such file", file=self.display)
        if offset:
            try:
                handle.seek(offset)
            except BaseException:
                handle.close()
                raise
        return handle

    @asynccontextmanager
    async def open(self, offset: int = 0) -> AsyncIterator[BlobReader]:
        handle = await anyio.to_thread.run_sync(self.open_at, offset)
        try:
            yield _LocalReader(handle, offset)
        finally:
            # The caller's task owns the handle; close it even when cancelled.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(handle.close)

    def sibling(self, name: str) -> LocalBlob:
        """``name`` next to this file, inside its package directory — the
        directory it is in, for a descriptor the user named."""
        if self.directory is None:
            return LocalBlob.inside(self.path.parent, name)
        folder = posixpath.dirname(self.name)
        return LocalBlob.inside(self.directory, posixpath.join(folder, name) if folder else name)


def open_inside(directory: Path, name: str) -> BinaryIO | None:
    """The file ``name`` (an href, a chunk, the ``.mf`` or ``.cert``) of the
    package directory ``directory``, opened for reading; ``None`` if it does not exist.

    A package is what is inside its directory: ``name`` may not be absolute,
    climb with ``..``, or pass through a symbolic link in any of its components
    (a link pointing back inside is refused too: the package's own tools do not
    write links). Each component is opened relative to the one before it with
    ``O_NOFOLLOW``, so what was checked is what is read: a component swapped
    for a link meanwhile fails to open rather than being followed. The refusal
    names ``name`` and nothing read from the file, which is never opened.

    Blocking: call it in a worker thread.
    """
    where = str(directory)
    parts = _parts_inside(name, where)
    try:
        folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise PackageError(exc.strerror or str(exc), file=where) from exc
    try:
        for depth, part in enumerate(parts[:-1]):
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                dir_fd=folder)
            except OSError as exc:
                reason = _why_unopenable(folder, part, exc)
                if reason is None:
                    return None
                shown = "/".join(parts[:depth + 1])
                raise PackageError(f"{name}: {shown} {reason}", file=where) from None
            os.close(folder)
            folder = inner
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        try:
            descriptor = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                                 dir_fd=folder)
        except OSError as exc:
            reason = _why_unopenable(folder, parts[-1], exc)
            if reason is None:
                return None
            raise PackageError(f"{name} {reason}", file=where) from None
    finally:
        os.close(folder)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise PackageError(f"{name} is not a regular file", file=where)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _parts_inside(name: str, where: str) -> list[str]:
    """``name``'s components below the package directory; absolute paths and ``..``
    are refused (they would leave it before any link is looked at)."""
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise PackageError(f"{name} has an absolute path; a package's files are inside it",
                           file=where)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PackageError(f"{name} escapes the package with '..'", file=where)
    if not parts:
        raise PackageError(f"{name!r} names no file", file=where)
    return parts


def _why_unopenable(folder: int, part: str, exc: OSError) -> str | None:
    """Why ``part`` (in the directory open as ``folder``) did not open; ``None``:
    it does not exist."""
    try:
        found = os.stat(part, dir_fd=folder, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as again:
        return f"cannot be read: {again.strerror or again}"
    if stat.S_ISLNK(found.st_mode):
        return "is a symbolic link; a package's files must be inside its directory"
    if exc.errno == errno.ENOTDIR:  # a file where the path needs a directory
        return None
    return f"cannot be read: {exc.strerror or exc}"


def _read_and_hash(handle: BinaryIO, size: int, digest: Hash | None) -> bytes:
    # In a worker thread: the read and the hash (hashlib releases the GIL on
    # large buffers) both stay off the event loop, in one hop.
    data = handle.read(size)
    if digest is not None and data:
        digest.update(data)
    return data


def _skip_in(handle: BinaryIO, size: int) -> int:
    here = handle.tell()
    end = handle.seek(0, os.SEEK_END)
    target = min(here + size, end)
    handle.seek(target)
    return target - here


class _LocalReader:
    def __init__(self, handle: BinaryIO, offset: int) -> None:
        self._handle = handle
        self.position = offset

    async def read(self, size: int, digest: Hash | None = None) -> bytes:
        data = await anyio.to_thread.run_sync(_read_and_hash, self._handle, size, digest)
        self.position += len(data)
        return data

    async def skip(self, size: int) -> int:
        skipped = await anyio.to_thread.run_sync(_skip_in, self._handle, size)
        self.position += skipped
        return skipped


# --- http(s) -------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpSourceSettings:
    """How to reach packages on web servers (not vCenter: its trust is separate)."""

    ca_file: str | None = None
    insecure: bool = False
    connect_timeout: float = 30.0
    read_timeout: float = 120.0
    #: The ``ca_file`` context, built once for every reader of every source
    #: opened with these settings (outside equality, like the value's identity).
    _contexts: ContextCache = field(default_factory=ContextCache, compare=False, repr=False)

    async def ssl_context(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl``: off, the system's default, or ``ca_file``'s context —
        built once, in a worker thread (loading CA files blocks)."""
        if self.insecure:
            return False
        if self.ca_file:
            ca_file = self.ca_file
            return await self._contexts.get_async(
                "ca_file", lambda: ssl.create_default_context(cafile=ca_file))
        return True


def is_url(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and location.lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class HttpBlob:
    url: str
    settings: HttpSourceSettings = field(default_factory=HttpSourceSettings)
    #: Shared by the blob's readers: set once a server is seen to ignore Range.
    _state: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @property
    def display(self) -> str:
        return _redacted(self.url)

    def sibling(self, name: str) -> HttpBlob:
        return HttpBlob(urljoin(self.url, name), self.settings, self._state)

    async def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout,
                                        sock_read=self.settings.read_timeout)
        return aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(ssl=await self.settings.ssl_context(), limit=1),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # a .gz member is bytes to hash, not to unpack here
        )

    async def size(self) -> int | None:
        async with await self._session() as http, self._errors("HEAD"):
            async with http.head(self.url, allow_redirects=True) as response:
                if response.status == 404:
                    return None
                if response.status >= 400 and response.status not in (405, 501):
                    raise SourceError(f"{self.display}: HTTP {response.status} {response.reason}",
                                      file=self.display, url=self.url, status=response.status)
                length = response.headers.get("Content-Length")
                # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
                if response.status < 400 and length is not None and length.isascii() \
                        and length.isdigit():
                    return int(length)
            # No HEAD, or no length in its answer: ask for the first byte instead.
            async with http.get(self.url, headers={"Range": "bytes=0-0"}) as response:
                if response.status == 404:
                    return None
                self._check_status(response.status, response.reason)
                total = _total_from_content_range(response.headers.get("Content-Range"))
                if total is not None:
                    return total
                if response.content_length is not None:
                    return response.content_length
        raise PackageError("the server gives no length for it", file=self.display)

    @asynccontextmanager
    async def open(self, offset: int = 0) -> AsyncIterator[BlobReader]:
        async with await self._session() as http:
            reader = _HttpReader(self, http)
            try:
                await reader.start(offset)
                yield reader
            finally:
                reader.release()

    @asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise SourceError(f"{what} {self.display} failed: {detail}", file=self.display,
                              url=self.url) from exc

    def _check_status(self, status: int, reason: str | None) -> None:
        if status >= 400:
            raise SourceError(f"{self.display}: HTTP {status} {reason or ''}".rstrip(),
                              file=self.display, url=self.url, status=status)

    def note_ranges_ignored(self) -> None:
        if not self._state.get("ranges_ignored"):
            self._state["ranges_ignored"] = True
            log.warning("%s: the server ignores Range requests; reading from the start "
                        "each time instead", urlsplit(self.url).netloc)

    @property
    def ranges_ignored(self) -> bool:
        return self._state.get("ranges_ignored", False)


class _HttpReader:
    def __init__(self, blob: HttpBlob, http: aiohttp.ClientSession) -> None:
        self._blob = blob
        self._http = http
        self._response: aiohttp.ClientResponse | None = None
        self.position = 0

    async def start(self, offset: int) -> None:
        self.release()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self._blob._errors("GET"):
            response = await self._http.get(self._blob.url, headers=headers)
        if response.status == 416:  # offset at or past the end: nothing to read
            response.release()
            self._response, self.position = None, offset
            return
        if response.status == 404:
            response.release()
            raise SourceError(f"{self._blob.display}: HTTP 404 Not Found",
                              file=self._blob.display, url=self._blob.url, status=404)
        try:
            self._blob._check_status(response.status, response.reason)
        except SourceError:
            response.release()
            raise
        self._response = response
        if response.status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range"))
            if start != offset:
                response.release()
                raise SourceError(f"{self._blob.display}: asked for bytes from {offset}, "
                                  f"the server sent from {start}", file=self._blob.display,
                                  url=self._blob.url)
            self.position = offset
            return
        self.position = 0
        if offset:
            self._blob.note_ranges_ignored()
            await self._discard(offset)

    def release(self) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None

    async def read(self, size: int, digest: Hash | None = None) -> bytes:
        data = await self._read(size)
        if digest is not None and data:
            if len(data) >= THREAD_HASH_MIN:
                await anyio.to_thread.run_sync(digest.update, data)
            else:
                digest.update(data)
        return data

    async def _read(self, size: int) -> bytes:
        if self._response is None or size <= 0:
            return b""
        parts: list[bytes] = []
        wanted = size
        async with self._blob._errors("GET"):
            while wanted > 0:
                data = await self._response.content.read(wanted)
                if not data:
                    break
                parts.append(data)
                wanted -= len(data)
        data = b"".join(parts)
        self.position += len(data)
        return data

    async def skip(self, size: int) -> int:
        if size >= RANGE_SKIP_THRESHOLD and not self._blob.ranges_ignored:
            start = self.position
            await self.start(start + size)
            if self._response is None:  # past the end: say how far there was to go
                total = await self._blob.size()
                self.position = min(start + size, total or start)
                return self.position - start
            return self.position - start
        return await self._discard(size)

    async def _discard(self, size: int) -> int:
        skipped = 0
        while skipped < size:
            data = await self._read(min(size - skipped, 1024 * 1024))
            if not data:
                break
            skipped += len(data)
        return skipped


def _start_from_content_range(header: str | None) -> int | None:
    # "bytes 100-199/1000"
    if not header or not header.startswith("bytes "):
        return None
    first = header[6:].split("-", 1)[0]
    return int(first) if first.isascii() and first.isdigit() else None


def _total_from_content_range(header: str | None) -> int | None:
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1]
    return int(total) if total.isascii() and total.isdigit() else None


def _redacted(url: str) -> str:
    """A URL without credentials, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


def blob_for(location: str | os.PathLike[str],
             http: HttpSourceSettings | None = None) -> Blob:
    if is_url(location):
        return HttpBlob(str(location), http or HttpSourceSettings())
    return LocalBlob(Path(location))


__all__ = ["Blob", "BlobReader", "HttpBlob", "HttpSourceSettings", "LocalBlob",
           "RANGE_SKIP_THRESHOLD", "blob_for", "is_url", "open_inside", "read_at"]
