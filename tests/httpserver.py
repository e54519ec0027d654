"""A small web server for package sources in tests: a directory over http(s).

It serves files with or without ``Range`` support (aiohttp's FileResponse
honours Range; the plain mode ignores it, as ``python3 -m http.server`` does),
can cut the connection after N bytes for the first K GETs of a file (a flaky
mirror), and counts requests, by client too, so tests can assert how a file was
read and by whom.
"""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
from aiohttp import web


@dataclass
class ServedDirectory:
    root: Path
    ranges: bool = True
    head: bool = True
    #: name -> (cut after this many bytes, for this many GETs)
    cut: dict[str, tuple[int, int]] = field(default_factory=dict)
    gets: Counter[str] = field(default_factory=Counter)
    range_gets: Counter[str] = field(default_factory=Counter)
    #: GETs by (client, name): "asyncovf" for aiohttp's User-Agent (the tool), else
    #: the agent's product token ("Go-http-client": the simulator's host pulling).
    gets_by: Counter[tuple[str, str]] = field(default_factory=Counter)
    base_url: str = ""

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.method == "GET":
            self.gets[name] += 1
            agent = request.headers.get("User-Agent", "").split("/")[0]
            self.gets_by["asyncovf" if "aiohttp" in request.headers.get("User-Agent", "")
                         else agent, name] += 1
            if "Range" in request.headers:
                self.range_gets[name] += 1
        path = (self.root / name).resolve()  # noqa: ASYNC240 - test server, tiny
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():  # noqa: ASYNC240
            raise web.HTTPNotFound()
        if request.method == "HEAD" and not self.head:
            raise web.HTTPMethodNotAllowed("HEAD", ["GET"])
        cut = self.cut.get(name)
        if request.method == "GET" and cut is not None and cut[1] > 0:
            self.cut[name] = (cut[0], cut[1] - 1)
            return await self._send_plain(request, path, stop_after=cut[0])
        if self.ranges:
            return web.FileResponse(path, chunk_size=256 * 1024)
        return await self._send_plain(request, path)

    async def _send_plain(self, request: web.Request, path: Path,
                          stop_after: int | None = None) -> web.StreamResponse:
        size = (await anyio.to_thread.run_sync(path.stat)).st_size
        response = web.StreamResponse(status=200, headers={"Content-Length": str(size)})
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        sent = 0
        handle = await anyio.to_thread.run_sync(open, path, "rb")
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(handle.read, 256 * 1024)
                if not chunk:
                    break
                if stop_after is not None and sent + len(chunk) > stop_after:
                    await response.write(chunk[: stop_after - sent])
                    assert request.transport is not None
                    request.transport.close()  # a mirror dropping the connection
                    return response
                await response.write(chunk)
                sent += len(chunk)
        finally:
            await anyio.to_thread.run_sync(handle.close)
        await response.write_eof()
        return response


@asynccontextmanager
async def serve_directory(root: Path, *, ranges: bool = True, head: bool = True,
                          ssl_context: ssl.SSLContext | None = None
                          ) -> AsyncIterator[ServedDirectory]:
    served = ServedDirectory(root, ranges=ranges, head=head)
    app = web.Application()
    app.router.add_route("GET", "/{name:.+}", served.handle)
    app.router.add_route("HEAD", "/{name:.+}", served.handle)
    async with serve_app(app, ssl_context=ssl_context) as base_url:
        served.base_url = base_url
        yield served


@asynccontextmanager
async def serve_app(app: web.Application, *, ssl_context: ssl.SSLContext | None = None
                    ) -> AsyncIterator[str]:
    """``app`` served on a free loopback port until the block ends; yields its base URL
    (``http://127.0.0.1:PORT``, or https with ``ssl_context``)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


__all__ = ["ServedDirectory", "serve_app", "serve_directory"]
