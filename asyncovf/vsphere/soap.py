"""The async SOAP transport: pyVmomi builds and reads the XML, aiohttp carries it.

This is the only module that knows pyVmomi's serializer. pyVmomi's own stub does
blocking I/O on ``http.client``; wrapping it in a thread would make every call
impossible to cancel (a thread outlives Ctrl-C). So we keep pyVmomi as the type
system — requests are serialized by ``SoapStubAdapter.SerializeRequest`` and
answers parsed by ``SoapResponseDeserializer`` — and POST the bytes ourselves.

One :class:`SoapClient` is one vCenter session's transport and one
``vmware_soap_session`` cookie. It is never shared between workers. It holds
two aiohttp ``ClientSession`` pools: ``http`` for SOAP calls, bounded, and
``uploads`` for NFC file uploads. They must not share a connection limit: an
upload holds its connection for as long as the file takes, and with as many
uploads as connections the lease keep-alive's HttpNfcLeaseProgress would wait
behind them while the lease times out (vSphere reference, HttpNfcLease:
"the lease times out unless the client reports progress" within
``info.leaseTimeout``).

TLS contexts are another matter: building one with ``ssl.create_default_context``
reads the CA files (tens of milliseconds of blocking I/O and parsing), and a
batch opens a session per worker and renews them. So an :class:`Endpoint` owns
its contexts, each built once, in a worker thread, and every client of that
Endpoint shares them (an ``SSLContext`` is safe to share between connections).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl

from asyncovf.errors import (
    InvalidLoginError,
    ManagedObjectNotFoundError,
    NotAuthenticatedError,
    RequestTimeout,
    TLSVerificationError,
    TransportError,
    VCenterError,
)
from asyncovf.printable import printable
from asyncovf.tls import ContextCache
from asyncovf.vsphere.calls import CallRecord
from asyncovf.vsphere.cleanup import Stage, bounded_cleanup
from asyncovf.vsphere.wirelog import WireLog

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "vmware_soap_session"

#: How long closing a client's connections may take (it must not hold up Ctrl-C).
CLOSE_TIMEOUT: Final = 5.0

#: API version used before we know the server's. RetrieveServiceContent exists in
#: every version, so the first call is safe; we then switch to the server's own.
BOOTSTRAP_VERSION: Final = "vim.version.version11"  # 6.5

_FAULT_ERRORS: Final[dict[str, type[VCenterError]]] = {
    "NotAuthenticated": NotAuthenticatedError,
    "InvalidLogin": InvalidLoginError,
    "ManagedObjectNotFound": ManagedObjectNotFoundError,
}

_USER_AGENT: Final = "asyncovf/0.1 (pyVmomi serializer; aiohttp transport)"


def _verifying_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """vCenter's context: verify by default, ``--insecure`` opts out explicitly. Blocking."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def build_pinning_context() -> ssl.SSLContext:
    """The context for hosts a lease names with an ``sslThumbprint``. Blocking.

    No CA and no host name check: authenticity comes from the thumbprint,
    which :func:`asyncovf.vsphere.nfc.pin_certificate` compares.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Endpoint:
    """Where vCenter's SOAP service lives, and how to trust it.

    An Endpoint is a value (equal when url, insecure and ca_file are equal),
    but it also carries a cache of the TLS contexts built for it, outside
    equality and ``repr``. Sharing contexts means sharing the Endpoint object,
    so whatever opens many sessions to one vCenter hands them all the same
    Endpoint rather than parsing a new one for each: ``ConnectionSettings.endpoint``
    returns one object per settings value, and every worker, cleanup and dry
    run session is opened with it. (A cache keyed by equal values would need
    module-level state, or an extra object passed down to every session.)
    """

    url: str
    insecure: bool = False
    ca_file: str | None = None
    _contexts: ContextCache = field(default_factory=ContextCache, init=False, repr=False,
                                     compare=False)

    @classmethod
    def parse(cls, server: str, *, insecure: bool = False, ca_file: str | None = None) -> Endpoint:
        """Accept ``vc.example.com``, ``host:port`` or a full ``https://host/sdk`` URL."""
        text = server.strip()
        if "://" not in text:
            text = "https://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a vCenter URL: {server!r}")
        if parts.username or parts.password:
            # Credentials in URLs end up in logs and shell history; refuse them.
            raise ValueError("put credentials in --user/--password, not in the server URL")
        path = parts.path if parts.path not in ("", "/") else "/sdk"
        return cls(
            url=urlunsplit((parts.scheme, parts.netloc, path, "", "")),
            insecure=insecure,
            ca_file=ca_file,
        )

    @property
    def host(self) -> str:
        """``host[:port]`` as it appears in URLs; NFC ``*`` hosts are replaced by it."""
        return urlsplit(self.url).netloc

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or ""

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for aiohttp: verify by default, ``--insecure`` opts out explicitly.

        Blocking the first time (it reads the CA files); async code uses
        :meth:`tls_context`. Both return the same cached context.
        """
        if urlsplit(self.url).scheme == "http":
            return False
        return self._contexts.get("vcenter", self._build_verifying)

    async def tls_context(self) -> ssl.SSLContext | bool:
        """:meth:`ssl_context`, built in a worker thread the first time."""
        if urlsplit(self.url).scheme == "http":
            return False
        return await self._contexts.get_async("vcenter", self._build_verifying)

    async def pinning_context(self) -> ssl.SSLContext:
        """The context for hosts pinned by thumbprint (:func:`build_pinning_context`).

        Built once, in a worker thread, and shared by every pinned upload.
        """
        return await self._contexts.get_async("pinning", build_pinning_context)

    def _build_verifying(self) -> ssl.SSLContext:
        return _verifying_context(self.ca_file, self.insecure)


class _NoSyncStub(SoapAdapter.SoapStubAdapter):
    """A pyVmomi stub that serializes and owns MORs but refuses blocking calls.

    Managed object references returned by our deserializer point at this stub.
    If any code touched ``vm.name`` on one, pyVmomi would block the event loop
    on ``http.client``; this makes that mistake loud instead.
    """

    def __init__(self, *, url: str, version: str) -> None:
        SoapAdapter.SoapStubAdapter.__init__(self, url=url, version=version)

    def serialize(self, mo: Any, info: Any, args: list[Any]) -> bytes:
        """The SOAP envelope for one call, exactly as pyVmomi itself would send it."""
        return bytes(SoapAdapter.SoapStubAdapterBase.SerializeRequest(self, mo, info, args))

    def InvokeMethod(self, mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:  # noqa: N802
        raise RuntimeError(
            f"blocking pyVmomi call {info.name} on {mo!r}: use SoapClient.invoke instead"
        )

    def InvokeAccessor(self, mo: Any, info: Any) -> Any:  # noqa: N802
        raise RuntimeError(
            f"blocking pyVmomi property read {info.name} on {mo!r}: use the property collector"
        )


def pick_api_version(api_version: str) -> str:
    """The pyVmomi version name matching the server's ``about.apiVersion``.

    An unknown (newer) server version falls back to the newest pyVmomi knows,
    an unknown older one to 6.5, the oldest vCenter this tool supports.
    """
    known = {
        version_id: name
        for name, version_id in VmomiSupport.versionIdMap.items()
        if name.startswith("vim.version.")
    }
    if api_version in known:
        return str(known[api_version])
    newest = str(VmomiSupport.GetServiceVersions("vim25")[0])
    try:
        wanted = tuple(int(p) for p in api_version.split("."))
        newest_id = tuple(int(p) for p in VmomiSupport.versionIdMap[newest].split("."))
    except ValueError:
        return BOOTSTRAP_VERSION
    return newest if wanted > newest_id else BOOTSTRAP_VERSION


@contextlib.contextmanager
def translate_transport_errors(host: str, what: str) -> Iterator[None]:
    """Map aiohttp's exceptions to ours where they happen (one table, one place)."""
    try:
        yield
    except aiohttp.ClientConnectorCertificateError as exc:
        raise TLSVerificationError(
            f"TLS certificate of {host} could not be verified ({exc.certificate_error}); "
            "pass --ca-file PATH with the CA that signed it, or --insecure to skip verification",
            host=host,
        ) from exc
    except aiohttp.ClientSSLError as exc:
        raise TLSVerificationError(f"TLS handshake with {host} failed: {exc}", host=host) from exc
    except aiohttp.ClientConnectorError as exc:
        raise TransportError(
            f"cannot connect to {host}: {exc.os_error.strerror or exc.os_error}", host=host
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"{what} to {host} failed: {exc or type(exc).__name__}",
                             host=host) from exc


