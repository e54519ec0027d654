"""How to reach and log in to vCenter: one connection settings value for every command.

Options first, then a batch file's ``connection:``, then the environment
variables of the tools an operator already has set up, each setting on its
own, in this order: the Terraform vSphere provider's (``VSPHERE_SERVER``,
``VSPHERE_USER``, ``VSPHERE_PASSWORD``, ``VSPHERE_ALLOW_UNVERIFIED_SSL``, and
our ``VSPHERE_CA_FILE``), govc's (``GOVC_URL``, which may carry
``user:password@``, ``GOVC_USERNAME``, ``GOVC_PASSWORD``, ``GOVC_INSECURE``),
then Ansible's vmware modules' (``VMWARE_HOST``, ``VMWARE_USER``,
``VMWARE_PASSWORD``, ``VMWARE_VALIDATE_CERTS``). Checked once, before any
worker logs in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

from asyncovf.errors import UsageError
from asyncovf.vsphere.soap import Endpoint

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

#: The variables each setting falls back to, first found wins.
SERVER_VARIABLES: Final = ("VSPHERE_SERVER", "GOVC_URL", "VMWARE_HOST")
USER_VARIABLES: Final = ("VSPHERE_USER", "GOVC_USERNAME", "VMWARE_USER")
PASSWORD_VARIABLES: Final = ("VSPHERE_PASSWORD", "GOVC_PASSWORD", "VMWARE_PASSWORD")
CA_FILE_VARIABLES: Final = ("VSPHERE_CA_FILE",)


def _text(value: str | bool | None) -> str | None:
    return value if isinstance(value, str) else None


def _govc_url(env: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """``GOVC_URL`` as server, user and password: govc accepts ``user:password@`` in
    it, and those win over ``GOVC_USERNAME``/``GOVC_PASSWORD`` there, as in govc."""
    url = env.get("GOVC_URL", "").strip()
    if not url:
        return None, None, None
    parts = urlsplit(url if "://" in url else "https://" + url)
    if parts.username is None and parts.password is None:
        return url, None, None
    netloc = parts.netloc.rpartition("@")[2]
    server = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return server, user, password


def _from_environment(env: Mapping[str, str]) -> dict[str, str | bool | None]:
    """Each setting from the first variable that has it (see the module's docstring)."""
    govc_server, govc_user, govc_password = _govc_url(env)

    def first(*candidates: str | None) -> str | None:
        return next((value for value in candidates if value), None)

    insecure: bool | None = None
    unverified = env.get("VSPHERE_ALLOW_UNVERIFIED_SSL", "").strip().lower()
    govc_insecure = env.get("GOVC_INSECURE", "").strip().lower()
    validate = env.get("VMWARE_VALIDATE_CERTS", "").strip().lower()
    if unverified:
        insecure = unverified in _TRUE
    elif govc_insecure:
        insecure = govc_insecure in _TRUE
    elif validate:
        insecure = validate in _FALSE  # Ansible says the opposite: validate, or not
    return {
        "server": first(env.get("VSPHERE_SERVER"), govc_server, env.get("VMWARE_HOST")),
        "user": first(env.get("VSPHERE_USER"), govc_user, env.get("GOVC_USERNAME"),
                      env.get("VMWARE_USER")),
        # An empty password is a password; an unset variable is not.
        "password": next((value for value in (env.get("VSPHERE_PASSWORD"), govc_password,
                                               env.get("GOVC_PASSWORD"),
                                               env.get("VMWARE_PASSWORD"))
                          if value is not None), None),
        "insecure": insecure,
        "ca_file": first(*(env.get(name) for name in CA_FILE_VARIABLES)),
    }


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach and log in to vCenter. The password is never shown in ``repr``."""

    server: str
    username: str
    password: str = field(repr=False)
    insecure: bool = False
    ca_file: str | None = None
    call_timeout: float = 120.0
    #: A directory for the SOAP wire log, one file per session (``--wire-log``);
    #: None: no log (:mod:`asyncovf.vsphere.wirelog`).
    wire_log: str | None = None

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
        environ: Mapping[str, str] | None = None,
        ask_password: Callable[[str, str], str] | None = None,
        wire_log: str | None = None,
    ) -> ConnectionSettings:
        """Options first, then a batch file's ``connection:`` values (server, user,
        password, insecure, ca_file), then the environment (the module's docstring).

        ``ask_password(server, user)`` is asked when nothing gives a password
        (the command line passes a terminal prompt; a library asks nothing).
        """
        given = batch or {}
        env = _from_environment(os.environ if environ is None else environ)
        server = server or _text(given.get("server")) or _text(env["server"])
        username = username or _text(given.get("user")) or _text(env["user"])
        if password is None:
            password = _text(given.get("password"))
        if password is None:
            password = _text(env["password"])
        if insecure is None and isinstance(given.get("insecure"), bool):
            insecure = bool(given["insecure"])
        # The CA file is checked here; its error names where it came from.
        ca_file, ca_origin = next(
            ((value, origin) for value, origin in (
                (ca_file, "--ca-file"), (_text(given.get("ca_file")), "connection.ca_file"),
                (_text(env["ca_file"]), CA_FILE_VARIABLES[0]))
             if value), (None, ""))
        if insecure is None:
            insecure = env["insecure"] is True
        if password is None and server and username and ask_password is not None:
            password = ask_password(server, username)
        missing = [
            f"{flag} (or {', '.join(variables)})"
            for flag, variables, value in (
                ("--server", SERVER_VARIABLES, server),
                ("--user", USER_VARIABLES, username),
                ("--password", PASSWORD_VARIABLES, password),
            )
            if not value
        ]
        if missing:
            raise UsageError("missing " + "; ".join(missing))
        assert server and username and password is not None
        if ca_file and not os.path.isfile(ca_file):
            raise UsageError(f"{ca_origin} {ca_file}: no such file")
        try:
            Endpoint.parse(server)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return cls(server=server, username=username, password=password,
                   insecure=bool(insecure), ca_file=ca_file, wire_log=wire_log)

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


__all__ = [
    "CA_FILE_VARIABLES",
    "PASSWORD_VARIABLES",
    "SERVER_VARIABLES",
    "USER_VARIABLES",
    "ConnectionSettings",
]
