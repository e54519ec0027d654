"""The options several commands take, each declared once, and the settings they become.

A command adds a group where its ``--help`` lists it. The value types keep
their names: argparse prints a type's name when a value does not convert
("argument --concurrency: invalid _positive_int value: 'x'").
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from asyncovf.cli.prompt import terminal_password_prompt
from asyncovf.engine.adaptive import parse_concurrency
from asyncovf.engine.limits import parse_bandwidth, parse_size
from asyncovf.engine.options import (
    OPTIONS,
    OPTIONS_BY_KEY,
    Kind,
    OnConflict,
    RunSettings,
    Stage,
)
from asyncovf.engine.ramp import parse_ramp
from asyncovf.errors import InputError, UsageError
from asyncovf.loadreport.thresholds import Threshold, ThresholdError, parse_threshold
from asyncovf.ovf.blobs import HttpSourceSettings
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES
from asyncovf.vsphere.connection import ConnectionSettings

SOURCE_HELP: Final = ("OVA file, OVF file, directory holding one .ovf, or an http(s) URL of "
                      ".ova/.ovf")


# -- value types --------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must not be negative")
    return value


def _error_rate_limit(text: str) -> float | None:
    """``--max-error-rate``: a fraction (0.5) or a percentage (50%) under 1, or ``off``."""
    if text.strip().lower() == "off":
        return None
    try:
        value = float(text.rstrip("% ")) / (100 if text.strip().endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a number, a percentage or off") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 0 and under 1 (100%)")
    return value


def _concurrency(text: str) -> tuple[int, int | None]:
    """``--concurrency``: ``N``, or ``auto[:MAX]`` (engine/adaptive.py)."""
    try:
        return parse_concurrency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number")
    return value


def _key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may contain ``=``, and may be empty)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key.strip(), value


def _ramp(text: str) -> tuple[int, ...]:
    try:
        return parse_ramp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text, "chunk size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bandwidth(text: str) -> float:
    try:
        return parse_bandwidth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- groups ---------------------------------------------------------------------------------


def add_debug_options(parser: argparse.ArgumentParser, *, verbose: bool = True) -> None:
    """``--debug`` and ``-v``, taken before the command or after it.

    Suppressed defaults: given before the command, the command's parser does
    not overwrite them with False. ``spec`` has a ``--verbose`` of its own.
    """
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="full tracebacks and debug logs")
    if verbose:
        parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                            help="log each phase")


def add_source_limits(parser: argparse.ArgumentParser) -> None:
    """How packages are read: the descriptor's size limit, the TLS of https:// sources."""
    parser.add_argument("--max-descriptor-size", type=_positive_int, metavar="BYTES",
                        default=DEFAULT_MAX_DESCRIPTOR_BYTES,
                        help="refuse descriptors larger than this "
                             f"(default {DEFAULT_MAX_DESCRIPTOR_BYTES // 2**20} MiB)")
    parser.add_argument("--source-ca-file", metavar="PEM",
                        help="CA bundle to trust for https:// package sources "
                             "(default: the system's)")
    parser.add_argument("--source-insecure", action="store_true",
                        help="do not verify the certificates of https:// package sources")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "connection (defaults from VSPHERE_*, then govc's GOVC_*, then Ansible's VMWARE_* "
        "environment; the password is asked for on a terminal)")
    group.add_argument("--server", help="vCenter URL or host [VSPHERE_SERVER, GOVC_URL, "
                                        "VMWARE_HOST]")
    group.add_argument("--user", help="user name [VSPHERE_USER, GOVC_USERNAME, VMWARE_USER]")
    group.add_argument("--password", help="password [VSPHERE_PASSWORD, GOVC_PASSWORD, "
                                          "VMWARE_PASSWORD]; prefer a variable or the prompt")
    group.add_argument("--insecure", action="store_true", default=None,
                       help="do not verify vCenter's TLS certificate "
                            "[VSPHERE_ALLOW_UNVERIFIED_SSL, GOVC_INSECURE, "
                            "VMWARE_VALIDATE_CERTS=false]")
    group.add_argument("--ca-file", metavar="PEM",
                       help="PEM bundle of CAs to trust for vCenter [VSPHERE_CA_FILE]")
    group.add_argument("--wire-log", metavar="DIR",
                       help="write every SOAP request and answer into DIR, a file per "
                            "session, secrets redacted (as govc's -debug)")


def add_placement_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Where the VM goes; the group, for the command to add ``--create-folders`` to."""
    group = parser.add_argument_group(
        "placement (inventory paths, names or ids; default: the only one there is)")
    group.add_argument("--datacenter")
    group.add_argument("--cluster")
    group.add_argument("--resource-pool")
    group.add_argument("--host")
    group.add_argument("--datastore")
    group.add_argument("--folder")
    return group


#: The help groups of the per-VM option flags.
STAGE_TITLES: Final = {
    Stage.IMPORT: "import",
    Stage.AFTER: "after the import (in this order; a failed step removes the VM)",
}


def add_vm_options(parser: argparse.ArgumentParser) -> dict[Stage, argparse._ArgumentGroup]:
    """A flag for each per-VM option of :data:`~asyncovf.engine.options.OPTIONS` that
    has one, in help groups by stage; returns the groups, for the command's own
    flags. Values stay as typed: :class:`CommandLine` words their errors when
    :func:`~asyncovf.engine.options.read_options` reads them, as a batch file's."""
    groups = {stage: parser.add_argument_group(title) for stage, title in STAGE_TITLES.items()}
    for option in OPTIONS:
        if not option.has_flag:
            continue
        arguments: dict[str, Any] = {"dest": option.key, "help": option.help}
        if option.kind is Kind.SWITCH:
            arguments.update(action="store_true", default=None)
        elif option.kind is Kind.PAIRS:
            arguments.update(action="append", type=_key_value, metavar=option.metavar)
        else:
            arguments.update(choices=option.choices, metavar=option.metavar)
        groups[option.stage].add_argument(option.flag, **arguments)
    return groups


