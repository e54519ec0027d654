"""One import, phase by phase: CreateImportSpec → ImportVApp → lease → uploads → Complete
→ the post-import steps asked for (extra config → OVF environment → hardware upgrade →
template → power-on → wait for IP).

The phases are an enum with one transition table; an illegal transition raises,
so a bug in the orchestration shows up as an error rather than as a report
that lies. Each phase's duration is recorded for the report.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final

import anyio
from pyVmomi import vim
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from asyncovf.engine import postimport
from asyncovf.errors import (
    ImportSpecRejected,
    InputError,
    PostImportError,
    TransferError,
    TransferTimeout,
    UntrustedTarget,
    VCenterError,
    first_error,
)
from asyncovf.ovf.content import open_content
from asyncovf.ovf.environment import environment_properties, ovf_environment
from asyncovf.ovf.package import DEFAULT_CHUNK_SIZE, Package
from asyncovf.vsphere.inventory import Placement
from asyncovf.vsphere.lease import CLEANUP_TIMEOUT, LeaseGuard
from asyncovf.vsphere.nfc import (
    UploadTarget,
    check_device_host,
    device_url,
    pin_certificate,
    upload,
)
from asyncovf.vsphere.session import VCenterSession, backoff
from asyncovf.vsphere.soap import SESSION_COOKIE, describe_fault

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    PENDING = "pending"
    SPEC = "spec"
    IMPORT = "import"
    LEASE_WAIT = "lease_wait"
    UPLOAD = "upload"
    COMPLETE = "complete"
    # The post-import steps, in the order they run (POST_IMPORT_STEPS).
    EXTRA_CONFIG = "extra_config"
    INJECT_OVF_ENV = "inject_ovf_env"
    UPGRADE_HARDWARE = "upgrade_hardware"
    MARK_AS_TEMPLATE = "mark_as_template"
    POWER_ON = "power_on"
    WAIT_FOR_IP = "wait_for_ip"
    ABORT = "abort"
    IMPORTED = "imported"
    FAILED = "failed"
    ABORTED = "aborted"


#: After HttpNfcLeaseComplete, in this order; each runs only when asked for.
POST_IMPORT_STEPS: Final = (Phase.EXTRA_CONFIG, Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE,
                            Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.WAIT_FOR_IP)


_TRANSITIONS: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.PENDING: frozenset({Phase.SPEC, Phase.FAILED, Phase.ABORTED}),
    Phase.SPEC: frozenset({Phase.IMPORT, Phase.FAILED, Phase.ABORTED}),
    Phase.IMPORT: frozenset({Phase.LEASE_WAIT, Phase.FAILED, Phase.ABORTED}),
    Phase.LEASE_WAIT: frozenset({Phase.UPLOAD, Phase.ABORT}),
    Phase.UPLOAD: frozenset({Phase.COMPLETE, Phase.ABORT}),
    # After Complete the lease is gone: a failed or cancelled post-import step
    # removes the VM itself (ABORT), then the job ends failed or aborted. Each
    # step may be followed by any later one, except that a template is never
    # powered on, and only a powered-on VM is waited for.
    Phase.COMPLETE: frozenset({Phase.EXTRA_CONFIG, Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE,
                               Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.IMPORTED,
                               Phase.ABORT}),
    Phase.EXTRA_CONFIG: frozenset({Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE,
                                   Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.IMPORTED,
                                   Phase.ABORT}),
    Phase.INJECT_OVF_ENV: frozenset({Phase.UPGRADE_HARDWARE, Phase.MARK_AS_TEMPLATE,
                                     Phase.POWER_ON, Phase.IMPORTED, Phase.ABORT}),
    Phase.UPGRADE_HARDWARE: frozenset({Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.IMPORTED,
                                       Phase.ABORT}),
    Phase.MARK_AS_TEMPLATE: frozenset({Phase.IMPORTED, Phase.ABORT}),
    Phase.POWER_ON: frozenset({Phase.WAIT_FOR_IP, Phase.IMPORTED, Phase.ABORT}),
    Phase.WAIT_FOR_IP: frozenset({Phase.IMPORTED, Phase.ABORT}),
    Phase.ABORT: frozenset({Phase.FAILED, Phase.ABORTED}),
    Phase.IMPORTED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.ABORTED: frozenset(),
}
TERMINAL: Final = frozenset({Phase.IMPORTED, Phase.FAILED, Phase.ABORTED})


class IllegalTransition(RuntimeError):
    pass


@dataclass
class JobState:
    """Mutable record of one import's progress; the report is built from it."""

    name: str
    phase: Phase = Phase.PENDING
    vm: str | None = None
    bytes_total: int = 0
    bytes_done: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    #: Upload attempts that failed and were retried.
    upload_retries: int = 0
    #: True once ImportVApp was sent: from then on a failure is not "input rejected".
    touched_vcenter: bool = False
    #: ImportVApp was sent and its answer lost (connection dropped, call timed
    #: out): a lease may exist that nobody can name. See BatchRunner.
    import_unanswered: bool = False
    cleanup_errors: list[str] = field(default_factory=list)
    #: (phase, monotonic start time) for every phase entered: the report's timeline.
    history: list[tuple[str, float]] = field(default_factory=list)
    #: The guest's IP address, when the job waited for it (``wait_for_ip``).
    ip_address: str | None = None
    _phase_started: float = field(default_factory=time.monotonic, repr=False)

    def __repr__(self) -> str:
        return f"<JobState {self.name!r} {self.phase.value} {self.bytes_done}/{self.bytes_total}>"

    def advance(self, to: Phase) -> None:
        if to not in _TRANSITIONS[self.phase]:
            raise IllegalTransition(f"{self.name}: {self.phase.value} → {to.value}")
        now = time.monotonic()
        if self.phase not in TERMINAL and self.phase is not Phase.PENDING:
            key = self.phase.value
            self.timings[key] = self.timings.get(key, 0.0) + (now - self._phase_started)
        self.phase = to
        self._phase_started = now
        self.history.append((to.value, now))

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL


