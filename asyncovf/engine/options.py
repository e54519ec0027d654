"""What one import needs beyond its package and placement, and the run-wide settings.

:class:`ImportOptions` is the resolved, immutable value a job imports with
(network names already turned into managed object references);
:func:`import_options` makes it from a batch job, an inventory snapshot and the
run's :class:`RunSettings`, checking the job's properties, networks and
deployment against the descriptor first, so that a bad value is an
:class:`~asyncovf.errors.InputError` before anything reaches vCenter.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from asyncovf.engine.limits import chunk_size_for
from asyncovf.engine.plan import JobSpec
from asyncovf.errors import InputError
from asyncovf.ovf.descriptor import Descriptor
from asyncovf.ovf.package import DEFAULT_CHUNK_SIZE
from asyncovf.ovf.properties import check_properties
from asyncovf.spec import check_deployment
from asyncovf.vsphere.inventory import InventorySnapshot, Placement
from asyncovf.vsphere.session import RetryPolicy

log = logging.getLogger(__name__)


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



class OnConflict(enum.Enum):
    FAIL = "fail"
    SKIP = "skip"
    REPLACE = "replace"

def parse_ramp(text: str) -> tuple[int, ...]:
    """A concurrency schedule from ``--ramp``: ``4:64`` doubles (4, 8, 16, 32, 64),
    ``4:64:12`` adds 12 a step (4, 16, 28, 40, 52, 64), ``2,4,8,24`` is taken as given.

    Steps go up: a load test looks for the concurrency where vCenter's latency
    bends, so each step must add load. The last step is always the peak.
    """
    try:
        if "," in text:
            steps = tuple(int(part) for part in text.split(","))
        else:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            first, last = parts[0], parts[1]
            if first < 1 or last < first or (len(parts) == 3 and parts[2] < 1):
                raise ValueError
            steps_list = [first]
            while steps_list[-1] < last:
                grown = (steps_list[-1] + parts[2] if len(parts) == 3
                         else steps_list[-1] * 2)
                steps_list.append(min(grown, last))
            steps = tuple(steps_list)
    except ValueError:
        raise ValueError(f"{text!r}: expected FROM:TO (doubling), FROM:TO:STEP, or a list "
                         "like 4,8,16,32") from None
    try:
        check_ramp(steps)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return steps


def check_ramp(steps: tuple[int, ...]) -> None:
    """A ramp's steps: at least one, the first at least 1, each above the one before."""
    if not steps or steps[0] < 1 or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("each step must be at least 1 and above the one before")


@dataclass(frozen=True)
class RunSettings:
    concurrency: int = 8
    max_per_host: int | None = None
    max_per_datastore: int | None = None
    bandwidth: float | None = None  # bytes per second, all uploads together
    job_retries: int = 1
    on_conflict: OnConflict = OnConflict.FAIL
    job_timeout: float | None = None
    keep_failed: bool = False
    verify_manifest: bool = True
    upload_attempts: int = 4
    upload_initial_wait: float = 0.5
    soap_retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_ready_timeout: float = 300.0
    stall_timeout: float = 120.0
    chunk_size: int | None = None  # None: chosen by concurrency (limits.chunk_size_for)
    create_folders: bool = False
    parallel_disks: int = 1
    #: A load test's concurrency schedule (:func:`check_ramp`): start with ``ramp[0]``
    #: workers and add workers up to the next step every ``ramp_interval`` s.
    #: Empty: ``concurrency`` workers from the start.
    ramp: tuple[int, ...] = ()
    ramp_interval: float = 30.0

    def __post_init__(self) -> None:
        if self.ramp:
            check_ramp(self.ramp)
            # The pool is sized (memory, chunk size, stream buffer) for its peak.
            object.__setattr__(self, "concurrency", self.ramp[-1])

def creates_folders(job: JobSpec, settings: RunSettings) -> bool:
    """The job's ``create_folders``, or the run's (``--create-folders``)."""
    return job.create_folders if job.create_folders is not None else settings.create_folders


def check_job(spec: JobSpec, descriptor: Descriptor) -> None:
    """Refuse, as an :class:`InputError`, a job the descriptor alone shows to be wrong.

    Pure: a job that fails here is failed before anything reaches vCenter.
    """
    try:
        check_deployment(descriptor, spec.deployment)
    except ValueError as exc:
        raise InputError(f"{spec.name}: {exc}") from None


