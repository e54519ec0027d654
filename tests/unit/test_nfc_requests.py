"""What an upload sends: method, headers and body, per kind of file item.

vCenter takes disks as a POST of a streamVmdk body, and files the import
*creates* (nvram, ISO, other non-disk items) as a PUT with ``Overwrite: t`` —
a POST of those gets 405, a bug other tools shipped. Both need a
Content-Length: the NFC server does not take chunked bodies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from asyncovf.errors import TransferError
from asyncovf.vsphere.nfc import STREAM_VMDK, UploadTarget, upload

pytestmark = pytest.mark.anyio


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
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/nfc/lease-1", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("name", "is_disk", "create", "method", "content_type"),
    [("disk-0.vmdk", True, False, "POST", STREAM_VMDK),
     ("vm.nvram", False, True, "PUT", "application/octet-stream"),
     ("tools.iso", False, True, "PUT", "application/octet-stream")],
)
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


async def test_a_source_shorter_than_announced_is_an_error_not_a_short_file(
    recorder: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    base, _ = recorder
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TransferError, match="disk-0.vmdk"):
            await upload(http, UploadTarget("disk-0.vmdk", f"{base}/disk-0.vmdk", 5000, True),
                         chunks(b"x" * 4000))