@dataclass(frozen=True)
class ImportOptions:
    """What an import needs beyond the descriptor and placement."""

    deployment: str | None = None
    disk_provisioning: str | None = None
    ip_allocation_policy: str | None = None
    ip_protocol: str | None = None
    network_mapping: dict[str, Any] = field(default_factory=dict)  # OVF name → network MOR
    properties: dict[str, str] = field(default_factory=dict)  # full property key → value
    annotation: str | None = None
    locale: str | None = None  # CreateImportSpec's locale for the descriptor's messages
    # Post-import steps (POST_IMPORT_STEPS), each only when asked for.
    extra_config: tuple[tuple[str, str], ...] = ()
    inject_ovf_env: bool = False
    hardware_version: str | None = None  # "vmx-19"
    mark_as_template: bool = False
    power_on: bool = False
    wait_for_ip: bool = False
    ip_timeout: float = 300.0
    verify_manifest: bool = True
    keep_failed: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    lease_ready_timeout: float = 300.0
    stall_timeout: float = 120.0
    #: ESXi host names device URLs may name besides vCenter (from the inventory).
    esxi_hosts: frozenset[str] = frozenset()
    upload_attempts: int = 4  # per file; each attempt reopens the source
    upload_initial_wait: float = 0.5
    upload_max_wait: float = 10.0
    #: Disks of one VM uploaded at once (never with delta disks: they go in order).
    parallel_disks: int = 1


ProgressCallback = Callable[[JobState], None]
UploadSlot = Callable[[UploadTarget], AbstractAsyncContextManager[None]]
Throttle = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class JobHooks:
    """How the engine shapes one import without the job knowing about pools.

    ``upload_slot`` is entered around each file upload (per-host and
    per-datastore caps); ``throttle`` is awaited for every chunk (bandwidth).
    """

    on_progress: ProgressCallback | None = None
    upload_slot: UploadSlot | None = None
    throttle: Throttle | None = None


