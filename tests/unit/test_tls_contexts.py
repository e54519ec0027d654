"""TLS contexts are built once per Endpoint, in a worker thread, and shared.

``ssl.create_default_context`` reads and parses the CA files: tens of
milliseconds of blocking work. Built in every ``SoapClient.__aenter__`` it
stalled the event loop at every login of every worker; built for every pinned
upload, at every file. The oracle here is the builders themselves: how often
they ran, and on which thread.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from aiohttp import web

from asyncovf.ovf.blobs import HttpBlob, HttpSourceSettings
from asyncovf.vsphere import nfc, soap
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.nfc import pin_certificate
from asyncovf.vsphere.soap import Endpoint, SoapClient
from tests.httpserver import serve_app

CLIENTS = 5


@dataclass
class Builds:
    """Calls of one context builder, by the thread they ran on."""

    threads: list[int] = field(default_factory=list)

    def wrap(self, build: Callable[..., ssl.SSLContext]) -> Callable[..., ssl.SSLContext]:
        def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
            self.threads.append(threading.get_ident())
            return build(*args, **kwargs)
        return counted


@dataclass
class TLSServer:
    url: str
    ca_file: Path
    thumbprint: str  # SHA-1, as a lease's sslThumbprint writes it


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[TLSServer]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    sha1 = hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - vSphere's thumbprint format

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/sdk", hello)
    async with serve_app(app, ssl_context=server_context) as base:
        yield TLSServer(f"{base}/sdk", ca_file,
                        ":".join(sha1[i:i + 2] for i in range(0, len(sha1), 2)))


@pytest.fixture
def verifying(monkeypatch: pytest.MonkeyPatch) -> Iterator[Builds]:
    builds = Builds()
    monkeypatch.setattr(ssl, "create_default_context", builds.wrap(ssl.create_default_context))
    yield builds


@pytest.fixture
def pinning(monkeypatch: pytest.MonkeyPatch) -> Iterator[Builds]:
    builds = Builds()
    counted = builds.wrap(soap.build_pinning_context)
    monkeypatch.setattr(soap, "build_pinning_context", counted)
    monkeypatch.setattr(nfc, "build_pinning_context", counted)
    yield builds


@pytest.mark.anyio
async def test_clients_of_one_endpoint_share_one_context_built_off_the_loop(
    tls_server: TLSServer, verifying: Builds
) -> None:
    endpoint = Endpoint.parse(tls_server.url, ca_file=str(tls_server.ca_file))
    answers: list[str] = []

    async def log_in() -> None:
        async with SoapClient(endpoint) as client, client.http.get(endpoint.url) as response:
            answers.append(await response.text())  # the shared context verifies the server

    async with anyio.create_task_group() as group:
        for _ in range(CLIENTS):
            group.start_soon(log_in)  # all at once: they race for the first build
    async with SoapClient(endpoint) as client, client.http.get(endpoint.url) as response:
        answers.append(await response.text())

    assert answers == ["hello"] * (CLIENTS + 1)
    assert len(verifying.threads) == 1
    assert threading.get_ident() not in verifying.threads, "built on the event loop"


@pytest.mark.anyio
async def test_the_sync_and_async_contexts_are_one_and_keep_their_settings(
    verifying: Builds,
) -> None:
    verified, unverified = Endpoint.parse("vc"), Endpoint.parse("vc", insecure=True)
    context = await verified.tls_context()
    assert context is verified.ssl_context() is await verified.tls_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    context = await unverified.tls_context()
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_NONE
    assert await Endpoint.parse("http://vc/sdk").tls_context() is False
    assert len(verifying.threads) == 2  # one per endpoint, none for plain http
    assert threading.get_ident() not in verifying.threads


@pytest.mark.anyio
async def test_pinned_handshakes_share_one_pinning_context_built_off_the_loop(
    tls_server: TLSServer, pinning: Builds, verifying: Builds
) -> None:
    endpoint = Endpoint.parse(tls_server.url, ca_file=str(tls_server.ca_file))
    pins = [await pin_certificate(tls_server.url, tls_server.thumbprint,
                                  context=await endpoint.pinning_context()) for _ in range(3)]
    assert len({pin.fingerprint for pin in pins}) == 1
    assert len(pinning.threads) == 1
    assert threading.get_ident() not in pinning.threads, "built on the event loop"
    assert verifying.threads == []  # pinning needs no CA files
    context = await endpoint.pinning_context()
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)


@pytest.mark.anyio
async def test_a_pin_without_a_shared_context_still_builds_its_own_off_the_loop(
    tls_server: TLSServer, pinning: Builds, verifying: Builds
) -> None:
    await pin_certificate(tls_server.url, tls_server.thumbprint)
    assert len(pinning.threads) == 1
    assert threading.get_ident() not in pinning.threads, "built on the event loop"
    assert verifying.threads == []


def test_every_session_of_one_connection_gets_the_same_endpoint() -> None:
    # The pool opens a session per worker with connection.endpoint(): the
    # contexts are shared only if that is one object, not equal ones.
    settings = ConnectionSettings(server="vc.example.com", username="u", password="p",
                                  insecure=True)
    endpoint = settings.endpoint()
    assert settings.endpoint() is endpoint
    assert endpoint == Endpoint.parse("vc.example.com", insecure=True)
    assert "_endpoint" not in repr(settings) and settings == ConnectionSettings(
        server="vc.example.com", username="u", password="p", insecure=True)


@pytest.mark.anyio
async def test_a_package_server_ca_file_is_loaded_once_off_the_loop_for_every_read(
    tls_server: TLSServer, verifying: Builds
) -> None:
    # --source-ca-file: every read of every member opens an HTTP session; each
    # used to load the CA file on the loop.
    settings = HttpSourceSettings(ca_file=str(tls_server.ca_file))
    blob = HttpBlob(tls_server.url, settings)
    sizes = [await blob.size() for _ in range(3)]
    assert sizes == [len("hello")] * 3  # the cached context still verifies the server
    assert len(verifying.threads) == 1
    assert threading.get_ident() not in verifying.threads, "built on the event loop"
    assert await HttpSourceSettings(insecure=True).ssl_context() is False
    assert await HttpSourceSettings().ssl_context() is True  # aiohttp's own default
