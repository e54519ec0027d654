"""Seed VMs of ``strategy: clone``: one imported per group of identical VMs, cloned N times.

A group is what the VMs' import would share: the source, the placement asked
for, and the options that shape the import spec (deployment, provisioning, IP
policy and protocol, locale, network mapping) and the seed (``linked_clone``,
``keep_seed``). Everything else — the name, annotation, vApp property values,
post-import steps — is each clone's own (engine/clone.py). Groups are known
from the plan alone, so the registry knows how many VMs each seed serves before
the run starts.

The seed is imported by the first job of its group to need it, with every
guarantee of an import (:func:`~asyncovf.engine.job.import_vm`), on that job's
session; the group's other jobs wait for it (one lock per seed). A seed whose
import fails — after its own attempts — fails every VM of its group with one
line (:class:`~asyncovf.errors.SeedError`); a seeding job that is cancelled
leaves the seed to the next job that needs it.

A seed is a template (``MarkAsTemplate``), or, for linked clones, a powered-off
VM with one snapshot, the clones' disks being children of it. It is removed,
shielded and bounded, once the last job of its group is done, or when a worker
leaves the run and no job holds it (the run is over or interrupted), unless it
is kept: ``keep_seed``, a linked clone's seed (removing it would take its
clones' base disks), or a seed this run found already there
(``--on-conflict skip``), which is not the run's to remove.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import anyio
from pyVmomi import vim

from asyncovf.engine.import_specs import property_key
from asyncovf.engine.job import import_vm
from asyncovf.engine.options import ImportOptions, OnConflict, RunSettings
from asyncovf.engine.phases import JobState
from asyncovf.engine.plan import MAX_VM_NAME, JobSpec
from asyncovf.errors import InputError, RetryScope, SeedError, error_text, retryable
from asyncovf.ovf.package import Package
from asyncovf.telemetry.watch import JobWatch
from asyncovf.vsphere.inventory import Placement
from asyncovf.vsphere.removal import remove_vm_bounded
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)

#: The snapshot a linked-clone seed's clones are children of.
SEED_SNAPSHOT: Final = "asyncovf seed"

SeedKey = tuple[object, ...]


class SeedStatus(enum.Enum):
    PENDING = "pending"  # not made yet
    READY = "ready"  # imported by this run, clones may be made
    FOUND = "found"  # already there (--on-conflict skip): used, never removed
    FAILED = "failed"
    REMOVED = "removed"  # its group is done
    KEPT = "kept"  # its group is done, and it stays (keep_seed, linked clones)


@dataclass(eq=False)
class Seed:
    """One group's seed VM: what its clones need, and the report's record of it."""

    name: str
    key: SeedKey
    jobs: int  # the VMs of its group
    linked: bool
    keep: bool
    status: SeedStatus = SeedStatus.PENDING
    vm: Any = None  # its MOR, once made
    snapshot: Any = None  # a linked clone's parent snapshot
    #: Its vApp properties: full key (``class.id.instance``) → vCenter's integer key.
    properties: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    cause: Exception | None = field(default=None, repr=False)  # why it failed
    seconds: float = 0.0  # importing it
    bytes: int = 0  # uploaded to import it
    cleanup_errors: list[str] = field(default_factory=list)
    active: int = 0  # jobs of its group in hand now
    remaining: int = 0  # jobs of its group not done yet
    lock: anyio.Lock = field(default_factory=anyio.Lock, repr=False)

    @property
    def usable(self) -> bool:
        return self.status in (SeedStatus.READY, SeedStatus.FOUND)

    def record(self) -> dict[str, Any]:
        """The run report's line for this seed."""
        return {"name": self.name, "vm": str(self.vm._moId) if self.vm is not None else None,
                "jobs": self.jobs, "linked_clone": self.linked, "status": self.status.value,
                "seconds": round(self.seconds, 6), "bytes": self.bytes, "error": self.error,
                "cleanup_errors": list(self.cleanup_errors)}