def is_transient_transfer(error: BaseException) -> bool:
    """Worth another upload attempt: connection trouble, stalls and 5xx — never 4xx."""
    if isinstance(error, TransferTimeout):
        return True
    if isinstance(error, TransferError) and not isinstance(error, UntrustedTarget):
        return error.status is None or error.status >= 500
    return False


async def import_package(
    session: VCenterSession,
    package: Package,
    placement: Placement,
    state: JobState,
    options: ImportOptions | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    hooks: JobHooks | None = None,
) -> JobState:
    """Import ``package`` as ``state.name``; on failure raise, leaving nothing behind.

    ``state`` is updated in place (phase, bytes, timings), so a caller can show
    progress and report a job even when this raises or is cancelled.
    """
    options = options or ImportOptions()
    hooks = hooks or JobHooks()
    if on_progress is not None:
        hooks = replace(hooks, on_progress=on_progress)
    try:
        await _run(session, package, placement, state, options, hooks)
    except anyio.get_cancelled_exc_class():
        _finish(state, Phase.ABORTED, "interrupted")
        raise
    except BaseException as exc:
        _finish(state, Phase.FAILED, _error_text(exc))
        raise
    return state


def _finish(state: JobState, phase: Phase, error: str) -> None:
    """Move a failed job to its terminal phase (via ABORT if a lease was taken)."""
    if state.phase not in TERMINAL:
        state.advance(phase)
    state.error = state.error or error


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_error_text(e) for e in exc.exceptions)
    return str(exc) or type(exc).__name__


async def _run(
    session: VCenterSession,
    package: Package,
    placement: Placement,
    state: JobState,
    options: ImportOptions,
    hooks: JobHooks,
) -> None:
    def notify() -> None:
        if hooks.on_progress is not None:
            hooks.on_progress(state)

    check_post_import(options, state.name)
    state.advance(Phase.SPEC)
    notify()
    spec_result = await create_import_spec(session, package, placement, state.name, options)
    for warning in spec_result.warning or ():
        state.warnings.append(describe_fault(warning))
    if options.annotation is not None:
        config = getattr(spec_result.importSpec, "configSpec", None)
        if config is not None:
            config.annotation = options.annotation

    state.advance(Phase.IMPORT)
    notify()
    # ImportVApp creates the VM and the lease. Were it cancelled mid-flight, both
    # could exist on vCenter with us never learning the lease to abort. So this
    # one call finishes shielded (bounded by the call timeout); a pending
    # cancellation then hits the lease guard, which aborts the lease it now knows.
    state.touched_vcenter = True
    try:
        with anyio.CancelScope(shield=True):
            lease = await session.invoke(placement.resource_pool.ref, "ImportVApp",
                                         **import_vapp_arguments(placement,
                                                                 spec_result.importSpec))
    except Exception as exc:
        # No answer (not a fault): vCenter may have created a lease we never learned.
        state.import_unanswered = not isinstance(exc, VCenterError)
        raise

    state.advance(Phase.LEASE_WAIT)
    notify()
    guard = LeaseGuard(session, lease, vm_name=state.name,
                       ready_timeout=options.lease_ready_timeout, keep_failed=options.keep_failed)
    try:
        async with guard:
            state.vm = guard.entity._moId if guard.entity is not None else None
            targets = upload_targets(spec_result, guard.info, session.endpoint.host, package)
            for target in targets:
                check_device_host(target.url, session.endpoint.host, options.esxi_hosts)
            guard.total_bytes = state.bytes_total = sum(t.size for t in targets)
            state.advance(Phase.UPLOAD)
            notify()

            def on_bytes(count: int) -> None:
                guard.add_bytes(count)
                state.bytes_done += count
                notify()

            await upload_all(session, package, targets, options, on_bytes, hooks, state)
            state.advance(Phase.COMPLETE)
            notify()
    except BaseException:
        state.cleanup_errors.extend(guard.cleanup_errors)
        state.timings["abort"] = guard.cleanup_seconds
        state.advance(Phase.ABORT)
        raise

    if guard.entity is not None:
        await run_post_import(session, guard.entity, package, state, options, notify)
    state.advance(Phase.IMPORTED)
    notify()


