"""One immutable options value for an import, whatever said it, and the run-wide settings.

An option is said in one of three places: a command-line flag (``--power-on``),
a batch file key (``power_on: true``) or govc's options document
(``"PowerOn": true``). :data:`OPTIONS` declares each option once — its key, its
flag, its document key and how a value is read — and :func:`read_options`
turns the values of any of those places into one :class:`ImportOptions`,
checking each value and then :data:`RULES`, the rules between options, once.
Errors are worded by the place the value came from (an :class:`OptionSource`):
``--wait-for-ip needs --power-on`` on the command line,
``vms[3].wait_for_ip: needs power_on: true`` in a batch file.

:class:`RunSettings` holds what belongs to a whole run (workers, retries,
limits); :meth:`RunSettings.apply` gives a job's options the run's transfer
settings.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import partial
from typing import Any, Final, Protocol, TypeVar

from asyncovf.engine.limits import chunk_size_for
from asyncovf.engine.ramp import check_ramp
from asyncovf.errors import InputError
from asyncovf.ovf.package import DEFAULT_CHUNK_SIZE
from asyncovf.spec import (
    DISK_PROVISIONING_OPTIONS,
    INFORMATIONAL_KEYS,
    IP_ALLOCATION_POLICIES,
    IP_PROTOCOLS,
)
from asyncovf.vsphere.session import RetryPolicy

#: How a run creates its VMs (``strategy``): each one imported, or cloned from a seed.
STRATEGIES: Final = ("import", "clone")
#: Seconds to wait for the guest's IP address when no ``ip_timeout`` is given.
DEFAULT_IP_TIMEOUT: Final = 300.0


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How one VM is imported: what the operator said, in any of the three places,
    plus the transfer settings the run gives every job (:meth:`RunSettings.apply`).

    ``network_mapping`` maps OVF network names to vCenter network *names* (port
    group, distributed port group or opaque network); the job resolves them in
    its datacenter. A contradiction between options (:data:`RULES`) is refused
    at construction, so no import starts with one.
    """

    deployment: str | None = None
    disk_provisioning: str | None = None
    ip_allocation_policy: str | None = None
    ip_protocol: str | None = None
    network_mapping: Mapping[str, str] = field(default_factory=dict)  # OVF name → network
    properties: Mapping[str, str] = field(default_factory=dict)  # full property key → value
    annotation: str | None = None
    locale: str | None = None  # CreateImportSpec's locale for the descriptor's messages
    #: May set properties the vendor did not mark userConfigurable (govc's -hidden).
    hidden: bool = False
    # Post-import steps (POST_IMPORT_STEPS), each only when asked for.
    extra_config: Mapping[str, str] = field(default_factory=dict)
    inject_ovf_env: bool = False
    hardware_version: str | None = None  # normalised: "vmx-19"
    mark_as_template: bool = False
    power_on: bool = False
    wait_for_ip: bool = False
    ip_timeout: float = DEFAULT_IP_TIMEOUT
    #: Create the placement's VM folder path if it is missing; None: the run's setting.
    create_folders: bool | None = None
    #: Disks of one VM uploaded at once (never with delta disks: they go in order);
    #: None: the run's setting.
    parallel_disks: int | None = None
    #: "import" (every VM uploaded) or "clone" (one seed VM imported per group, the
    #: others cloned from it: engine/seeds.py); None: the run's (``--strategy``).
    strategy: str | None = None
    #: Clone from a snapshot of the seed, sharing its disks (only with "clone").
    linked_clone: bool = False
    #: Keep the seed VM when its group is done (only with "clone").
    keep_seed: bool = False
    #: The ESXi host fetches the disks from the http(s) source (engine/pull.py);
    #: None: the run's (``--pull``).
    pull: bool | None = None
    # The transfer: the run's settings (RunSettings.apply), or the library caller's.
    verify_manifest: bool = True
    keep_failed: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    lease_ready_timeout: float = 300.0
    stall_timeout: float = 120.0
    upload_attempts: int = 4  # per file; each attempt reopens the source
    upload_initial_wait: float = 0.5
    upload_max_wait: float = 10.0
    #: ESXi host names device URLs may name besides vCenter (from the inventory).
    esxi_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        rule = broken_rule({key: getattr(self, key) for each in RULES
                            for key in (each.key, each.other)})
        if rule is not None:
            raise LIBRARY.conflict(rule.key, rule.complaint(LIBRARY))


# -- reading one value -------------------------------------------------------------------