class CommandLine:
    """The flags over an ``--options`` document, as an options source: an error
    names the flag, or the document's key, the operator wrote."""

    def __init__(self, document: str | None = None,
                 from_document: frozenset[str] = frozenset()) -> None:
        self.document, self.from_document = document, from_document

    def _name(self, key: str) -> str:
        option = OPTIONS_BY_KEY[key]
        if key in self.from_document:
            return f"--options {self.document}: {option.document_key}"
        return option.flag

    def setting(self, key: str) -> str:
        option = OPTIONS_BY_KEY[key]
        return f"{option.document_key}: true" if key in self.from_document else option.flag

    def invalid(self, key: str, message: str) -> InputError:
        return UsageError(f"{self._name(key)}: {message}")

    def conflict(self, key: str, complaint: str) -> InputError:
        return UsageError(f"{self._name(key)} {complaint}")


RunFlag = Literal["--parallel-disks", "--lease-timeout", "--keep-failed", "--no-verify-manifest",
                  "--create-folders", "--on-conflict", "--job-retries", "--report", "--pull"]


@dataclass(frozen=True)
class RunFlags:
    """The flags ``import`` and ``run`` both take to run their jobs, and what differs.

    Each flag's type, default and metavar are declared once, here; what a
    command words its own way (one VM, or a batch) is a field, and so is the
    default of ``--job-retries``: one VM is retried only when asked, a batch's
    jobs once. A command adds each flag to the group its ``--help`` lists it
    in; :func:`run_settings` reads them back.
    """

    job_retries_default: int
    parallel_disks: str
    lease_timeout: str
    keep_failed: str
    no_verify_manifest: str
    create_folders: str
    on_conflict: str
    job_retries: str  # "%(default)s" is job_retries_default
    report: str
    pull: str

    def add(self, group: argparse._ArgumentGroup, *flags: RunFlag) -> None:
        for flag in flags:
            group.add_argument(flag, **self._declaration(flag))

    def _declaration(self, flag: RunFlag) -> dict[str, Any]:
        match flag:
            case "--parallel-disks":
                return {"type": _positive_int, "default": 1, "metavar": "N",
                        "help": self.parallel_disks}
            case "--lease-timeout":
                return {"type": float, "default": 300.0, "metavar": "SECONDS",
                        "help": self.lease_timeout}
            case "--keep-failed":
                return {"action": "store_true", "help": self.keep_failed}
            case "--no-verify-manifest":
                return {"action": "store_true", "help": self.no_verify_manifest}
            case "--create-folders":
                return {"action": "store_true", "help": self.create_folders}
            case "--on-conflict":
                return {"choices": [c.value for c in OnConflict], "default": "fail",
                        "help": self.on_conflict}
            case "--job-retries":
                return {"type": _non_negative_int, "default": self.job_retries_default,
                        "metavar": "N", "help": self.job_retries}
            case "--report":
                return {"metavar": "FILE", "help": self.report}
            case "--pull":
                return {"action": "store_true", "help": self.pull}


# -- settings -------------------------------------------------------------------------------


def run_settings(args: argparse.Namespace, *, concurrency: int) -> RunSettings:
    """The run's settings from the :class:`RunFlags` (``run`` replaces its own on top)."""
    return RunSettings(concurrency=concurrency, verify_manifest=not args.no_verify_manifest,
                       keep_failed=args.keep_failed, parallel_disks=args.parallel_disks,
                       lease_ready_timeout=args.lease_timeout,
                       create_folders=args.create_folders, pull=args.pull,
                       on_conflict=OnConflict(args.on_conflict), job_retries=args.job_retries)


def connection_settings(args: argparse.Namespace,
                        batch: Mapping[str, str | bool] | None = None) -> ConnectionSettings:
    """The connection flags, then the batch file's ``connection:`` (``run``), then the
    environment; then, on a terminal, the password prompt."""
    return ConnectionSettings.from_options(
        server=args.server, username=args.user, password=args.password,
        insecure=args.insecure, ca_file=args.ca_file, batch=batch,
        ask_password=terminal_password_prompt(), wire_log=args.wire_log,
    )


def source_settings(args: argparse.Namespace) -> HttpSourceSettings:
    """How https:// package sources are verified (:func:`add_source_limits`)."""
    return HttpSourceSettings(ca_file=args.source_ca_file, insecure=args.source_insecure)


def threshold_option(text: str) -> Threshold:
    """``--threshold``'s type: a parse error is argparse's usage error, one line naming
    the flag (exit 2)."""
    try:
        return parse_threshold(text)
    except ThresholdError as exc:
        raise argparse.ArgumentTypeError(f"{exc.expression!r}: {exc.reason}") from None


def add_threshold_option(group: argparse._ActionsContainer, *, what: str) -> None:
    """``--threshold EXPR`` (repeatable), the same for ``run`` and ``report``."""
    group.add_argument("--threshold", type=threshold_option, action="append", default=[],
                       metavar="EXPR",
                       help=f"load test: fail {what} (exit 3) unless EXPR holds, e.g. "
                            "'p95(upload)<30s', 'error_rate<1%%', 'imports_per_s>5'; "
                            "repeatable")


__all__ = ["CommandLine", "RunFlag", "RunFlags", "SOURCE_HELP", "STAGE_TITLES",
           "add_connection_options", "add_debug_options", "add_placement_options",
           "add_source_limits", "add_threshold_option", "add_vm_options", "connection_settings",
           "run_settings", "source_settings", "threshold_option"]
