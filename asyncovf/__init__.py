"""asyncovf: import OVF/OVA appliances into vCenter, one or hundreds at a time.

The names below are the supported library API (the README's "The same as a
library" lists each): import them from ``asyncovf``, not from the modules
they live in, which may move.

* one import: :class:`Importer` with :class:`ConnectionSettings`,
  :class:`PlacementRequest` and :func:`open_package`;
* a batch: :func:`load_batch`, then :func:`run_batch`;
* removing what a run created: :class:`Cleaner`, with :func:`read_reports`;
* every error raised on purpose is an :class:`AsyncOvfError`.

Each name is imported on first use (PEP 562), so ``import asyncovf`` loads
neither pyVmomi nor aiohttp nor lxml: the command line
(:func:`asyncovf.cli.main`) installs its signal handling before those load.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from asyncovf.version import __version__ as __version__

#: Where each public name lives: imported from there on first access.
_EXPORTS: Final[Mapping[str, str]] = {
    # one import
    "Importer": "asyncovf.importer",
    "ImportOptions": "asyncovf.engine.options",
    "OnConflict": "asyncovf.engine.options",
    "JobState": "asyncovf.engine.phases",
    "Phase": "asyncovf.engine.phases",
    "ConnectionSettings": "asyncovf.vsphere.connection",
    "PlacementRequest": "asyncovf.vsphere.inventory",
    "Placement": "asyncovf.vsphere.inventory",
    # packages
    "open_package": "asyncovf.ovf.source",
    "Package": "asyncovf.ovf.package",
    "check_files": "asyncovf.ovf.package",
    "HttpSourceSettings": "asyncovf.ovf.blobs",
    # batches
    "load_batch": "asyncovf.engine.plan",
    "BatchPlan": "asyncovf.engine.plan",
    "JobSpec": "asyncovf.engine.plan",
    "RunSettings": "asyncovf.engine.options",
    "RetryPolicy": "asyncovf.vsphere.session",
    "run_batch": "asyncovf.engine.run",
    "JobResult": "asyncovf.engine.batch",
    "JobStatus": "asyncovf.engine.batch",
    # watching a run (Metrics needs asyncovf[metrics], Tracing asyncovf[tracing])
    "Watcher": "asyncovf.telemetry.watch",
    "Watchers": "asyncovf.telemetry.watch",
    "Metrics": "asyncovf.telemetry.metrics",
    "serve_metrics": "asyncovf.telemetry.metrics",
    "Tracing": "asyncovf.telemetry.tracing",
    "tracing_from_environment": "asyncovf.telemetry.tracing",
    # cleanup
    "Cleaner": "asyncovf.engine.cleaner",
    "CleanupSettings": "asyncovf.engine.cleaner",
    "CleanupTarget": "asyncovf.engine.cleaner",
    "RemovalResult": "asyncovf.engine.cleaner",
    "RemovalStatus": "asyncovf.engine.cleaner",
    "ReportTargets": "asyncovf.report",
    "read_reports": "asyncovf.report",
    "list_by_prefix": "asyncovf.engine.cleaner",
    # errors
    "AsyncOvfError": "asyncovf.errors",
    "InputError": "asyncovf.errors",
    "UsageError": "asyncovf.errors",
    "BatchError": "asyncovf.errors",
    "PackageError": "asyncovf.errors",
    "ManifestError": "asyncovf.errors",
    "PlacementError": "asyncovf.errors",
    "PropertyError": "asyncovf.errors",
    "ReportFileError": "asyncovf.errors",
    "ChartsUnavailable": "asyncovf.errors",
    "NameConflict": "asyncovf.errors",
    "VCenterError": "asyncovf.errors",
    "NotAuthenticatedError": "asyncovf.errors",
    "InvalidLoginError": "asyncovf.errors",
    "ManagedObjectNotFoundError": "asyncovf.errors",
    "ImportSpecRejected": "asyncovf.errors",
    "LeaseError": "asyncovf.errors",
    "TaskError": "asyncovf.errors",
    "PostImportError": "asyncovf.errors",
    "WaitForIPTimeout": "asyncovf.errors",
    "SeedError": "asyncovf.errors",
    "TransportError": "asyncovf.errors",
    "TLSVerificationError": "asyncovf.errors",
    "RequestTimeout": "asyncovf.errors",
    "TransferError": "asyncovf.errors",
    "TransferTimeout": "asyncovf.errors",
    "SourceError": "asyncovf.errors",
    "UntrustedTarget": "asyncovf.errors",
}

if TYPE_CHECKING:
    from asyncovf.engine.batch import JobResult, JobStatus
    from asyncovf.engine.cleaner import (
        Cleaner,
        CleanupSettings,
        CleanupTarget,
        RemovalResult,
        RemovalStatus,
        list_by_prefix,
    )
    from asyncovf.engine.options import ImportOptions, OnConflict, RunSettings
    from asyncovf.engine.phases import JobState, Phase
    from asyncovf.engine.plan import BatchPlan, JobSpec, load_batch
    from asyncovf.engine.run import run_batch
    from asyncovf.errors import (
        AsyncOvfError,
        BatchError,
        ChartsUnavailable,
        ImportSpecRejected,
        InputError,
        InvalidLoginError,
        LeaseError,
        ManagedObjectNotFoundError,
        ManifestError,
        NameConflict,
        NotAuthenticatedError,
        PackageError,
        PlacementError,
        PostImportError,
        PropertyError,
        ReportFileError,
        RequestTimeout,
        SeedError,
        SourceError,
        TaskError,
        TLSVerificationError,
        TransferError,
        TransferTimeout,
        TransportError,
        UntrustedTarget,
        UsageError,
        VCenterError,
        WaitForIPTimeout,
    )
    from asyncovf.importer import Importer
    from asyncovf.ovf.blobs import HttpSourceSettings
    from asyncovf.ovf.package import Package, check_files
    from asyncovf.ovf.source import open_package
    from asyncovf.report import ReportTargets, read_reports
    from asyncovf.telemetry.metrics import Metrics, serve_metrics
    from asyncovf.telemetry.tracing import Tracing, tracing_from_environment
    from asyncovf.telemetry.watch import Watcher, Watchers
    from asyncovf.vsphere.connection import ConnectionSettings
    from asyncovf.vsphere.inventory import Placement, PlacementRequest
    from asyncovf.vsphere.session import RetryPolicy
else:
    # Only at run time: for a type checker the imports above are the module's
    # names, and a misspelt ``asyncovf.Improter`` stays an error.
    def __getattr__(name: str) -> object:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The module's own names and the public ones, imported or not yet."""
    return sorted({*globals(), *__all__})