def import_options(spec: JobSpec, snapshot: InventorySnapshot, placement: Placement,
                   settings: RunSettings, *, descriptor: Descriptor | None = None,
                   warnings: list[str] | None = None) -> ImportOptions:
    """A job's import options, with network names resolved to MORs in its datacenter.

    Given the ``descriptor``, the job's properties and network names are
    checked against it first (an :class:`InputError` naming the property or
    listing the valid networks), and networks the job leaves unmapped fall
    back to the datacenter's default network, with a warning.
    """
    if descriptor is not None:
        check_job(spec, descriptor)
        check_properties(descriptor, spec.properties, where=spec.name, hidden=spec.hidden)
    networks = map_networks(spec, snapshot, placement, descriptor, warnings)
    return ImportOptions(
        deployment=spec.deployment,
        disk_provisioning=spec.disk_provisioning,
        ip_allocation_policy=spec.ip_allocation_policy,
        ip_protocol=spec.ip_protocol,
        network_mapping=networks,
        properties=dict(spec.properties),
        annotation=spec.annotation,
        locale=spec.locale,
        extra_config=tuple(spec.extra_config.items()),
        inject_ovf_env=spec.inject_ovf_env,
        hardware_version=spec.hardware_version,
        mark_as_template=spec.mark_as_template,
        power_on=spec.power_on,
        wait_for_ip=spec.wait_for_ip,
        ip_timeout=spec.ip_timeout,
        verify_manifest=settings.verify_manifest,
        keep_failed=settings.keep_failed,
        lease_ready_timeout=settings.lease_ready_timeout,
        stall_timeout=settings.stall_timeout,
        upload_attempts=settings.upload_attempts,
        upload_initial_wait=settings.upload_initial_wait,
        chunk_size=settings.chunk_size or chunk_size_for(settings.concurrency),
        parallel_disks=spec.parallel_disks or settings.parallel_disks,
        esxi_hosts=snapshot.host_addresses(),
    )


#: What vCenter calls the network a fresh host comes with: the usual default.
DEFAULT_NETWORK_NAMES: Final = ("VM Network",)


def map_networks(spec: JobSpec, snapshot: InventorySnapshot, placement: Placement,
                 descriptor: Descriptor | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
    """OVF network name -> network MOR (port group, distributed port group, opaque)."""
    ovf_networks = descriptor.networks if descriptor is not None else ()
    if descriptor is not None:
        unknown = [name for name in spec.network_mapping if name not in ovf_networks]
        if unknown:
            raise InputError(f"{spec.name}: network mapping names {', '.join(map(repr, unknown))}"
                             f", which the descriptor does not have (its networks: "
                             f"{', '.join(ovf_networks) or 'none'})")
    mapped = {
        ovf_name: snapshot.find("network", target, datacenter=placement.datacenter,
                                what=f"network for {ovf_name!r}").ref
        for ovf_name, target in spec.network_mapping.items() if target
    }
    unmapped = [name for name in ovf_networks if name not in mapped]
    if unmapped:
        fallback = _default_network(snapshot, placement)
        if fallback is not None:
            for name in unmapped:
                if name == fallback.name:
                    continue  # same name: vCenter maps it by itself
                note = f"network {name!r} is not mapped; using {fallback.name!r}"
                log.warning("%s: %s", spec.name, note)
                if warnings is not None:
                    warnings.append(note)
                mapped[name] = fallback.ref
    return mapped


def _default_network(snapshot: InventorySnapshot, placement: Placement) -> Any:
    """The datacenter's only network, or its "VM Network"; None when it has no obvious one."""
    networks = snapshot.items("network", placement.datacenter)
    if len(networks) == 1:
        return networks[0]
    return next((n for n in networks if n.name in DEFAULT_NETWORK_NAMES), None)


__all__ = [
    "DEFAULT_NETWORK_NAMES",
    "ImportOptions",
    "OnConflict",
    "RunSettings",
    "check_job",
    "check_ramp",
    "creates_folders",
    "import_options",
    "map_networks",
    "parse_ramp",
]