#: Yes/no cells of a CSV file and values of an options document (YAML has its own).
_BOOLEAN_WORDS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False,
                         "0": False, "": False}


def read_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a string")
    return str(value)


def read_name(value: Any) -> str | None:
    """A name that may be left empty: empty is not given (the descriptor's default)."""
    return read_text(value) or None


def read_switch(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
        value = _BOOLEAN_WORDS[value.strip().lower()]
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def read_seconds(value: Any) -> float:
    try:
        seconds = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise ValueError(f"{value!r}: must be a positive number of seconds")
    return seconds


def read_disk_count(value: Any) -> int:
    text = value.strip() if isinstance(value, str) else None
    number = int(text) if text is not None and text.isascii() and text.isdigit() else value
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ValueError(f"{value!r}: must be a positive integer (disks uploaded at once)")
    return number


def parse_hardware_version(value: Any) -> str:
    """``vmx-19``, ``19`` or 19 → ``"vmx-19"``; ValueError with a usable message otherwise."""
    text = str(value).strip().lower() if not isinstance(value, bool) else ""
    number = text.removeprefix("vmx-")
    if not (number.isascii() and number.isdigit()) or not 3 <= int(number) <= 99:
        raise ValueError(f"{value!r} is not a hardware version; expected vmx-NN or NN "
                         "(e.g. vmx-19 or 19)")
    return f"vmx-{int(number)}"


def _read_choice(allowed: tuple[str, ...], listed: str) -> Callable[[Any], str]:
    def read(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {listed}")
        return str(value)
    return read


def _read_pairs(text: Callable[[Any], str]) -> Callable[[Any], dict[str, str]]:
    def read(value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of name: value")
        return {str(k): "" if v is None else text(v) for k, v in value.items()}
    return read


def _vmx_text(value: Any) -> str:
    """An extra config value as a .vmx file writes it: YAML's true/false as TRUE/FALSE."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def _read_extra_config(value: Any) -> dict[str, str]:
    pairs = _read_pairs(_vmx_text)(value)
    if any(not key.strip() for key in pairs):
        raise ValueError("a key is empty")
    return pairs


# -- the options, each declared once --------------------------------------------------------


class Kind(enum.Enum):
    """How a flag takes its value on the command line."""

    VALUE = "value"  # --flag VALUE
    SWITCH = "switch"  # --flag
    PAIRS = "pairs"  # --flag KEY=VALUE, repeatable


class Stage(enum.Enum):
    """Which part of an import an option shapes (the command line's help groups)."""

    IMPORT = "import"
    AFTER = "after"  # a post-import step, run in OPTIONS order
    RUN = "run"  # a run-wide setting a batch entry may override for its VM


@dataclass(frozen=True)
class Option:
    """One option of :class:`ImportOptions`: where it may be said and how it is read."""

    key: str  # the ImportOptions field and the batch key
    read: Callable[[Any], Any]  # raises ValueError with a message
    help: str
    stage: Stage = Stage.IMPORT
    kind: Kind = Kind.VALUE
    #: The key in govc's import.spec options document; None: the document has none.
    document_key: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    #: A per-VM command-line flag (``--`` and the key with dashes); False: none, the
    #: command line sets it run-wide.
    has_flag: bool = True

    @property
    def flag(self) -> str:
        return "--" + {"network_mapping": "net", "properties": "prop"}.get(
            self.key, self.key.replace("_", "-"))


OPTIONS: Final[tuple[Option, ...]] = (
    Option("deployment", read_name, "deployment option id (default: the descriptor's)",
           document_key="Deployment"),
    Option("disk_provisioning",
           _read_choice(DISK_PROVISIONING_OPTIONS, ", ".join(sorted(DISK_PROVISIONING_OPTIONS))),
           "thin, thick, eagerZeroedThick, … (default: vCenter's)",
           document_key="DiskProvisioning"),
    Option("locale", read_name, "locale for the descriptor's messages (e.g. de_DE)"),
    Option("hidden", read_switch,
           "allow setting properties the vendor did not mark user-configurable",
           kind=Kind.SWITCH),
    Option("network_mapping", _read_pairs(str),
           "map an OVF network to a port group, distributed port group or opaque network "
           "(repeatable)", kind=Kind.PAIRS, document_key="NetworkMapping",
           metavar="OVFNETWORK=TARGET"),
    Option("properties", _read_pairs(str),
           "set a vApp property (full class.key.instance key; repeatable)",
           kind=Kind.PAIRS, document_key="PropertyMapping", metavar="KEY=VALUE"),
    Option("annotation", read_text, "the VM's annotation (notes)", document_key="Annotation",
           metavar="TEXT"),
    Option("ip_allocation_policy",
           _read_choice(IP_ALLOCATION_POLICIES, ", ".join(IP_ALLOCATION_POLICIES)),
           "how the appliance gets its IP addresses (default: vCenter's)",
           document_key="IPAllocationPolicy", choices=IP_ALLOCATION_POLICIES),
    Option("ip_protocol", _read_choice(IP_PROTOCOLS, ", ".join(IP_PROTOCOLS)), "IPv4 or IPv6",
           document_key="IPProtocol", choices=IP_PROTOCOLS),
    # After the import, in this order.
    Option("extra_config", _read_extra_config, "add an extra config (.vmx) key (repeatable)",
           stage=Stage.AFTER, kind=Kind.PAIRS, document_key="ExtraConfig",
           metavar="KEY=VALUE"),
    Option("inject_ovf_env", read_switch,
           "write the OVF environment (properties) into guestinfo.ovfEnv",
           stage=Stage.AFTER, kind=Kind.SWITCH, document_key="InjectOvfEnv"),
    Option("hardware_version", parse_hardware_version,
           "upgrade the virtual hardware, e.g. vmx-19 or 19", stage=Stage.AFTER,
           document_key="HardwareVersion", metavar="VERSION"),
    Option("mark_as_template", read_switch, "turn the VM into a template (not with --power-on)",
           stage=Stage.AFTER, kind=Kind.SWITCH, document_key="MarkAsTemplate"),
    Option("power_on", read_switch, "power the VM on", stage=Stage.AFTER, kind=Kind.SWITCH,
           document_key="PowerOn"),
    Option("wait_for_ip", read_switch,
           "wait until the guest reports an IP address (needs --power-on)",
           stage=Stage.AFTER, kind=Kind.SWITCH, document_key="WaitForIP"),
    Option("ip_timeout", read_seconds, "how long --wait-for-ip waits (default 300)",
           stage=Stage.AFTER, metavar="SECONDS"),
    # Run-wide on the command line; a batch entry may set them for its VMs.
    Option("create_folders", read_switch, "create the VM folder path if it does not exist",
           stage=Stage.RUN, kind=Kind.SWITCH, has_flag=False),
    Option("parallel_disks", read_disk_count, "upload up to N disks at once",
           stage=Stage.RUN, has_flag=False),
    Option("strategy", _read_choice(STRATEGIES, ", ".join(STRATEGIES)),
           "import every VM, or import one seed per group and clone the rest",
           stage=Stage.RUN, choices=STRATEGIES, has_flag=False),
    Option("linked_clone", read_switch, "clone from a snapshot of the seed (shared disks)",
           stage=Stage.RUN, kind=Kind.SWITCH, has_flag=False),
    Option("keep_seed", read_switch, "keep the seed VM when its group is done",
           stage=Stage.RUN, kind=Kind.SWITCH, has_flag=False),
    Option("pull", read_switch, "the ESXi host fetches the disks from the http(s) source",
           stage=Stage.RUN, kind=Kind.SWITCH, has_flag=False),
)
OPTIONS_BY_KEY: Final = {option.key: option for option in OPTIONS}
#: govc's options document key → option key, for the keys we act on.
DOCUMENT_KEYS: Final = {option.document_key: option.key for option in OPTIONS
                        if option.document_key}


#: Keys of an options document's pair lists, where they are not Key and Value.
_DOCUMENT_PAIR_NAMES: Final = {"network_mapping": ("Name", "Network")}


def document_values(document: Mapping[str, Any],
                    invalid: Callable[[str, str], InputError]) -> dict[str, Any]:
    """Option values (option key → raw value) from govc's import.spec options document.

    Its lists of ``{Key, Value}`` (``{Name, Network}``) pairs become mappings; an
    empty ``HardwareVersion`` is the document's "not asked for"; the keys
    ``asyncovf spec --verbose`` adds to inform and ``Name`` (which names a VM,
    not how to import it) are left to the caller. ``invalid(document_key,
    message)`` is the error for a key or value it cannot take.
    """
    values: dict[str, Any] = {}
    for document_key, value in document.items():
        key = DOCUMENT_KEYS.get(document_key)
        if key is None:
            if document_key in INFORMATIONAL_KEYS or document_key in (
                    "AllDeploymentOptions", "Name"):
                continue
            raise invalid(document_key, "unknown options key")
        if OPTIONS_BY_KEY[key].kind is Kind.PAIRS:
            names = _DOCUMENT_PAIR_NAMES.get(key, ("Key", "Value"))
            value = _document_pairs(value, *names, partial(invalid, document_key))
        elif key == "hardware_version" and value in ("", None):
            continue
        values[key] = value
    return values


def _document_pairs(value: Any, key_name: str, value_name: str,
                    invalid: Callable[[str], InputError]) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if not isinstance(value, list):
        raise invalid(f"must be a list of {{{key_name}, {value_name}}}")
    pairs: dict[str, str] = {}
    for item in value:
        if not isinstance(item, Mapping) or key_name not in item:
            raise invalid(f"each item needs {key_name!r}")
        pairs[str(item[key_name])] = "" if item.get(value_name) is None else str(item[value_name])
    return pairs


# -- the rules between options ----------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """``key`` needs ``other`` set (``needs``), or cannot be set with it."""

    key: str
    other: str
    needs: bool
    why: str

    def broken(self, values: Mapping[str, Any]) -> bool:
        return bool(values.get(self.key)) and bool(values.get(self.other)) is not self.needs

    def complaint(self, source: OptionSource) -> str:
        """What is wrong, worded for ``source``: ``needs --power-on (…)``."""
        verb = "needs" if self.needs else "contradicts"
        return f"{verb} {source.setting(self.other)} ({self.why})"


RULES: Final = (
    Rule("mark_as_template", "power_on", needs=False, why="a template cannot be powered on"),
    Rule("wait_for_ip", "power_on", needs=True, why="a VM that is off gets no IP address"),
)


def broken_rule(values: Mapping[str, Any]) -> Rule | None:
    """The first rule ``values`` (option key → value) break, if any."""
    return next((rule for rule in RULES if rule.broken(values)), None)


class OptionSource(Protocol):
    """Where option values came from, so that an error names them as it did."""

    def setting(self, key: str) -> str:
        """How this source sets ``key``: ``--power-on``, ``power_on: true``."""
        ...

    def invalid(self, key: str, message: str) -> InputError:
        """The error for a bad value of ``key``."""
        ...

    def conflict(self, key: str, complaint: str) -> InputError:
        """The error for ``key`` breaking a rule: ``complaint`` is ``needs …``."""
        ...


class _Library:
    """Options made in code: named by their field."""

    def setting(self, key: str) -> str:
        return f"{key}=True"

    def invalid(self, key: str, message: str) -> InputError:
        return InputError(f"{key}: {message}")

    def conflict(self, key: str, complaint: str) -> InputError:
        return InputError(f"{key} {complaint}")


LIBRARY: Final = _Library()
_NO_PAIRS: Final[dict[str, str]] = {}
_PAIR_KEYS: Final = tuple(option.key for option in OPTIONS if option.kind is Kind.PAIRS)


def read_options(values: Mapping[str, Any], source: OptionSource) -> ImportOptions:
    """The options ``values`` (option key → raw value) say, each read and checked.

    Keys not in :data:`OPTIONS` are the caller's mistake (sources check their
    keys first). A bad value or a broken rule raises ``source``'s error.
    """
    read: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        try:
            read[key] = OPTIONS_BY_KEY[key].read(value)
        except ValueError as exc:
            raise source.invalid(key, str(exc)) from None
    rule = broken_rule(read)
    if rule is not None:
        raise source.conflict(rule.key, rule.complaint(source))
    # Mappings not said share one empty dict (never changed, as no mapping of
    # options is), not three new ones per VM.
    return ImportOptions(**{key: _NO_PAIRS for key in _PAIR_KEYS} | read)


_T = TypeVar("_T")


class Shared:
    """One object for each value met again: a large batch's jobs share their sources,
    placements and options instead of holding thousands of equal copies.

    Frozen dataclasses, strings and mappings of strings, compared by type and value
    (``True`` is not ``1``, a mapping's order counts). At most ``limit`` values are
    kept, so a batch of values all different costs no more than without it.
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self.values: dict[Hashable, Any] = {}

    def __call__(self, value: _T) -> _T:
        key = _value_key(value)
        found = self.values.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        if len(self.values) < self.limit:
            self.values[key] = value
        return value


def _value_key(value: Any) -> Hashable:
    if is_dataclass(value):
        return (type(value), *(_value_key(getattr(value, f.name)) for f in fields(value)))
    if isinstance(value, Mapping):
        return (Mapping, *((key, _value_key(item)) for key, item in value.items()))
    return (type(value), value)


# -- the run ----------------------------------------------------------------------------------


class OnConflict(enum.Enum):
    FAIL = "fail"
    SKIP = "skip"
    REPLACE = "replace"


@dataclass(frozen=True)
class RunSettings:
    concurrency: int = 8
    max_per_host: int | None = None
    max_per_datastore: int | None = None
    bandwidth: float | None = None  # bytes per second, all uploads together
    job_retries: int = 1
    on_conflict: OnConflict = OnConflict.FAIL
    job_timeout: float | None = None
    keep_failed: bool = False
    verify_manifest: bool = True
    upload_attempts: int = 4
    upload_initial_wait: float = 0.5
    soap_retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_ready_timeout: float = 300.0
    stall_timeout: float = 120.0
    chunk_size: int | None = None  # None: chosen by concurrency (limits.chunk_size_for)
    create_folders: bool = False
    parallel_disks: int = 1
    #: A load test's concurrency schedule (:func:`check_ramp`): start with ``ramp[0]``
    #: workers and add workers up to the next step every ``ramp_interval`` s.
    #: Empty: ``concurrency`` workers from the start.
    ramp: tuple[int, ...] = ()
    ramp_interval: float = 30.0
    #: One CreateImportSpec per VM (``--spec-per-vm``), for a load test of that call;
    #: by default once per group of VMs, each VM's spec derived (engine/import_specs.py).
    spec_per_vm: bool = False
    #: How jobs that do not say (``strategy``) create their VMs (``--strategy``).
    strategy: str = "import"
    #: Whether jobs that do not say (``pull``) let the host fetch their disks (``--pull``).
    pull: bool = False
    #: The circuit breaker (engine/breaker.py): stop taking new jobs once more than
    #: ``max_error_rate`` of the last ``error_window`` finished jobs failed (None: never).
    error_window: int = 20
    max_error_rate: float | None = 0.5
    #: The first pause after a burst of transient failures, in seconds (it doubles).
    burst_pause: float = 2.0
    #: ``--concurrency auto``: the workers follow what vCenter can take, up to
    #: ``concurrency`` (engine/adaptive.py). Not with a ramp.
    adaptive: bool = False

    def __post_init__(self) -> None:
        if self.error_window < 1:
            raise ValueError(f"error_window must be at least 1 job, not {self.error_window}")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate < 1:
            raise ValueError("max_error_rate must be at least 0 and under 1, not "
                             f"{self.max_error_rate:g}")
        if self.adaptive and self.ramp:
            raise ValueError("adaptive concurrency and a ramp exclude each other")
        if self.ramp:
            check_ramp(self.ramp)
            # The pool is sized (memory, chunk size, stream buffer) for its peak.
            object.__setattr__(self, "concurrency", self.ramp[-1])

    def creates_folders(self, options: ImportOptions) -> bool:
        """The job's ``create_folders``, or the run's (``--create-folders``)."""
        return options.create_folders if options.create_folders is not None \
            else self.create_folders

    def apply(self, options: ImportOptions, *,
              esxi_hosts: frozenset[str] = frozenset()) -> ImportOptions:
        """A job's options with this run's transfer settings (its own where it has them)."""
        return replace(
            options,
            verify_manifest=self.verify_manifest,
            keep_failed=self.keep_failed,
            lease_ready_timeout=self.lease_ready_timeout,
            stall_timeout=self.stall_timeout,
            upload_attempts=self.upload_attempts,
            upload_initial_wait=self.upload_initial_wait,
            chunk_size=self.chunk_size or chunk_size_for(self.concurrency),
            create_folders=self.creates_folders(options),
            parallel_disks=options.parallel_disks or self.parallel_disks,
            esxi_hosts=esxi_hosts,
            strategy=options.strategy or self.strategy,
            pull=self.pull if options.pull is None else options.pull,
        )


#: The fields an operator sets per VM (the rest are the run's transfer settings).
VM_OPTION_KEYS: Final = frozenset(option.key for option in OPTIONS)
assert VM_OPTION_KEYS <= {f.name for f in fields(ImportOptions)}

__all__ = [
    "DEFAULT_IP_TIMEOUT",
    "DOCUMENT_KEYS",
    "LIBRARY",
    "OPTIONS",
    "OPTIONS_BY_KEY",
    "RULES",
    "VM_OPTION_KEYS",
    "ImportOptions",
    "Kind",
    "OnConflict",
    "Option",
    "OptionSource",
    "Rule",
    "RunSettings",
    "STRATEGIES",
    "Shared",
    "Stage",
    "broken_rule",
        "document_values",
    "parse_hardware_version",
        "read_options",
    "read_switch",
]
