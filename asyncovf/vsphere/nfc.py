"""Streaming file uploads to an HttpNfcLease's device URLs.

Disks are POSTed with ``Content-Type: application/x-vnd.vmware-streamVmdk``;
other files a lease asks us to create (nvram, ISO) are PUT with
``Overwrite: t`` — vCenter answers a POST to those with 405. Bodies stream from
the package chunk by chunk with an explicit Content-Length (ESXi's NFC server
does not accept chunked transfer encoding), so memory stays at one chunk per
upload in flight.

A stalled upload (the server stops reading) is caught by an inactivity
deadline that each chunk pushes forward, not by a total timeout that a large
disk on a slow link would trip.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio

from asyncovf.errors import TransferError, TransferTimeout, TransportError
from asyncovf.vsphere.soap import translate_transport_errors

STREAM_VMDK: Final = "application/x-vnd.vmware-streamVmdk"
DEFAULT_STALL_TIMEOUT: Final = 120.0


@dataclass(frozen=True)
class UploadTarget:
    """One file item of an import and the device URL it goes to."""

    file_name: str
    url: str
    size: int
    is_disk: bool
    create: bool = False


def device_url(raw_url: str, vcenter_host: str) -> str:
    """Replace the ``*`` host vCenter (and vcsim) put in NFC URLs with the vCenter host.

    vSphere reference, HttpNfcLeaseDeviceUrl.url: "the host part may be '*'",
    meaning "the host you are talking to".
    """
    parts = urlsplit(raw_url)
    if parts.hostname == "*" or parts.netloc.startswith("*"):
        port_suffix = parts.netloc[1:] if parts.netloc.startswith("*:") else ""
        host = vcenter_host if not port_suffix else vcenter_host.split(":")[0] + port_suffix
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return raw_url


async def upload(
    http: aiohttp.ClientSession,
    target: UploadTarget,
    chunks: AsyncIterator[bytes],
    *,
    on_bytes: Callable[[int], None] | None = None,
    throttle: Callable[[int], Awaitable[None]] | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    cookie: str | None = None,
) -> None:
    """Send ``chunks`` (exactly ``target.size`` bytes) to ``target.url``.

    Raises :class:`TransferError` on an HTTP error answer or a connection
    failure, :class:`TransferTimeout` when no chunk moves for ``stall_timeout``.
    """
    headers = {
        "Content-Length": str(target.size),
        "Content-Type": STREAM_VMDK if target.is_disk else "application/octet-stream",
    }
    if cookie:
        headers["Cookie"] = cookie
    method = "POST"
    if target.create and not target.is_disk:
        method = "PUT"
        headers["Overwrite"] = "t"

    sent = 0
    host = urlsplit(target.url).netloc
    scope = anyio.CancelScope(deadline=anyio.current_time() + stall_timeout)

    async def body() -> AsyncGenerator[bytes, None]:
        nonlocal sent
        # Runs in aiohttp's writer task. It owns no resource: the caller owns
        # the source (and closes it), so stopping iteration anywhere is safe.
        async for chunk in chunks:
            if throttle is not None:
                await throttle(len(chunk))
            yield chunk
            sent += len(chunk)
            scope.deadline = anyio.current_time() + stall_timeout
            if on_bytes is not None:
                on_bytes(len(chunk))
        if sent != target.size:
            raise TransferError(
                f"{target.file_name}: source gave {sent} bytes, expected {target.size}",
                file=target.file_name, url=target.url,
            )

    stream = body()
    try:
        with scope:
            with translate_transport_errors(host, f"upload of {target.file_name}"):
                async with http.request(method, target.url, data=stream,
                                        headers=headers) as response:
                    status = response.status
                    text = (await response.read())[:300].decode("utf-8", "replace")
    except TransportError as exc:
        cause = exc.__cause__
        if isinstance(cause, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
            # The body generator's own error surfaces wrapped; report the real one.
            inner = cause.__cause__ or cause.__context__
            if isinstance(inner, TransferError):
                raise inner from None
        raise TransferError(
            f"upload of {target.file_name} failed after {sent} of {target.size} bytes: {exc}",
            file=target.file_name, url=target.url,
        ) from exc
    finally:
        # If aiohttp's writer task is still inside the generator, aiohttp cancels
        # it; otherwise close it here. Either way the source is the caller's.
        if not getattr(stream, "ag_running", False):
            await stream.aclose()
    if scope.cancelled_caught:
        raise TransferTimeout(
            f"upload of {target.file_name} stalled: no progress for {stall_timeout:g} s "
            f"after {sent} of {target.size} bytes",
            file=target.file_name, url=target.url,
        )
    if status >= 300:
        raise TransferError(
            f"upload of {target.file_name} rejected: HTTP {status} {text.strip()}",
            file=target.file_name, url=target.url, status=status,
        )


__all__ = ["DEFAULT_STALL_TIMEOUT", "STREAM_VMDK", "UploadTarget", "device_url", "upload"]