class SoapClient:
    """vCenter's SOAP API over one aiohttp session, cancellable at every await.

    Use as an async context manager; :meth:`invoke` calls a method by its pyVmomi
    name with keyword arguments and returns pyVmomi objects, raising
    :class:`~asyncovf.errors.VCenterError` (or a subclass) for SOAP faults.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        call_timeout: float = 120.0,
        connections: int = 4,
        wire_log: WireLog | None = None,
    ) -> None:
        self.endpoint = endpoint
        #: Every call's request and answer, redacted (``--wire-log``); None: off.
        self.wire_log = wire_log
        #: Told of every call once it ended (:class:`CallRecord`): ``--concurrency
        #: auto``, the metrics and the traces listen. Empty: nothing is measured.
        self.observers: list[Callable[[CallRecord], None]] = []
        self.call_timeout = call_timeout
        self._connections = connections
        self._stub = _NoSyncStub(url=endpoint.url, version=BOOTSTRAP_VERSION)
        self._http: aiohttp.ClientSession | None = None
        self._uploads: aiohttp.ClientSession | None = None
        self._session_cookie: str | None = None
        #: Round trips made, by the vSphere API's method name (``HttpNfcLeaseComplete``, as
        #: vCenter and the simulator count them); for the report, benchmarks and tests.
        self.calls: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> SoapClient:
        context = await self.endpoint.tls_context()
        self._http = self._client_session(context, limit=self._connections)
        # No limit of its own (0): the engine's limiters (parallel disks, per
        # host, per datastore, bandwidth) already bound the uploads in flight.
        self._uploads = self._client_session(context, limit=0)
        return self

    @staticmethod
    def _client_session(context: ssl.SSLContext | bool, *, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=limit, ssl=context, enable_cleanup_closed=True)
        # We keep the session cookie ourselves: aiohttp's default jar silently
        # drops cookies from IP-address hosts such as 127.0.0.1.
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": _USER_AGENT},
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close both HTTP pools: shielded from cancellation, bounded by :data:`CLOSE_TIMEOUT`.

        Shielded so that Ctrl-C does not leave connections half-closed; bounded
        because closing waits for every transport to go (a plain-http one first
        flushes what it was sending), and a frozen server never lets it.
        Both pools close at once, so one stuck pool does not keep the other open.
        """
        if self.wire_log is not None:
            with bounded_cleanup("writing the wire log", timeout=CLOSE_TIMEOUT,
                                 stage=Stage.CLOSE):
                await anyio.to_thread.run_sync(self.wire_log.close)
        sessions = [s for s in (self._http, self._uploads) if s is not None]
        self._http = self._uploads = None
        if not sessions:
            return
        # After an interrupt, also within what is left of the shared budget.
        with bounded_cleanup(f"closing the connections to {self.endpoint.host}",
                             timeout=CLOSE_TIMEOUT, stage=Stage.CLOSE):
            async with anyio.create_task_group() as group:
                for http in sessions:
                    group.start_soon(http.close)

    @property
    def http(self) -> aiohttp.ClientSession:
        """The HTTP client of SOAP calls (at most ``connections`` at once)."""
        if self._http is None:
            raise RuntimeError("SoapClient used outside 'async with'")
        return self._http

    @property
    def uploads(self) -> aiohttp.ClientSession:
        """The HTTP client of NFC uploads: same TLS context, its own connections.

        Never the SOAP pool: see the module docstring (the lease keep-alive).
        """
        if self._uploads is None:
            raise RuntimeError("SoapClient used outside 'async with'")
        return self._uploads

    @property
    def session_cookie(self) -> str | None:
        return self._session_cookie

    def forget_session(self) -> None:
        """Drop the session cookie (it names a session the server no longer has)."""
        self._session_cookie = None

    def use_api_version(self, api_version: str) -> None:
        """Speak the server's API version from now on (after RetrieveServiceContent)."""
        self._stub = _NoSyncStub(url=self.endpoint.url, version=pick_api_version(api_version))

    def mor(self, type_name: str, value: str) -> Any:
        """A managed object reference bound to this client: ``mor("VirtualMachine", "vm-4")``."""
        return VmomiSupport.GetVmodlType(f"vim.{type_name}")(value, self._stub)

    # -- calls -------------------------------------------------------------------

    async def invoke(self, mo: Any, method: str, **kwargs: Any) -> Any:
        """Call ``method`` (pyVmomi name, e.g. ``"ImportVApp"``) on ``mo``."""
        return await self.send(mo, method, self.serialize(mo, method, **kwargs))

    def serialize(self, mo: Any, method: str, **kwargs: Any) -> bytes:
        """The request :meth:`invoke` would send, as pyVmomi writes it in this API version."""
        info = type(mo)._GetMethodInfo(method)
        names = {param.name for param in info.params}
        unknown = set(kwargs) - names
        if unknown:
            raise TypeError(f"{method}() got unexpected arguments {sorted(unknown)}")
        args = [kwargs.get(param.name) for param in info.params]
        return self._stub.serialize(mo, info, args)

    async def send(self, mo: Any, method: str, body: bytes) -> Any:
        """Call ``method`` on ``mo`` with a request serialized beforehand.

        ``body`` is :meth:`serialize`'s for the call, or text equal to it (a
        :class:`~asyncovf.vsphere.template.RequestTemplate`'s, which skips
        pyVmomi's walk of a request shape already walked once).
        """
        info = type(mo)._GetMethodInfo(method)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": self._stub.versionId,
        }
        if self._session_cookie:
            headers["Cookie"] = f"{SESSION_COOKIE}={self._session_cookie}"
        self.calls[info.wsdlName] = self.calls.get(info.wsdlName, 0) + 1

        host = self.endpoint.host
        status: int | None = None
        payload: bytes | None = None
        answer_headers: list[tuple[str, str]] = []
        started = time.monotonic()
        error: str | None = None
        fault: str | None = None
        try:
            with anyio.fail_after(self.call_timeout):
                with translate_transport_errors(host, f"{info.wsdlName} call"):
                    async with self.http.post(
                        self.endpoint.url, data=body, headers=headers
                    ) as response:
                        self._remember_cookie(response)
                        status = response.status
                        if self.wire_log is not None:
                            answer_headers = list(response.headers.items())
                        payload = await response.read()
        except TimeoutError as exc:
            error = fault = f"no answer in {self.call_timeout:g} s"
            raise RequestTimeout(
                f"{info.wsdlName} to {host} got no answer in {self.call_timeout:g} s", host=host
            ) from exc
        except BaseException as exc:
            error = str(exc) or type(exc).__name__
            fault = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else \
                "connection"
            raise
        finally:
            if self.wire_log is not None:  # queued, never awaited: an interrupt loses nothing
                self.wire_log.record(info.wsdlName, self.endpoint.url, headers, body,
                                     status=status, answer_headers=answer_headers,
                                     answer=payload, seconds=time.monotonic() - started,
                                     error=error)
            if fault is not None:
                self._tell(info.wsdlName, started, fault)
        assert status is not None and payload is not None

        if status not in (200, 500):
            self._tell(info.wsdlName, started, f"HTTP {status}")
            raise http_status_error(f"{info.wsdlName} to {host}", status, payload, host=host)
        try:
            result = SoapAdapter.SoapResponseDeserializer(self._stub).Deserialize(
                payload, info.result
            )
        except Exception as exc:  # expat and pyVmomi raise many types; all mean "not SOAP"
            self._tell(info.wsdlName, started, "unreadable answer")
            raise TransportError(
                f"{info.wsdlName} to {host}: unreadable answer (HTTP {status}): {exc}", host=host
            ) from exc
        if status == 500 or isinstance(result, vmodl.MethodFault):
            raised = fault_error(result, info.wsdlName)
            self._tell(info.wsdlName, started, raised.fault_type or "fault")
            raise raised from (
                result if isinstance(result, BaseException) else None
            )
        self._tell(info.wsdlName, started, None)
        return result

    def _tell(self, method: str, started: float, fault: str | None) -> None:
        if not self.observers:
            return
        record = CallRecord(method, started, time.monotonic() - started, fault)
        for observer in self.observers:
            observer(record)

    def _remember_cookie(self, response: aiohttp.ClientResponse) -> None:
        for header in response.headers.getall("Set-Cookie", ()):
            try:
                morsel = SimpleCookie(header).get(SESSION_COOKIE)
            except CookieError:
                continue
            if morsel is not None:
                self._session_cookie = morsel.value