def clones(spec: JobSpec, settings: RunSettings) -> bool:
    """Whether ``spec``'s VM is cloned from a seed (its ``strategy``, else the run's)."""
    return (spec.options.strategy or settings.strategy) == "clone"


def seed_key(spec: JobSpec) -> SeedKey:
    """What a seed's VMs share: see the module's docstring."""
    options = spec.options
    return (spec.source, spec.placement, options.deployment, options.disk_provisioning,
            options.ip_allocation_policy, options.ip_protocol, options.locale,
            tuple(sorted(options.network_mapping.items())), options.linked_clone,
            options.keep_seed)


def seed_name(first_vm: str, key: SeedKey) -> str:
    """``<first VM of the group>-seed-<8 hex of the group>``: the batch's, and stable, so
    a kept seed is found again by the next run of the same batch."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
    suffix = f"-seed-{digest}"
    return first_vm[:MAX_VM_NAME - len(suffix)] + suffix


def seed_options(options: ImportOptions) -> ImportOptions:
    """A group's options for its seed: the import's shape, none of a VM's own settings."""
    return replace(options, properties={}, annotation=None, extra_config={},
                   inject_ovf_env=False, hardware_version=None,
                   mark_as_template=not options.linked_clone, power_on=False,
                   wait_for_ip=False, strategy="import")


class SeedRegistry:
    """The run's seeds, one per group of its clone jobs, and when each is made and removed."""

    def __init__(self, jobs: Iterable[JobSpec], settings: RunSettings) -> None:
        self._by_key: dict[SeedKey, Seed] = {}
        self._by_job: dict[int, Seed] = {}
        for spec in jobs:
            if not clones(spec, settings):
                continue
            key = seed_key(spec)
            seed = self._by_key.get(key)
            if seed is None:
                seed = self._by_key[key] = Seed(
                    name=seed_name(spec.name, key), key=key, jobs=0,
                    linked=spec.options.linked_clone,
                    keep=spec.options.keep_seed or spec.options.linked_clone)
            seed.jobs += 1
            seed.remaining += 1
            self._by_job[spec.index] = seed

    @property
    def seeds(self) -> list[Seed]:
        return list(self._by_key.values())

    def seed_of(self, spec: JobSpec) -> Seed | None:
        return self._by_job.get(spec.index)

    def enter(self, spec: JobSpec) -> Seed | None:
        """A job of a group is in hand: its seed stays until it leaves (no await: the
        pool hands the job over and this counts it in one step)."""
        seed = self._by_job.get(spec.index)
        if seed is not None:
            seed.active += 1
        return seed

    async def leave(self, session: VCenterSession, spec: JobSpec) -> None:
        """A job is done: its group's seed is removed if it was the last one."""
        seed = self._by_job.get(spec.index)
        if seed is None:
            return
        seed.active -= 1
        seed.remaining -= 1
        if seed.remaining == 0 and seed.active == 0:
            await self._finish(session, seed)

    async def sweep(self, session: VCenterSession) -> None:
        """A worker leaves the run: no job will start any more, so every seed no job holds
        is done with (called before the worker logs out)."""
        for seed in self.seeds:
            if seed.active == 0:
                await self._finish(session, seed)

    async def ready(self, seed: Seed, make: Callable[[Seed], Awaitable[None]]) -> None:
        """Wait until ``seed`` can be cloned, making it (``make``) if no one has.

        Raises :class:`SeedError` if it failed, for this job or an earlier one.
        """
        if not seed.usable:
            async with seed.lock:
                if seed.status is SeedStatus.PENDING:
                    started = time.monotonic()
                    try:
                        await make(seed)
                    except Exception as exc:
                        seed.status, seed.error = SeedStatus.FAILED, error_text(exc)
                        seed.cause = exc
                        log.error("seed %s failed: %s", seed.name, seed.error)
                    finally:
                        seed.seconds += time.monotonic() - started
        if not seed.usable:
            # Each job its own error, all with the seed's cause: one line, one kind.
            raise SeedError(self._failure(seed), seed=seed.name) from seed.cause

    @staticmethod
    def _failure(seed: Seed) -> str:
        if seed.status is SeedStatus.FAILED:
            return f"seed {seed.name} failed: {seed.error}"
        return f"seed {seed.name} is {seed.status.value}"

    async def _finish(self, session: VCenterSession, seed: Seed) -> None:
        if seed.status is not SeedStatus.READY:
            return  # never made, failed, found, or finished already
        if seed.keep:
            seed.status = SeedStatus.KEPT
            log.info("seed %s (%s) kept", seed.name, seed.vm._moId)
            return
        seed.status = SeedStatus.REMOVED  # before the await: one worker removes it
        if not await remove_vm_bounded(session, seed.vm, seed.cleanup_errors,
                                       what=f"removing the seed {seed.name!r}"):
            seed.status = SeedStatus.FAILED
            seed.error = seed.error or "could not be removed"


