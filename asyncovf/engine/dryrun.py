"""``asyncovf run --dry-run``: everything but the import.

Resolves every inventory path, checks every VM name against the target folder,
and calls CreateImportSpec once per distinct (source, placement, options) —
vCenter's own verdict on the package — without creating anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from asyncovf.engine.job import create_import_spec
from asyncovf.engine.plan import BatchPlan, JobSpec
from asyncovf.engine.pool import OnConflict, RunSettings, import_options
from asyncovf.errors import AsyncOvfError
from asyncovf.ovf.package import Package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import InventoryCache
from asyncovf.vsphere.session import VCenterSession
from asyncovf.vsphere.soap import describe_fault


@dataclass
class Finding:
    """The verdict for one group of jobs that share source, placement and options."""

    source: str
    jobs: list[str]
    placement: str = "-"
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _group_key(job: JobSpec) -> tuple[object, ...]:
    return (job.source, job.placement, job.deployment, job.disk_provisioning,
            tuple(sorted(job.network_mapping.items())), tuple(sorted(job.properties)))


async def dry_run(
    connection: ConnectionSettings,
    plan: BatchPlan,
    packages: Mapping[str, Package],
    source_errors: Mapping[str, str],
    settings: RunSettings,
) -> list[Finding]:
    groups: dict[tuple[object, ...], list[JobSpec]] = {}
    for job in plan.jobs:
        groups.setdefault(_group_key(job), []).append(job)
    findings: list[Finding] = []
    cache = InventoryCache()
    async with VCenterSession(connection.endpoint(), connection.credentials(),
                              call_timeout=connection.call_timeout) as session:
        for jobs in groups.values():
            first = jobs[0]
            finding = Finding(source=first.source, jobs=[j.name for j in jobs])
            findings.append(finding)
            if first.source in source_errors:
                finding.errors.append(source_errors[first.source])
                continue
            try:
                placement = await cache.resolve(session, first.placement)
                snapshot = cache.snapshot
                assert snapshot is not None
                finding.placement = (f"{placement.resource_pool.path} on "
                                     f"{placement.datastore.name} in {placement.folder.path}")
                options = import_options(first, snapshot, placement, settings,
                                         descriptor=packages[first.source].descriptor,
                                         warnings=finding.warnings)
                result = await create_import_spec(session, packages[first.source], placement,
                                                  first.name, options)
                finding.warnings.extend(describe_fault(w) for w in result.warning or ())
                for job in jobs:
                    existing = await session.invoke(session.content.searchIndex, "FindChild",
                                                    entity=placement.folder.ref, name=job.name)
                    if existing is not None:
                        verdict = {OnConflict.FAIL: "error", OnConflict.SKIP: "would skip",
                                   OnConflict.REPLACE: "would replace"}[settings.on_conflict]
                        message = f"{job.name} already exists ({existing._moId}): {verdict}"
                        (finding.errors if settings.on_conflict is OnConflict.FAIL
                         else finding.warnings).append(message)
            except AsyncOvfError as exc:
                finding.errors.append(str(exc))
    return findings


__all__ = ["Finding", "dry_run"]