#: What an HTTP status that is not SOAP's usually means, said in the error.
_STATUS_MEANING: Final = {
    503: "vCenter is refusing new work: overloaded, or at its session limit",
    502: "the proxy in front of vCenter could not reach it",
    504: "the proxy in front of vCenter got no answer from it in time",
}


def http_status_error(what: str, status: int, payload: bytes, *,
                      host: str | None = None) -> TransportError:
    """An answer that is not SOAP (a proxy's refusal): one printable line saying so.

    The body comes from whatever stands in front of vCenter; its first line is
    shown, bounded and escaped, never as a Python bytes literal.
    """
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    text = payload[:400].decode("utf-8", "replace").strip().splitlines()
    detail = printable(text[0][:160]) if text else ""
    message = f"{what}: HTTP {status}" + (f" {reason}" if reason else "")
    if detail and detail not in (f"{status} {reason}", reason):
        message += f" ({detail})"
    if status in _STATUS_MEANING:
        message += f"; {_STATUS_MEANING[status]}"
    return TransportError(message, host=host, status=status)


def fault_error(fault: Any, method: str) -> VCenterError:
    """Wrap a pyVmomi fault in our hierarchy, keeping the fault object."""
    if not isinstance(fault, vmodl.MethodFault):
        return VCenterError(f"{method}: unexpected answer {fault!r}", method=method)
    fault_type = type(fault).__name__.rsplit(".", 1)[-1]
    message = describe_fault(fault)
    error_class = _FAULT_ERRORS.get(fault_type, VCenterError)
    return error_class(f"{method}: {fault_type}: {message}", fault=fault, method=method)