async def make_seed(session: VCenterSession, seed: Seed, package: Package,
                    placement: Placement, options: ImportOptions, networks: dict[str, Any],
                    *, on_conflict: OnConflict, attempts: int,
                    watch: JobWatch | None = None) -> None:
    """Import ``seed`` as ``options`` (a job's, applied) say, then make it a seed.

    Up to ``attempts`` imports while the error is one a new import may cure. A
    VM of its name already there follows ``on_conflict``: ``skip`` uses it (found,
    never removed by this run). Anything that fails once the seed exists removes
    it, as a cancellation does. ``watch`` hears of its bytes and files: the
    job's that imports it (:meth:`~asyncovf.telemetry.watch.JobWatch.part`).
    """
    if str(getattr(session.content.about, "apiType", "")) == "HostAgent":
        # Checked before the seed's upload, which would be for nothing.
        raise InputError("strategy clone needs vCenter: a standalone ESXi host has no "
                         "CloneVM_Task; use strategy: import")
    options = seed_options(options)
    for attempt in range(1, attempts + 1):
        state = JobState(name=seed.name, watch=watch)
        try:
            imported = await import_vm(session, package, placement, state, options,
                                       networks=networks, on_conflict=on_conflict)
            break
        except Exception as exc:
            if attempt == attempts or not retryable(exc, RetryScope.JOB):
                raise
            log.warning("seed %s: attempt %d failed (%s); trying again", seed.name, attempt,
                        error_text(exc))
    assert state.vm is not None
    seed.vm, seed.bytes = vim.VirtualMachine(state.vm), state.bytes_done
    try:
        facts = await session.retrieve(seed.vm, ["config.vAppConfig", "snapshot"])
        if seed.linked:
            snapshot = facts.get("snapshot")
            seed.snapshot = snapshot.currentSnapshot if snapshot is not None else None
            if seed.snapshot is None and not imported:
                raise SeedError(f"seed {seed.name}: the VM found under its name has no "
                                "snapshot to link clones to", seed=seed.name)
            if seed.snapshot is None:
                task = await session.invoke(seed.vm, "CreateSnapshot", name=SEED_SNAPSHOT,
                                            description="the parent of asyncovf's linked clones",
                                            memory=False, quiesce=False)
                seed.snapshot = await session.wait_for_task(task)
        vapp = facts.get("config.vAppConfig")
        seed.properties = {property_key(info): int(info.key)
                           for info in (vapp.property if vapp is not None else None) or ()}
    except BaseException:
        if imported and await remove_vm_bounded(session, seed.vm, seed.cleanup_errors,
                                                what=f"removing the seed {seed.name!r}"):
            seed.vm = None
        raise
    seed.status = SeedStatus.READY if imported else SeedStatus.FOUND
    log.info("seed %s: %s (%s)", seed.name, "imported" if imported else "found",
             seed.vm._moId)


__all__ = [
    "SEED_SNAPSHOT",
    "Seed",
    "SeedKey",
    "SeedRegistry",
    "SeedStatus",
    "clones",
    "make_seed",
    "seed_key",
    "seed_name",
    "seed_options",
]
