"""Pull mode: the ESXi host fetches a job's files from the package's web server itself.

vSphere API reference, HttpNfcLease (API 6.7 and later):

* ``capabilities.pullModeSupported`` is known only once the lease exists, so
  the job asks after ImportVApp, and uploads as usual when it is false (or the
  vCenter speaks an older API);
* ``HttpNfcLeasePullFromUrls_Task`` takes one HttpNfcLeaseSourceFile per file
  item: ``targetDeviceId`` (the item's device, the lease's importKey), ``url``,
  ``memberName`` for a file inside an OVA (the URL is then the OVA's),
  ``size``, ``create`` for a file that is not a disk, the source server's
  ``sslThumbprint`` when it is https, and ``httpHeaders`` (here the
  credentials a URL carried, as Basic authorization, never in the URL the host
  logs);
* the task's progress is the transfer's: it is what the lease guard reports
  to keep the lease alive.

The client never reads the disks, so it cannot check the manifest's digests
(HttpNfcLeaseGetManifest is documented for exports, not imports): a pulled
job says so (:data:`PULL_DIGESTS`). Only files stored as they are sent can be
pulled: a gzip-compressed or chunked file is pushed as before.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import anyio
from anyio.streams.tls import TLSAttribute
from pyVmomi import vim

from asyncovf.engine.phases import JobState
from asyncovf.errors import TaskError, TransferError, error_text
from asyncovf.ovf.blobs import HttpBlob, HttpSourceSettings
from asyncovf.ovf.package import Package
from asyncovf.vsphere.lease import LeaseGuard
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.soap import describe_fault
from asyncovf.vsphere.tasks import cancel_task_bounded

log = logging.getLogger(__name__)

#: What a pulled job's report says of the manifest's digests.
PULL_DIGESTS: Final = "not checked (pulled by the host)"
#: The warning of a job that asked to be pulled and was uploaded (the reason follows).
PULL_NOT_USED: Final = "pull mode not used, the disks were uploaded"
#: The first API with pull mode.
PULL_API: Final = (6, 7)
#: How long a source server may take to show its certificate.
THUMBPRINT_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class PullFile:
    """One HttpNfcLeaseSourceFile, before it is a pyVmomi object."""

    device_id: str
    url: str  # without credentials
    member_name: str | None
    size: int
    create: bool
    ssl_thumbprint: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def source_file(self) -> Any:
        return vim.HttpNfcLease.SourceFile(
            targetDeviceId=self.device_id, url=self.url, memberName=self.member_name,
            create=self.create, size=self.size, sslThumbprint=self.ssl_thumbprint,
            httpHeaders=[vim.KeyValue(key=key, value=value) for key, value in self.headers]
            or None)


def unpullable(package: Package) -> str | None:
    """Why a host could not fetch ``package``'s files as they are sent; None: it can."""
    for found in package.files.values():
        if len(found.parts) != 1 or not isinstance(found.parts[0].blob, HttpBlob):
            return f"{found.href} is not one file on a web server"
        if found.compression:
            return f"{found.href} is {found.compression}-compressed (the host cannot unpack it)"
    return None


def pull_files(spec_result: Any, package: Package,
               thumbprints: Mapping[str, str] | None = None) -> list[PullFile]:
    """One :class:`PullFile` per file item vCenter asked for, from the package's members;
    ``thumbprints`` by ``host:port`` of the https servers."""
    files = []
    for item in spec_result.fileItem or ():
        member = package.file(item.path).parts[0]
        blob = member.blob
        assert isinstance(blob, HttpBlob)  # unpullable() said so
        url, headers = _without_credentials(blob.url)
        files.append(PullFile(device_id=str(item.deviceId), url=url,
                              member_name=member.name if package.kind == "ova" else None,
                              size=member.size, create=bool(item.create),
                              ssl_thumbprint=(thumbprints or {}).get(_server(url)),
                              headers=headers))
    return files