def describe_fault(fault: Any) -> str:
    """The most useful human text a fault carries (vCenter puts it in different places).

    Accepts a ``MethodFault`` or a ``LocalizedMethodFault`` (what task and lease
    ``error`` properties hold): its localized message, then the inner fault.
    """
    if isinstance(fault, vmodl.LocalizedMethodFault):
        inner = fault.fault
        inner_type = type(inner).__name__.rsplit(".", 1)[-1] if inner is not None else ""
        message = fault.localizedMessage or (describe_fault(inner) if inner is not None else "")
        return f"{inner_type}: {message}" if inner_type else message or "(no message)"
    parts: list[str] = []
    msg = getattr(fault, "msg", None)
    if msg:
        parts.append(str(msg))
    for localized in getattr(fault, "faultMessage", None) or ():
        text = getattr(localized, "message", None)
        if text and text not in parts:
            parts.append(str(text))
    if isinstance(fault, vim.fault.InvalidState | vmodl.fault.InvalidArgument):
        prop = getattr(fault, "invalidProperty", None)
        if prop:
            parts.append(f"property {prop}")
    return "; ".join(parts) or "(no message)"


__all__ = [
    "BOOTSTRAP_VERSION",
    "CLOSE_TIMEOUT",
    "Endpoint",
    "SESSION_COOKIE",
    "SoapClient",
    "build_pinning_context",
    "describe_fault",
    "fault_error",
    "http_status_error",
    "pick_api_version",
    "translate_transport_errors",
]
