"""A whole batch run: open the packages, run the pool, build the report.

The library entry point behind ``asyncovf run``; the CLI only maps options.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from asyncovf.engine.batch import UpdateCallback
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import BatchPlan, JobSpec
from asyncovf.engine.pool import BatchRunner
from asyncovf.errors import PackageError, PlacementError
from asyncovf.ovf.blobs import HttpSourceSettings
from asyncovf.ovf.package import Package, check_files
from asyncovf.ovf.source import open_package
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.folders import folder_components
from asyncovf.vsphere.inventory import InventorySnapshot, Placement, PlacementRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cause:
    """One reason for failing and the VMs it affects, in file order: one line for all."""

    message: str
    names: tuple[str, ...]

    def __str__(self) -> str:
        if len(self.names) == 1:
            return f"{self.names[0]}: {self.message}"
        return f"{self.message} (affects {affected(self.names)})"

    def describe(self, within: Sequence[str] = ()) -> str:
        """The message alone when it affects every VM of ``within`` (named already)."""
        return self.message if tuple(within) == self.names else str(self)


def affected(names: Sequence[str]) -> str:
    """``web-001``; ``a, b, c``; or ``web-001 … web-200, 200 VMs``."""
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]} … {names[-1]}, {len(names)} VMs"


def creates_folders(job: JobSpec, settings: RunSettings) -> bool:
    """The job's ``create_folders``, or the run's (``--create-folders``)."""
    return job.create_folders if job.create_folders is not None else settings.create_folders


def resolve_placement(snapshot: InventorySnapshot, request: PlacementRequest, *,
                      create_folders: bool = False) -> tuple[Placement, str | None]:
    """``request`` resolved in ``snapshot`` as the import will resolve it, creating nothing.

    Returns the placement and, when the request names a folder that does not
    exist yet and ``create_folders`` will make, that folder (the placement then
    holds the datacenter's VM folder). Raises :class:`PlacementError` otherwise.
    """
    try:
        return snapshot.resolve(request), None
    except PlacementError:
        if not (create_folders and request.folder):
            raise
    # The rest of the request must resolve, and the folder must name one below
    # the VM folder: what ensure_vm_folder will create.
    placement = snapshot.resolve(replace(request, folder=None))
    folder_components(request.folder, placement.datacenter)
    return placement, request.folder


async def open_sources(
    plan: BatchPlan,
    *,
    verify_manifest: bool = True,
    max_descriptor_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES,
    http: HttpSourceSettings | None = None,
) -> tuple[dict[str, Package], dict[str, str]]:
    """Open and check every distinct source once (not once per VM).

    A broken source fails only the jobs that use it: the error is returned per
    source, and the other jobs still run.
    """
    packages: dict[str, Package] = {}
    errors: dict[str, str] = {}
    for source in dict.fromkeys(job.source for job in plan.jobs):
        try:
            package = await open_package(source, max_descriptor_bytes=max_descriptor_bytes,
                                         http=http)
            check_files(package, verify_manifest=verify_manifest)
        except PackageError as exc:
            errors[source] = str(exc)
            log.error("%s", exc)
            continue
        for warning in package.warnings:
            log.warning("%s: %s", source, warning)
        packages[source] = package
    return packages, errors


def make_runner(
    connection: ConnectionSettings,
    plan: BatchPlan,
    packages: Mapping[str, Package],
    source_errors: Mapping[str, str],
    settings: RunSettings,
    *,
    on_update: UpdateCallback | None = None,
) -> BatchRunner:
    return BatchRunner(connection, plan.jobs, packages, settings, on_update=on_update,
                       source_errors=source_errors)


__all__ = ["Cause", "affected", "creates_folders", "make_runner", "open_sources",
           "resolve_placement"]
