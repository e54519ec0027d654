"""``asyncovf run --dry-run``: every check an import makes before it creates anything.

Every VM is checked, not one per group: its source (opened and checked once
per source by :func:`~asyncovf.engine.run.open_sources`), its placement, its
options against the descriptor — deployment, each property value, the network
mapping (:func:`~asyncovf.engine.resolve.resolve_options`) — its post-import
steps against each other, and its name in its folder (FindChild).

vCenter's own verdict on the package, CreateImportSpec, is asked once per
*group*: the VMs whose call would differ only in the VM's name and its
property values (:func:`group_key`). Property values stay out of the key on
purpose: they are per VM by design (a ``{index}`` template, a CSV column), so
with them in it a batch of 200 would make 200 calls; and what vCenter checks
of a value — its type, range, length, value map (DSP0243 9.5) — is what
:func:`~asyncovf.ovf.properties.check_properties` checks for every VM here.
The group's first VM that passes those checks stands for the group.

One worker of the :class:`~asyncovf.engine.workers.WorkerPool` does it, so its
login and logout are shielded like every other session's; nothing is created
(no ImportVApp, no lease, no folder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncovf.engine.import_specs import create_import_spec
from asyncovf.engine.options import ImportOptions, OnConflict, RunSettings
from asyncovf.engine.plan import BatchPlan, JobSpec
from asyncovf.engine.resolve import resolve_options
from asyncovf.engine.run import Cause, resolve_placement
from asyncovf.engine.workers import Unfinished, WorkerPool
from asyncovf.errors import AsyncOvfError
from asyncovf.ovf.package import Package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import InventoryCache, Placement
from asyncovf.vsphere.removal import find_vm
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.soap import describe_fault


@dataclass
class Finding:
    """The verdict for one group of VMs: those that share source, placement and options."""

    source: str
    jobs: list[str]
    placement: str = "-"
    #: Each cause once, with the VMs it affects (all of :attr:`jobs`, or some).
    errors: list[Cause] = field(default_factory=list)
    warnings: list[Cause] = field(default_factory=list)

    @property
    def failing(self) -> set[str]:
        """The VMs that would fail."""
        return {name for cause in self.errors for name in cause.names}

    def error(self, message: str, names: Sequence[str]) -> None:
        _add(self.errors, message, names)

    def warn(self, message: str, names: Sequence[str]) -> None:
        _add(self.warnings, message, names)


def _add(causes: list[Cause], message: str, names: Sequence[str]) -> None:
    """Add ``names`` to the cause with ``message``, or a new cause."""
    for index, cause in enumerate(causes):
        if cause.message == message:
            known = set(cause.names)
            causes[index] = Cause(message, cause.names + tuple(n for n in names
                                                                if n not in known))
            return
    causes.append(Cause(message, tuple(names)))


def group_key(job: JobSpec, settings: RunSettings) -> tuple[object, ...]:
    """What CreateImportSpec depends on, but the VM's name and its property values.

    The property *keys* are in it (they shape the call); whether placement
    creates its folder too, since that changes how placement is checked.
    """
    options = job.options
    return (job.source, job.placement, settings.creates_folders(options), options.deployment,
            options.disk_provisioning, options.ip_allocation_policy, options.ip_protocol,
            options.locale, tuple(sorted(options.network_mapping.items())),
            tuple(sorted(options.properties)))


def group_jobs(jobs: Sequence[JobSpec], settings: RunSettings) -> list[list[JobSpec]]:
    """The jobs in groups of equal :func:`group_key`, in file order of their first job."""
    groups: dict[tuple[object, ...], list[JobSpec]] = {}
    for job in jobs:
        groups.setdefault(group_key(job, settings), []).append(job)
    return list(groups.values())


def _without_name(message: str, name: str) -> str:
    """An error without its leading ``name: ``, so that one cause reads the same for all."""
    return message.removeprefix(f"{name}: ")


def _describe(placement: Placement, new_folder: str | None) -> str:
    folder = (f"{new_folder} (to be created)" if new_folder is not None
              else placement.folder.path)
    return f"{placement.resource_pool.path} on {placement.datastore.name} in {folder}"


@dataclass
class _Group:
    jobs: list[JobSpec]
    finding: Finding


class DryRun:
    """Check every job of a plan; :attr:`findings` are ready once :meth:`run` returns."""

    def __init__(self, connection: ConnectionSettings, plan: BatchPlan,
                 packages: Mapping[str, Package], source_errors: Mapping[str, str],
                 settings: RunSettings) -> None:
        self.connection = connection
        self.packages = packages
        self.settings = settings
        self.inventory = InventoryCache()
        self.groups = [_Group(jobs, Finding(source=jobs[0].source, jobs=[j.name for j in jobs]))
                       for jobs in group_jobs(plan.jobs, settings)]
        for group in self.groups:
            error = source_errors.get(group.jobs[0].source)
            if error is not None:  # known without vCenter
                group.finding.error(error, group.finding.jobs)
        # Only groups with a package need a session; a batch of broken sources logs in never.
        self.pool = WorkerPool([g for g in self.groups if not g.finding.errors],
                               new_session=self._new_session, handle=self._handle,
                               settle=self._settle, steps=(1,), name="dry-run worker")

    @property
    def findings(self) -> list[Finding]:
        return [group.finding for group in self.groups]

    async def run(self) -> list[Finding]:
        """Check every group; raises the login error when no session could be opened,
        and the cancellation when interrupted."""
        if self.pool.items:
            await self.pool.run()
            if self.pool.no_session:
                raise self.pool.login_errors[0].error
        return self.findings

    def _new_session(self) -> VCenterSession:
        return VCenterSession(self.connection, retry=self.settings.soap_retry)

    async def _handle(self, session: VCenterSession, group: _Group, worker: int) -> None:
        try:
            await self._check(session, group)
        except AsyncOvfError as exc:
            # vCenter or the connection failed under a call: the group's verdict is
            # unknown, which is a failure of the dry run for those VMs.
            group.finding.error(str(exc) or type(exc).__name__, group.finding.jobs)

    def _settle(self, group: _Group, why: Unfinished) -> None:
        if why is not Unfinished.NO_SESSION:
            group.finding.error(f"not checked ({why.value})", group.finding.jobs)

    async def _check(self, session: VCenterSession, group: _Group) -> None:
        finding, first = group.finding, group.jobs[0]
        package = self.packages[first.source]
        snapshot = await self.inventory.get(session)
        try:
            placement, new_folder = resolve_placement(
                snapshot, first.placement,
                create_folders=self.settings.creates_folders(first.options))
        except AsyncOvfError as exc:
            finding.error(str(exc), finding.jobs)
            return
        finding.placement = _describe(placement, new_folder)
        if new_folder is not None:
            finding.warn(f"folder {new_folder!r} does not exist; it would be created",
                         finding.jobs)

        # Every VM's own checks, without vCenter: what its import checks first.
        checked: list[tuple[JobSpec, ImportOptions, dict[str, Any]]] = []
        for job in group.jobs:
            warnings: list[str] = []
            try:
                options, networks = resolve_options(job, snapshot, placement, self.settings,
                                                    descriptor=package.descriptor,
                                                    warnings=warnings)
            except AsyncOvfError as exc:
                finding.error(_without_name(str(exc), job.name), [job.name])
                continue
            for warning in warnings:
                finding.warn(warning, [job.name])
            checked.append((job, options, networks))
        if not checked:
            return
        names = [job.name for job, _, _ in checked]

        # vCenter's verdict once for the group, with its first VM that passed.
        standing, options, networks = checked[0]
        try:
            result = await create_import_spec(session, package, placement, standing.name,
                                              options, networks)
        except AsyncOvfError as exc:
            finding.error(str(exc), names)
        else:
            for warning in result.warning or ():
                finding.warn(describe_fault(warning), names)

        # Every VM's name in its folder, as its import checks it (resolve_conflict).
        if new_folder is not None:
            return  # a folder that does not exist holds no VM
        for job, _, _ in checked:
            existing = await find_vm(session, placement.folder.ref, job.name)
            if existing is None:
                continue
            policy = self.settings.on_conflict
            message = f"a VM of this name is in {placement.folder.path} ({existing._moId}): " + {
                OnConflict.FAIL: "the import would fail (--on-conflict fail)",
                OnConflict.SKIP: "it would be skipped, or replaced if its import never "
                                 "finished (--on-conflict skip)",
                OnConflict.REPLACE: "it would be replaced (--on-conflict replace)",
            }[policy]
            if policy is OnConflict.FAIL:
                finding.error(message, [job.name])
            else:
                finding.warn(message, [job.name])


async def dry_run(
    connection: ConnectionSettings,
    plan: BatchPlan,
    packages: Mapping[str, Package],
    source_errors: Mapping[str, str],
    settings: RunSettings,
) -> list[Finding]:
    """Check every job of ``plan``; one :class:`Finding` per group, in file order."""
    return await DryRun(connection, plan, packages, source_errors, settings).run()


__all__ = ["DryRun", "Finding", "dry_run", "group_jobs", "group_key"]