def import_vapp_arguments(placement: Placement, import_spec: Any) -> dict[str, Any]:
    """ImportVApp's arguments besides the pool it is called on.

    vSphere API reference, ResourcePool.importVApp: ``folder`` is required when
    the pool is a plain resource pool and must be left out when it is a vApp —
    vCenter answers InvalidArgument otherwise (govc leaves it out too): a vApp
    holds its VMs itself.
    """
    arguments: dict[str, Any] = {
        "spec": import_spec,
        "host": placement.host.ref if placement.host else None,
    }
    if not isinstance(placement.resource_pool.ref, vim.VirtualApp):
        arguments["folder"] = placement.folder.ref
    return arguments


def check_post_import(options: ImportOptions, name: str) -> None:
    """Reject contradictory post-import steps before anything is created."""
    if options.mark_as_template and options.power_on:
        raise InputError(f"{name}: power-on and mark-as-template contradict each other: "
                         "a template cannot be powered on")
    if options.wait_for_ip and not options.power_on:
        raise InputError(f"{name}: wait-for-ip needs power-on: a VM that is off gets no IP "
                         "address")


PostImportStep = Callable[[], Awaitable[None]]


def post_import_steps(session: VCenterSession, vm: Any, package: Package, state: JobState,
                      options: ImportOptions) -> list[tuple[Phase, PostImportStep]]:
    """The steps ``options`` ask for, in POST_IMPORT_STEPS order, each with its phase."""
    steps: list[tuple[Phase, PostImportStep]] = []
    if options.extra_config:
        steps.append((Phase.EXTRA_CONFIG,
                      partial(postimport.set_extra_config, session, vm, options.extra_config)))
    if options.inject_ovf_env:
        async def inject() -> None:
            values = environment_properties(package.descriptor, options.deployment,
                                            options.properties)
            document = ovf_environment(values, esx_id=str(vm._moId),
                                       platform=postimport.platform_of(session, options.locale))
            await postimport.inject_ovf_env(session, vm, document)
        steps.append((Phase.INJECT_OVF_ENV, inject))
    if options.hardware_version:
        steps.append((Phase.UPGRADE_HARDWARE,
                      partial(postimport.upgrade_hardware, session, vm, options.hardware_version)))
    if options.mark_as_template:
        steps.append((Phase.MARK_AS_TEMPLATE, partial(postimport.mark_as_template, session, vm)))
    if options.power_on:
        steps.append((Phase.POWER_ON, partial(postimport.power_on, session, vm)))
    if options.wait_for_ip:
        async def wait() -> None:
            state.ip_address = await postimport.wait_for_ip(
                session, vm, within=options.ip_timeout, vm_name=state.name)
        steps.append((Phase.WAIT_FOR_IP, wait))
    return steps


async def run_post_import(session: VCenterSession, vm: Any, package: Package, state: JobState,
                          options: ImportOptions, notify: Callable[[], None]) -> None:
    """Run the post-import steps, each as its phase; if one fails or is cancelled,
    remove the VM (unless ``keep_failed``) and raise.

    A failure is raised as :class:`PostImportError` naming the step (the cause
    chained); a cancellation is re-raised unchanged once the VM is gone.
    """
    steps = post_import_steps(session, vm, package, state, options)
    try:
        for phase, step in steps:
            state.advance(phase)
            notify()
            await step()
    except BaseException as exc:
        failed = state.phase
        state.advance(Phase.ABORT)
        notify()
        if not options.keep_failed:
            await _remove_after_failed_step(session, vm, state, failed)
        if isinstance(exc, Exception) and not isinstance(exc, PostImportError):
            raise PostImportError(f"{state.name}: {failed.value} failed: {exc}",
                                  step=failed.value, vm=state.name) from exc
        raise


