"""Streaming a job's files to its lease's device URLs, verified and retried.

Each file item vCenter asked for is paired with its device URL and package
member (:func:`upload_targets`); each upload streams from a freshly opened
source, checking the manifest digest on the way, and a transient failure
(connection trouble, a stall, a 5xx) is retried with backoff — from the start,
since an NFC upload cannot resume. Memory stays at one chunk per upload in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from asyncovf.engine.options import ImportOptions
from asyncovf.engine.phases import JobState
from asyncovf.errors import RetryScope, TransferError, first_error, retryable
from asyncovf.ovf.content import open_content
from asyncovf.ovf.package import Package
from asyncovf.vsphere.nfc import UploadTarget, device_url, pin_certificate, upload
from asyncovf.vsphere.session import VCenterSession, backoff
from asyncovf.vsphere.soap import SESSION_COOKIE

log = logging.getLogger(__name__)

ProgressCallback = Callable[[JobState], None]
UploadSlot = Callable[[UploadTarget], AbstractAsyncContextManager[None]]
Throttle = Callable[[int], Awaitable[None]]
HostAddresses = Callable[[], Awaitable[frozenset[str]]]
FinishMark = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class JobHooks:
    """How the engine shapes one import without the job knowing about pools.

    ``upload_slot`` is entered around each file upload (per-host and
    per-datastore caps); ``throttle`` is awaited for every chunk (bandwidth);
    ``host_addresses`` reads the ESXi hosts' management addresses, asked only
    when a device URL names a host by something other than its inventory name;
    ``finish_mark`` writes the finished mark of a VM that has no post-import
    step, for its worker to check later (:mod:`asyncovf.engine.mark_checks`).
    """

    on_progress: ProgressCallback | None = None
    upload_slot: UploadSlot | None = None
    throttle: Throttle | None = None
    host_addresses: HostAddresses | None = None
    finish_mark: FinishMark | None = None


def upload_targets(
    spec_result: Any, lease_info: Any, vcenter_host: str, package: Package
) -> list[UploadTarget]:
    """Pair each file item vCenter asked for with its device URL and package member."""
    urls = {url.importKey: url for url in (lease_info.deviceUrl or ())}
    targets: list[UploadTarget] = []
    for item in spec_result.fileItem or ():
        device = urls.get(item.deviceId)
        if device is None:
            raise TransferError(
                f"lease has no device URL for {item.path} (device {item.deviceId})",
                file=item.path,
            )
        size = package.content_size(item.path)
        targets.append(
            UploadTarget(
                file_name=item.path,
                url=device_url(device.url, vcenter_host),
                size=size,
                is_disk=bool(device.disk),
                create=bool(item.create),
                ssl_thumbprint=device.sslThumbprint or None,
            )
        )
    return targets


async def upload_all(
    session: VCenterSession,
    package: Package,
    targets: list[UploadTarget],
    options: ImportOptions,
    on_bytes: Callable[[int], None],
    hooks: JobHooks,
    state: JobState,
) -> None:
    """Upload every file item: in order, or ``options.parallel_disks`` at a time.

    The API requires CreateImportSpecResult.fileItem in order when delta disks
    (a disk with a parent) are present, so then it is always one at a time.
    """
    parallel = max(1, options.parallel_disks or 1)
    if parallel > 1 and any(d.parent_ref for d in package.descriptor.disks):
        log.info("%s: delta disks present; uploading in order", state.name)
        parallel = 1
    if parallel == 1 or len(targets) == 1:
        for target in targets:
            await upload_verified(session, package, target, options, on_bytes, hooks, state)
        return
    limiter = anyio.CapacityLimiter(parallel)

    async def one(target: UploadTarget) -> None:
        async with limiter:
            await upload_verified(session, package, target, options, on_bytes, hooks, state)

    try:
        async with anyio.create_task_group() as group:
            for target in targets:
                group.start_soon(one, target)
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None


def _note_upload_retry(target: UploadTarget, retry: RetryCallState, state: JobState | None) -> None:
    error = retry.outcome.exception() if retry.outcome else None
    log.warning("upload of %s failed (%s); retrying", target.file_name, error)
    if state is not None:
        state.upload_retries += 1


async def upload_verified(
    session: VCenterSession,
    package: Package,
    target: UploadTarget,
    options: ImportOptions,
    on_bytes: Callable[[int], None],
    hooks: JobHooks | None = None,
    state: JobState | None = None,
) -> None:
    """Stream one file to vCenter, checking its manifest digest on the way.

    Transient failures (connection errors, stalls, 5xx) are retried with
    exponential backoff and jitter; each attempt reopens the source and starts
    a fresh digest, and the bytes a failed attempt counted are taken back.
    """
    hooks = hooks or JobHooks()
    pin = None
    if target.ssl_thumbprint and target.url.startswith("https:") and \
            not session.endpoint.insecure:
        pin = await pin_certificate(target.url, target.ssl_thumbprint,
                                    context=await session.endpoint.pinning_context())
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, options.upload_attempts)),
        wait=backoff(options.upload_initial_wait, options.upload_max_wait),
        retry=retry_if_exception(lambda error: retryable(error, RetryScope.UPLOAD)),
        before_sleep=lambda rs: _note_upload_retry(target, rs, state),
        reraise=True,
    )
    cookie = session.client.session_cookie
    sent = 0
    with state.watch.file(target.file_name) if state and state.watch else nullcontext():
        async for attempt in retrying:
            with attempt:
                if sent:
                    on_bytes(-sent)  # a retry starts from zero: take back the failed attempt's
                sent = 0

                def count(n: int) -> None:
                    nonlocal sent
                    sent += n
                    on_bytes(n)

                slot = hooks.upload_slot(target) if hooks.upload_slot else nullcontext()
                async with slot, open_content(package, target.file_name,
                                              verify=options.verify_manifest,
                                              chunk_size=options.chunk_size) as content:
                    await upload(session.client.uploads, target, content.chunks(),
                                 on_bytes=count, throttle=hooks.throttle,
                                 stall_timeout=options.stall_timeout, pin=pin,
                                 cookie=f"{SESSION_COOKIE}={cookie}" if cookie else None)


__all__ = [
    "HostAddresses",
    "JobHooks",
    "ProgressCallback",
    "Throttle",
    "UploadSlot",
    "upload_all",
    "upload_targets",
    "upload_verified",
]
