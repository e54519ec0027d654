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

import hashlib
import ipaddress
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
from anyio.streams.tls import TLSAttribute

from asyncovf.errors import TransferError, TransferTimeout, TransportError, UntrustedTarget
from asyncovf.vsphere.soap import build_pinning_context, translate_transport_errors

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
    #: The lease's SHA-1 thumbprint of the host serving ``url`` (AA:BB:…), if given.
    ssl_thumbprint: str | None = None


def check_device_host(url: str, vcenter_host: str, esxi_hosts: frozenset[str]) -> None:
    """Refuse a device URL that points anywhere but vCenter or one of its ESXi hosts.

    A lease's URLs come from vCenter, but they decide where disk contents go:
    a tampered or misconfigured answer must not make us send them elsewhere.
    Hosts are compared in a canonical form (:func:`_canonical_host`), so an
    IPv6 address matches however it is spelled: bracketed in a URL, bare in
    the inventory, compressed or not.
    """
    host = urlsplit(url).hostname or ""
    allowed = {_canonical_host(urlsplit(f"//{vcenter_host}").hostname or "")}
    allowed |= {_canonical_host(h) for h in esxi_hosts}
    if not host or _canonical_host(host) not in allowed:
        raise UntrustedTarget(
            f"refusing to upload to {host or url!r}: the device URL names neither vCenter "
            "nor an ESXi host of its inventory",
            url=url,
        )


def _canonical_host(host: str) -> str:
    """One spelling per host: IP addresses in their compressed form, names in lower case.

    ``FD00:0:0::1``, ``fd00::1`` and ``[fd00::1]`` are the same host; the
    inventory names an ESXi host by whatever was typed when it was added.
    """
    text = host.strip().removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text.lower()


def _split_netloc(netloc: str) -> tuple[str, str]:
    """``host[:port]`` → (host as written in URLs, port or ""); IPv6 keeps its brackets."""
    if netloc.startswith("["):
        end = netloc.find("]") + 1
        if end == 0:
            raise ValueError(f"unterminated IPv6 address in {netloc!r}")
        host, rest = netloc[:end], netloc[end:]
        return host, rest.removeprefix(":")
    host, colon, port = netloc.rpartition(":")
    return (host, port) if colon else (netloc, "")


def _normalize_thumbprint(text: str) -> str:
    return text.replace(":", "").strip().lower()


async def pin_certificate(
    url: str, thumbprint: str, *, context: ssl.SSLContext | None = None
) -> aiohttp.Fingerprint:
    """Check the host's certificate against the lease's SHA-1 thumbprint; pin it.

    vSphere gives SHA-1 thumbprints; aiohttp pins SHA-256 fingerprints. So we
    fetch the certificate once, compare its SHA-1, and return a SHA-256 pin
    that the upload's own connection must then present: the same certificate.

    ``context`` should be :meth:`Endpoint.pinning_context` (verification off:
    authenticity comes from the thumbprint instead), built once and shared;
    without it, a fresh one is built for this call, in a worker thread.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    if context is None:
        context = await anyio.to_thread.run_sync(build_pinning_context)
    with translate_transport_errors(f"{host}:{port}", "TLS handshake"):
        stream = await anyio.connect_tcp(host, port, tls=True, ssl_context=context,
                                         tls_hostname=host)
        async with stream:
            der = stream.extra(TLSAttribute.peer_certificate_binary)
    if der is None:
        raise UntrustedTarget(f"{host} presented no TLS certificate", url=url)
    actual = hashlib.sha1(der).hexdigest()  # noqa: S324 - vSphere's thumbprint format
    if actual != _normalize_thumbprint(thumbprint):
        got = ":".join(actual[i:i + 2] for i in range(0, len(actual), 2)).upper()
        raise UntrustedTarget(
            f"TLS certificate of {host}:{port} does not match the lease's sslThumbprint "
            f"(expected {thumbprint}, got {got})",
            url=url,
        )
    return aiohttp.Fingerprint(hashlib.sha256(der).digest())


def device_url(raw_url: str, vcenter_host: str) -> str:
    """Replace the ``*`` host vCenter (and vcsim) put in NFC URLs with the vCenter host.

    vSphere reference, HttpNfcLeaseDeviceUrl.url: "the host part may be '*'",
    meaning "the host you are talking to". ``vcenter_host`` is ``host[:port]``
    as in URLs (:attr:`Endpoint.host`), an IPv6 address in brackets. The port
    is the device URL's when it names one (``*:443``), else vCenter's.
    """
    parts = urlsplit(raw_url)
    star, device_port = _split_netloc(parts.netloc)
    if star != "*":
        return raw_url
    host, vcenter_port = _split_netloc(vcenter_host)
    port = device_port or vcenter_port
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def upload(
    http: aiohttp.ClientSession,
    target: UploadTarget,
    chunks: AsyncIterator[bytes],
    *,
    on_bytes: Callable[[int], None] | None = None,
    throttle: Callable[[int], Awaitable[None]] | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    cookie: str | None = None,
    pin: aiohttp.Fingerprint | None = None,
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

    async def in_order() -> AsyncGenerator[bytes, None]:
        # The chunk that completes the body is held until the source has ended
        # (its checks passed), and nothing is awaited after it is sent: the
        # server answers once it has Content-Length bytes, and aiohttp cancels
        # a writer task still running then and closes the connection instead
        # of keeping it, which cost every upload a new TLS connection.
        received = 0
        final: bytes | None = None
        async for chunk in chunks:
            received += len(chunk)
            if final is not None:
                continue  # past target.size: only counted, for the error below
            if received >= target.size:
                final = chunk
                continue
            yield chunk
        if received != target.size:
            raise TransferError(
                f"{target.file_name}: source gave {received} bytes, expected {target.size}",
                file=target.file_name, url=target.url,
            )
        if final is not None:
            yield final

    async def body() -> AsyncGenerator[bytes, None]:
        nonlocal sent
        # Runs in aiohttp's writer task. It owns no resource: the caller owns
        # the source (and closes it), so stopping iteration anywhere is safe.
        async with aclosing(in_order()) as ordered:
            async for chunk in ordered:
                if throttle is not None:
                    await throttle(len(chunk))
                yield chunk
                sent += len(chunk)
                scope.deadline = anyio.current_time() + stall_timeout
                if on_bytes is not None:
                    on_bytes(len(chunk))

    stream = body()
    try:
        with scope:
            with translate_transport_errors(host, f"upload of {target.file_name}"):
                async with http.request(method, target.url, data=stream, headers=headers,
                                        ssl=pin if pin is not None else True) as response:
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


__all__ = ["DEFAULT_STALL_TIMEOUT", "STREAM_VMDK", "UploadTarget", "check_device_host",
           "device_url", "pin_certificate", "upload"]
