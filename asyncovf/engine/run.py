"""A whole batch run: open the packages, run the pool, build the report.

The library entry point behind ``asyncovf run``; the CLI only maps options.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from asyncovf.engine.batch import UpdateCallback
from asyncovf.engine.options import RunSettings
from asyncovf.engine.plan import BatchPlan
from asyncovf.engine.pool import BatchRunner
from asyncovf.errors import PackageError
from asyncovf.ovf.blobs import HttpSourceSettings
from asyncovf.ovf.package import Package, check_files
from asyncovf.ovf.source import open_package
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES
from asyncovf.vsphere.connection import ConnectionSettings

log = logging.getLogger(__name__)


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


__all__ = ["make_runner", "open_sources"]
