"""How to reach and log in to vCenter: one connection settings value for every command.

Options first, then the Terraform vSphere provider's environment variables
(``VSPHERE_SERVER``, ``VSPHERE_USER``, ``VSPHERE_PASSWORD``,
``VSPHERE_ALLOW_UNVERIFIED_SSL``), checked once, before any worker logs in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from asyncovf.errors import UsageError
from asyncovf.vsphere.soap import Endpoint

_TRUE = frozenset({"1", "true", "yes", "on"})


def _text(value: str | bool | None) -> str | None:
    return value if isinstance(value, str) else None


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
        server: str | None = None,
        username: str | None = None,
        password: str | None = None,
        insecure: bool | None = None,
        ca_file: str | None = None,
        batch: Mapping[str, str | bool] | None = None,
        environ: os._Environ[str] | dict[str, str] | None = None,
    ) -> ConnectionSettings:
        """Options first, then a batch file's ``connection:`` values (server, user,
        password, insecure, ca_file), then the Terraform vSphere provider's
        environment variables."""
        given = batch or {}
        env = os.environ if environ is None else environ
        server = server or _text(given.get("server")) or env.get("VSPHERE_SERVER")
        username = username or _text(given.get("user")) or env.get("VSPHERE_USER")
        if password is None:
            password = _text(given.get("password"))
        if password is None:
            password = env.get("VSPHERE_PASSWORD")
        if insecure is None and isinstance(given.get("insecure"), bool):
            insecure = bool(given["insecure"])
        ca_file = ca_file or _text(given.get("ca_file"))
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
        """The one Endpoint of these settings, the same object at every call.

        Every session of a run is opened with it, so they share the TLS
        contexts it caches (built once, off the event loop) instead of each
        building its own from the CA files.
        """
        return self._endpoint

    @cached_property
    def _endpoint(self) -> Endpoint:
        return Endpoint.parse(self.server, insecure=self.insecure, ca_file=self.ca_file)


__all__ = ["ConnectionSettings"]