async def _remove_after_failed_step(session: VCenterSession, vm: Any, state: JobState,
                                    step: Phase) -> None:
    """Power off and destroy the VM a post-import step failed on: shielded, bounded,
    never raising (problems go to ``cleanup_errors``)."""
    what = f"removing {state.name} after the failed {step.value} step"
    started = anyio.current_time()
    with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
        try:
            if await postimport.remove_vm(session, vm):
                log.info("%s: removed the VM after the failed %s step", state.name, step.value)
        except Exception as exc:
            state.cleanup_errors.append(f"{what}: {exc}")
    if scope.cancelled_caught:
        state.cleanup_errors.append(f"{what} timed out after {CLEANUP_TIMEOUT:g} s")
    state.timings["abort"] = state.timings.get("abort", 0.0) + anyio.current_time() - started


async def create_import_spec(
    session: VCenterSession,
    package: Package,
    placement: Placement,
    name: str,
    options: ImportOptions,
) -> Any:
    """CreateImportSpec; raise :class:`ImportSpecRejected` with vCenter's text on errors."""
    params = vim.OvfManager.CreateImportSpecParams(
        entityName=name,
        locale=options.locale or "",
        deploymentOption=options.deployment or package.descriptor.default_deployment or "",
    )
    if options.disk_provisioning:
        params.diskProvisioning = options.disk_provisioning
    if options.ip_allocation_policy:
        params.ipAllocationPolicy = options.ip_allocation_policy
    if options.ip_protocol:
        params.ipProtocol = options.ip_protocol
    if options.properties:
        params.propertyMapping = [vim.KeyValue(key=k, value=v)
                                  for k, v in options.properties.items()]
    if options.network_mapping:
        params.networkMapping = [
            vim.OvfManager.NetworkMapping(name=ovf_name, network=network)
            for ovf_name, network in options.network_mapping.items()
        ]
    result = await session.invoke(
        session.content.ovfManager,
        "CreateImportSpec",
        ovfDescriptor=package.descriptor.text,
        resourcePool=placement.resource_pool.ref,
        datastore=placement.datastore.ref,
        cisp=params,
    )
    if result.error:
        reasons = "; ".join(describe_fault(e) for e in result.error)
        raise ImportSpecRejected(
            f"vCenter rejected {package.location} for {name!r}: {reasons}",
            fault=result.error[0], method="CreateImportSpec", vm=name,
        )
    if result.importSpec is None:
        raise ImportSpecRejected(f"CreateImportSpec returned no import spec for {name!r}",
                                 method="CreateImportSpec", vm=name)
    return result


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
    parallel = max(1, options.parallel_disks)
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
    cookie = session.client.session_cookie
    pin = None
    if target.ssl_thumbprint and target.url.startswith("https:") and \
            not session.endpoint.insecure:
        pin = await pin_certificate(target.url, target.ssl_thumbprint)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, options.upload_attempts)),
        wait=backoff(options.upload_initial_wait, options.upload_max_wait),
        retry=retry_if_exception(is_transient_transfer),
        before_sleep=lambda rs: _note_upload_retry(target, rs, state),
        reraise=True,
    )
    sent = 0
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
    "IllegalTransition",
    "ImportOptions",
    "JobHooks",
    "is_transient_transfer",
    "JobState",
    "POST_IMPORT_STEPS",
    "Phase",
    "TERMINAL",
    "check_post_import",
    "create_import_spec",
    "import_package",
    "import_vapp_arguments",
    "post_import_steps",
    "run_post_import",
    "upload_targets",
    "upload_verified",
]
