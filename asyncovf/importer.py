"""The library's front door: connect once, resolve placement, import packages.

An :class:`Importer` is one vCenter session plus an inventory snapshot. It is
the unit a worker owns: the CLI's single import uses one, and the bulk engine
gives each worker its own. It is not safe to share between concurrent tasks —
by design, sessions are never shared.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import TracebackType

from asyncovf.engine.job import ImportOptions, JobState, ProgressCallback, import_package
from asyncovf.errors import UsageError
from asyncovf.ovf.package import Package
from asyncovf.vsphere.folders import ensure_vm_folder
from asyncovf.vsphere.inventory import (
    InventoryCache,
    InventorySnapshot,
    Placement,
    PlacementRequest,
)
from asyncovf.vsphere.session import Credentials, VCenterSession
from asyncovf.vsphere.soap import Endpoint

_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach and log in to vCenter. The password is never shown in ``repr``."""

    server: str
    username: str
    password: str = field(repr=False)
    insecure: bool = False
    ca_file: str | None = None
    call_timeout: float = 120.0

    @classmethod
    def from_options(
        cls,
        *,
        server: str | None,
        username: str | None,
        password: str | None,
        insecure: bool | None,
        ca_file: str | None,
        environ: os._Environ[str] | dict[str, str] | None = None,
    ) -> ConnectionSettings:
        """Options first, then the Terraform vSphere provider's environment variables."""
        env = os.environ if environ is None else environ
        server = server or env.get("VSPHERE_SERVER")
        username = username or env.get("VSPHERE_USER")
        password = password if password is not None else env.get("VSPHERE_PASSWORD")
        if insecure is None:
            insecure = env.get("VSPHERE_ALLOW_UNVERIFIED_SSL", "").strip().lower() in _TRUE
        missing = [
            label
            for label, value in (
                ("--server (or VSPHERE_SERVER)", server),
                ("--user (or VSPHERE_USER)", username),
                ("--password (or VSPHERE_PASSWORD)", password),
            )
            if not value
        ]
        if missing:
            raise UsageError("missing " + ", ".join(missing))
        assert server and username and password is not None
        if ca_file and not os.path.isfile(ca_file):
            raise UsageError(f"--ca-file {ca_file}: no such file")
        try:
            Endpoint.parse(server)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return cls(server=server, username=username, password=password,
                   insecure=bool(insecure), ca_file=ca_file)

    def endpoint(self) -> Endpoint:
        return Endpoint.parse(self.server, insecure=self.insecure, ca_file=self.ca_file)

    def credentials(self) -> Credentials:
        return Credentials(self.username, self.password)


class Importer:
    """One vCenter session and inventory snapshot, for importing packages."""

    def __init__(self, connection: ConnectionSettings) -> None:
        self.connection = connection
        self.session = VCenterSession(connection.endpoint(), connection.credentials(),
                                      call_timeout=connection.call_timeout)
        self.cache = InventoryCache()

    async def __aenter__(self) -> Importer:
        await self.session.__aenter__()
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
        on_progress: ProgressCallback | None = None,
        state: JobState | None = None,
    ) -> JobState:
        """Import ``package`` as ``name``; raises on failure with nothing left behind."""
        state = state or JobState(name=name)
        return await import_package(self.session, package, placement, state, options,
                                    on_progress=on_progress)


__all__ = ["ConnectionSettings", "Importer"]
