"""What an upload sends: method, headers and body, per kind of file item; and where.

vCenter takes disks as a POST of a streamVmdk body, and files the import
*creates* (nvram, ISO, other non-disk items) as a PUT with ``Overwrite: t`` —
a POST of those gets 405, a bug other tools shipped. Both need a
Content-Length: the NFC server does not take chunked bodies.

Device URLs name ``*`` for "the host you are talking to" (vSphere reference,
HttpNfcLeaseDeviceUrl.url); that host may be an IPv6 address, which URLs
write in brackets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from asyncovf.errors import TransferError, UntrustedTarget
from asyncovf.vsphere.nfc import (
    STREAM_VMDK,
    UploadTarget,
    check_device_host,
    device_url,
    upload,
)
from tests.httpserver import serve_app


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, dict(request.headers), body))
        if request.method == "POST" and request.path.endswith(".nvram"):
            return web.Response(status=405, text="Method Not Allowed")
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/nfc/{lease}/{name}", handle)
    async with serve_app(app) as base:
        yield f"{base}/nfc/lease-1", seen


@pytest.mark.parametrize(
    ("name", "is_disk", "create", "method", "content_type"),
    [("disk-0.vmdk", True, False, "POST", STREAM_VMDK),
     ("vm.nvram", False, True, "PUT", "application/octet-stream"),
     ("tools.iso", False, True, "PUT", "application/octet-stream")],
)
@pytest.mark.anyio
async def test_each_kind_of_file_item_is_sent_the_way_vcenter_takes_it(
    recorder: tuple[str, list[tuple[str, dict[str, str], bytes]]], name: str, is_disk: bool,
    create: bool, method: str, content_type: str,
) -> None:
    base, seen = recorder
    data = bytes(range(256)) * 40
    async with aiohttp.ClientSession() as http:
        await upload(http, UploadTarget(name, f"{base}/{name}", len(data), is_disk, create),
                     chunks(data), cookie="vmware_soap_session=abc")
    ((sent_method, headers, body),) = seen
    assert (sent_method, headers["Content-Type"], body) == (method, content_type, data)
    assert headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in headers
    assert headers.get("Overwrite") == ("t" if method == "PUT" else None)
    assert headers["Cookie"] == "vmware_soap_session=abc"


@pytest.mark.anyio
async def test_a_source_shorter_than_announced_is_an_error_not_a_short_file(
    recorder: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    base, _ = recorder
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TransferError, match="disk-0.vmdk"):
            await upload(http, UploadTarget("disk-0.vmdk", f"{base}/disk-0.vmdk", 5000, True),
                         chunks(b"x" * 4000))


@pytest.mark.anyio
async def test_a_source_longer_than_announced_fails_before_the_body_is_complete(
    recorder: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    # The chunk that completes the body waits for the source's end: a source
    # with bytes to spare is refused before vCenter has a whole (wrong) file.
    base, _ = recorder
    sent: list[int] = []
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TransferError, match="source gave 6000 bytes, expected 5000"):
            await upload(http, UploadTarget("disk-0.vmdk", f"{base}/disk-0.vmdk", 5000, True),
                         chunks(b"x" * 6000), on_bytes=sent.append)
    assert sum(sent) == 4000  # the fifth chunk, the one that completes the body, never left


@pytest.mark.parametrize(
    ("raw", "vcenter", "expected"),
    [
        ("https://*/nfc/52ab/disk-0.vmdk", "vc.example.com",
         "https://vc.example.com/nfc/52ab/disk-0.vmdk"),
        ("https://*/nfc/52ab/disk-0.vmdk", "vc.example.com:8443",
         "https://vc.example.com:8443/nfc/52ab/disk-0.vmdk"),
        ("https://*:443/nfc/52ab/disk-0.vmdk", "vc.example.com:8443",
         "https://vc.example.com:443/nfc/52ab/disk-0.vmdk"),
        ("https://*/nfc/52ab/disk-0.vmdk", "10.0.0.5", "https://10.0.0.5/nfc/52ab/disk-0.vmdk"),
        ("https://*:902/nfc/52ab/disk-0.vmdk", "10.0.0.5:443",
         "https://10.0.0.5:902/nfc/52ab/disk-0.vmdk"),
        ("https://*/nfc/52ab/disk-0.vmdk", "[fd00::1]", "https://[fd00::1]/nfc/52ab/disk-0.vmdk"),
        ("https://*/nfc/52ab/disk-0.vmdk", "[fd00::1]:8443",
         "https://[fd00::1]:8443/nfc/52ab/disk-0.vmdk"),
        ("https://*:443/nfc/52ab/disk-0.vmdk", "[fd00::1]:8443",
         "https://[fd00::1]:443/nfc/52ab/disk-0.vmdk"),
        ("https://*:443/nfc/52ab/disk-0.vmdk?x=1", "[fd00::1]",
         "https://[fd00::1]:443/nfc/52ab/disk-0.vmdk?x=1"),
        # A device URL that names its host is left alone.
        ("https://esx1.example.com/nfc/52ab/disk-0.vmdk", "[fd00::1]",
         "https://esx1.example.com/nfc/52ab/disk-0.vmdk"),
        ("https://[fd00::7]:443/nfc/52ab/disk-0.vmdk", "vc.example.com",
         "https://[fd00::7]:443/nfc/52ab/disk-0.vmdk"),
    ],
)
def test_a_star_device_host_becomes_vcenters_host_and_the_url_stays_valid(
    raw: str, vcenter: str, expected: str
) -> None:
    url = device_url(raw, vcenter)
    assert url == expected
    assert urlsplit(url).hostname  # parses: no "[fd00:443" mangling


@pytest.mark.parametrize(
    ("url", "vcenter", "esxi_hosts"),
    [
        ("https://vc.example.com/nfc/1/d.vmdk", "VC.example.com:443", frozenset()),
        ("https://ESX1.example.com/nfc/1/d.vmdk", "vc", frozenset({"esx1.example.com"})),
        ("https://10.0.0.5:443/nfc/1/d.vmdk", "10.0.0.5", frozenset()),
        ("https://[fd00::1]:443/nfc/1/d.vmdk", "[fd00::1]:443", frozenset()),
        ("https://[FD00:0:0::1]/nfc/1/d.vmdk", "[fd00::1]", frozenset()),
        ("https://[fd00::7]/nfc/1/d.vmdk", "[fd00::1]", frozenset({"fd00:0::7"})),
        ("https://[fd00::7]/nfc/1/d.vmdk", "vc", frozenset({"[FD00::7]"})),
    ],
)
def test_device_hosts_of_vcenter_or_its_esxi_hosts_are_accepted_however_spelled(
    url: str, vcenter: str, esxi_hosts: frozenset[str]
) -> None:
    check_device_host(url, vcenter, esxi_hosts)


@pytest.mark.parametrize(
    ("url", "vcenter", "esxi_hosts"),
    [
        ("https://disks.attacker.example/nfc/1/d.vmdk", "vc", frozenset({"esx1"})),
        ("https://[fd00::2]/nfc/1/d.vmdk", "[fd00::1]:443", frozenset({"fd00::3"})),
        # Not the same host as vCenter's fd00:: (a truncated "[fd00:443" once was).
        ("https://[fd00::443]/nfc/1/d.vmdk", "[fd00::1]:443", frozenset()),
        ("https://10.0.0.6/nfc/1/d.vmdk", "10.0.0.5", frozenset({"10.0.0.7"})),
    ],
)
def test_device_hosts_elsewhere_are_refused(
    url: str, vcenter: str, esxi_hosts: frozenset[str]
) -> None:
    with pytest.raises(UntrustedTarget, match="refusing to upload to"):
        check_device_host(url, vcenter, esxi_hosts)