async def pull_plan(session: VCenterSession, lease: Any, spec_result: Any,
                    package: Package, state: JobState) -> list[PullFile] | None:
    """The files the lease's host is to pull, or None (why in ``state.warnings``): the
    package cannot be pulled as stored, or the lease cannot pull. The job then uploads."""
    why = unpullable(package) or await lease_pulls(session, lease)
    if why is not None:
        state.warnings.append(f"{PULL_NOT_USED}: {why}")
        log.info("%s: %s: %s", state.name, PULL_NOT_USED, why)
        return None
    thumbprints: dict[str, str] = {}
    for found in package.files.values():
        blob = found.parts[0].blob
        assert isinstance(blob, HttpBlob)
        server = _server(blob.url)
        if server not in thumbprints:
            thumbprint = await source_thumbprint(blob.url, blob.settings)
            if thumbprint is not None:
                thumbprints[server] = thumbprint
    return pull_files(spec_result, package, thumbprints)


def _server(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme.lower() == "https" else 80
    return f"{(parts.hostname or '').lower()}:{parts.port or default}"


def _without_credentials(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, ()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    secret = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    header = "Basic " + base64.b64encode(secret.encode()).decode("ascii")
    return parts._replace(netloc=host).geturl(), (("Authorization", header),)


async def source_thumbprint(url: str, settings: HttpSourceSettings) -> str | None:
    """The SHA-1 thumbprint of an https source server's certificate (None for http).

    Read over a TLS connection verified as the client verified the package
    (``--source-ca-file``, ``--source-insecure``): the host is told to trust the
    certificate the client trusted.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        return None
    context = await settings.ssl_context()
    if context is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif context is True:
        context = ssl.create_default_context()
    host = parts.hostname or ""
    try:
        with anyio.fail_after(THUMBPRINT_TIMEOUT):
            stream = await anyio.connect_tcp(host, parts.port or 443, tls=True,
                                             ssl_context=context, tls_hostname=host)
            async with stream:
                certificate = stream.extra(TLSAttribute.peer_certificate_binary)
    except (OSError, TimeoutError, ssl.SSLError, anyio.BrokenResourceError) as exc:
        raise TransferError(f"cannot read the certificate of {host}: {error_text(exc)}",
                            file=None) from exc
    if certificate is None:
        raise TransferError(f"{host} showed no certificate", file=None)
    digest = hashlib.sha1(certificate).hexdigest().upper()  # noqa: S324 - the API's thumbprint
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


async def lease_pulls(session: VCenterSession, lease: Any) -> str | None:
    """Why the lease cannot pull (one line), or None when it can."""
    version = tuple(int(part) for part in session.api_version.split(".")[:2] if part.isdigit())
    if version < PULL_API:
        return f"vCenter speaks API {session.api_version}; pull mode needs 6.7"
    capabilities = (await session.retrieve(lease, ["capabilities"]))["capabilities"]
    if not getattr(capabilities, "pullModeSupported", False):
        return "the lease's host does not support pull mode"
    return None


async def pull_all(session: VCenterSession, guard: LeaseGuard, files: list[PullFile],
                   state: JobState, on_bytes: Callable[[int], None]) -> None:
    """HttpNfcLeasePullFromUrls_Task, waited for; its progress is the lease's.

    A pull that fails, or a job that is cancelled while the host pulls, cancels
    the task (bounded, shielded) before the lease guard aborts the lease, so no
    host goes on writing into a lease being taken down.
    """
    total = sum(f.size for f in files)
    task = await session.invoke(guard.lease, "PullFromUrls",
                                files=[f.source_file() for f in files])
    reported = 0

    def progress(info: Any) -> None:
        nonlocal reported
        done = total if info.state == vim.TaskInfo.State.success \
            else total * int(info.progress or 0) // 100
        if done > reported:
            on_bytes(done - reported)
            reported = done

    try:
        await session.wait_for_task(task, on_info=progress)
    except TaskError as exc:  # the task ended: nothing to cancel
        raise TransferError(f"the host's pull failed: {describe_fault(exc.fault)}",
                            file=files[0].url if len(files) == 1 else None) from exc
    except BaseException:
        await cancel_task_bounded(session, task, state.cleanup_errors,
                                  what=f"cancelling {state.name}'s pull task {task._moId}")
        raise


__all__ = ["PULL_API", "PULL_DIGESTS", "PULL_NOT_USED", "PullFile", "lease_pulls", "pull_all",
           "pull_files", "pull_plan", "source_thumbprint", "unpullable"]
