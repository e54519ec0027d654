"""The SOAP transport's pure parts (endpoints, version choice, fault translation) and closing."""

from __future__ import annotations

import aiohttp
import anyio
import pytest
from pyVmomi import vim, vmodl

from asyncovf.errors import (
    InvalidLoginError,
    ManagedObjectNotFoundError,
    NotAuthenticatedError,
    TransportError,
    VCenterError,
)
from asyncovf.vsphere import soap
from asyncovf.vsphere.soap import (
    BOOTSTRAP_VERSION,
    Endpoint,
    SoapClient,
    fault_error,
    pick_api_version,
)


@pytest.mark.parametrize(
    ("server", "url", "host"),
    [
        ("vc.example.com", "https://vc.example.com/sdk", "vc.example.com"),
        ("127.0.0.1:8989", "https://127.0.0.1:8989/sdk", "127.0.0.1:8989"),
        ("https://vc/sdk", "https://vc/sdk", "vc"),
        ("https://vc:443/", "https://vc:443/sdk", "vc:443"),
        ("http://[::1]:80/sdk", "http://[::1]:80/sdk", "[::1]:80"),
    ],
)
def test_endpoint_accepts_hosts_and_urls(server: str, url: str, host: str) -> None:
    endpoint = Endpoint.parse(server)
    assert (endpoint.url, endpoint.host) == (url, host)


def test_endpoint_refuses_credentials_in_the_url() -> None:
    with pytest.raises(ValueError, match="put credentials in --user/--password") as caught:
        Endpoint.parse("https://admin:s3cret@vc/sdk")
    assert "s3cret" not in str(caught.value)


def test_tls_verification_is_on_unless_insecure_is_explicit() -> None:
    import ssl

    verified = Endpoint.parse("vc").ssl_context()
    assert isinstance(verified, ssl.SSLContext)
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    unverified = Endpoint.parse("vc", insecure=True).ssl_context()
    assert isinstance(unverified, ssl.SSLContext) and unverified.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("api_version", "expected"),
    [("6.5", "vim.version.version11"), ("7.0.3.0", "vim.version.v7_0_3_0"),
     ("5.9.9", BOOTSTRAP_VERSION), ("garbage", BOOTSTRAP_VERSION)],
)
def test_pick_api_version(api_version: str, expected: str) -> None:
    assert pick_api_version(api_version) == expected


def test_a_newer_server_gets_the_newest_version_pyvmomi_knows() -> None:
    assert pick_api_version("99.0.0.0").startswith("vim.version.")
    assert pick_api_version("99.0.0.0") != BOOTSTRAP_VERSION


@pytest.mark.parametrize(
    ("fault", "error_class", "text"),
    [
        (vim.fault.NotAuthenticated(msg="session gone"), NotAuthenticatedError,
         "Login: NotAuthenticated: session gone"),
        (vim.fault.InvalidLogin(msg="bad password"), InvalidLoginError,
         "Login: InvalidLogin: bad password"),
        (vmodl.fault.ManagedObjectNotFound(msg="vm-9 gone"), ManagedObjectNotFoundError,
         "Login: ManagedObjectNotFound: vm-9 gone"),
        (vim.fault.InvalidState(), VCenterError, "Login: InvalidState: (no message)"),
        (vmodl.fault.InvalidArgument(invalidProperty="spec"), VCenterError,
         "Login: InvalidArgument: property spec"),
    ],
)
def test_faults_become_our_errors_and_keep_the_fault(
    fault: vmodl.MethodFault, error_class: type[VCenterError], text: str
) -> None:
    error = fault_error(fault, "Login")
    assert type(error) is error_class
    assert str(error) == text
    assert error.fault is fault and error.method == "Login"
    assert error.fault_type == text.split(": ")[1]


@pytest.mark.anyio
async def test_closing_closes_both_pools() -> None:
    async with SoapClient(Endpoint.parse("http://127.0.0.1:9/sdk")) as client:
        pools = (client.http, client.uploads)
        assert pools[0] is not pools[1]  # SOAP calls never queue behind uploads
    assert all(pool.closed for pool in pools)
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        client.uploads  # noqa: B018


@pytest.mark.anyio
@pytest.mark.timeout(20)  # a shielded close that never ends is stopped by nothing else
@pytest.mark.parametrize("cancelled", [False, True], ids=["closing", "closing-on-ctrl-c"])
async def test_a_close_that_cannot_finish_is_given_up_after_its_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cancelled: bool
) -> None:
    # A frozen server: the pools' close waits forever. Closing must still
    # return (shielded from the caller's cancellation, cut at CLOSE_TIMEOUT).
    real_close = aiohttp.ClientSession.close
    never = anyio.Event()
    cut_short: list[aiohttp.ClientSession] = []

    async def stuck_close(self: aiohttp.ClientSession) -> None:
        try:
            await never.wait()
        except anyio.get_cancelled_exc_class():
            cut_short.append(self)
            raise

    client = SoapClient(Endpoint.parse("http://127.0.0.1:9/sdk"))
    await client.__aenter__()
    pools = [client.http, client.uploads]
    monkeypatch.setattr(soap, "CLOSE_TIMEOUT", 0.05)
    monkeypatch.setattr(aiohttp.ClientSession, "close", stuck_close)
    try:
        with anyio.fail_after(30):  # generous: the test's own guard, not the assertion
            with anyio.CancelScope() as caller:
                if cancelled:
                    caller.cancel()  # Ctrl-C arrived before the close
                await client.aclose()
        assert sorted(map(id, cut_short)) == sorted(map(id, pools))  # the bound was hit
        assert "closing the connections to 127.0.0.1:9 timed out (after 0.05 s)" in caplog.text
    finally:
        for pool in pools:
            await real_close(pool)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (503, b"too many sessions (5 live, the limit)\n",
     "Login to vc:443: HTTP 503 Service Unavailable (too many sessions (5 live, the limit)); "
     "vCenter is refusing new work: overloaded, or at its session limit"),
    (401, b"", "Login to vc:443: HTTP 401 Unauthorized"),
    (502, b"Bad Gateway", "Login to vc:443: HTTP 502 Bad Gateway; the proxy in front of "
     "vCenter could not reach it"),
    (599, b"\x1b]0;pwned\x07odd\nsecond line", "Login to vc:443: HTTP 599 (\\x1b]0;pwned\\x07odd)"),
])
def test_an_answer_that_is_not_soap_is_one_printable_line(status: int, body: bytes,
                                                          expected: str) -> None:
    error = soap.http_status_error("Login to vc:443", status, body, host="vc:443")
    assert isinstance(error, TransportError) and error.status == status
    assert str(error) == expected


def test_a_long_proxy_page_is_cut_short() -> None:
    error = soap.http_status_error("Login to vc:443", 503, b"x" * 100_000)
    assert len(str(error)) < 300