__all__ = [
    "AsyncOvfError",
    "BatchError",
    "BatchPlan",
    "ChartsUnavailable",
    "Cleaner",
    "CleanupSettings",
    "CleanupTarget",
    "ConnectionSettings",
    "HttpSourceSettings",
    "ImportOptions",
    "ImportSpecRejected",
    "Importer",
    "InputError",
    "InvalidLoginError",
    "JobResult",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LeaseError",
    "ManagedObjectNotFoundError",
    "ManifestError",
    "Metrics",
    "NameConflict",
    "NotAuthenticatedError",
    "OnConflict",
    "Package",
    "PackageError",
    "Phase",
    "Placement",
    "PlacementError",
    "PlacementRequest",
    "PostImportError",
    "PropertyError",
    "RemovalResult",
    "RemovalStatus",
    "ReportFileError",
    "ReportTargets",
    "RequestTimeout",
    "RetryPolicy",
    "RunSettings",
    "SeedError",
    "SourceError",
    "TLSVerificationError",
    "TaskError",
    "Tracing",
    "TransferError",
    "TransferTimeout",
    "TransportError",
    "UntrustedTarget",
    "UsageError",
    "VCenterError",
    "WaitForIPTimeout",
    "Watcher",
    "Watchers",
    "check_files",
    "list_by_prefix",
    "load_batch",
    "open_package",
    "read_reports",
    "run_batch",
    "serve_metrics",
    "tracing_from_environment",
]
