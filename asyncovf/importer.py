"""The library's front door: connect once, resolve placement, import packages.

An :class:`Importer` is one vCenter session plus an inventory snapshot. Its
imports run :func:`~asyncovf.engine.job.import_vm`, the same code every
``asyncovf`` command runs, so they keep the same promises: the name checked
first, the lease aborted and the half-imported VM removed on any error or
cancellation, a lost ImportVApp answer recovered. It is not safe to share
between concurrent tasks — by design, sessions are never shared.
"""

from __future__ import annotations

from functools import partial
from types import TracebackType

from asyncovf.engine.job import import_vm
from asyncovf.engine.options import ImportOptions, OnConflict
from asyncovf.engine.phases import JobState
from asyncovf.engine.resolve import check_options, map_networks
from asyncovf.engine.uploads import JobHooks, ProgressCallback
from asyncovf.ovf.package import Package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.folders import ensure_vm_folder
from asyncovf.vsphere.inventory import (
    InventoryCache,
    InventorySnapshot,
    Placement,
    PlacementRequest,
)
from asyncovf.vsphere.session import VCenterSession, log_in_shielded


class Importer:
    """One vCenter session and inventory snapshot, for importing packages."""

    def __init__(self, connection: ConnectionSettings) -> None:
        self.connection = connection
        self.session = VCenterSession(connection)
        self.cache = InventoryCache()

    async def __aenter__(self) -> Importer:
        # Shielded: a login the server carries out is always logged out, even
        # when the caller is cancelled mid-login.
        await log_in_shielded(self.session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.session.__aexit__(exc_type, exc, tb)

    async def inventory(self) -> InventorySnapshot:
        return await self.cache.get(self.session)

    async def resolve(self, request: PlacementRequest, *,
                      create_folders: bool = False) -> Placement:
        """Resolve a placement (refreshing once on a miss), creating its folder if asked."""
        if create_folders:
            await ensure_vm_folder(self.session, self.cache, request)
        return await self.cache.resolve(self.session, request)

    async def import_package(
        self,
        package: Package,
        name: str,
        placement: Placement,
        options: ImportOptions | None = None,
        *,
        on_conflict: OnConflict = OnConflict.FAIL,
        on_progress: ProgressCallback | None = None,
        state: JobState | None = None,
    ) -> JobState:
        """Import ``package`` as ``name``; raises on failure with nothing left behind.

        ``options`` are checked against the package's descriptor first, and
        their ``network_mapping`` names resolved in the placement's datacenter
        (a descriptor network left unmapped falls back to the datacenter's
        obvious default network, with a warning in the log), as a batch job's are.
        With ``on_conflict=OnConflict.SKIP`` an existing, finished VM of that
        name is left as it is: the returned state's ``phase`` is then still
        ``pending`` and its ``vm`` names the existing VM.
        """
        options = options or ImportOptions()
        check_options(name, options, package.descriptor)
        networks = map_networks(name, options.network_mapping, await self.inventory(),
                                placement, package.descriptor)
        state = state or JobState(name=name)
        hooks = JobHooks(on_progress=on_progress,
                         host_addresses=partial(self.cache.host_addresses, self.session))
        await import_vm(self.session, package, placement, state, options, networks=networks,
                        on_conflict=on_conflict, hooks=hooks)
        return state


__all__ = ["Importer"]
