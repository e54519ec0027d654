"""Batch files → a validated, ordered list of jobs. Pure: text in, jobs out.

A batch file is YAML::

    connection: {server: vc.example.com, user: admin, insecure: false}   # optional
    defaults:
      source: ./photon.ova
      cluster: DC0_C0
      datastore: LocalDS_0
    vms:
      - name: "web-{index:03d}"
        count: 200
      - name: db-01
        source: ./db.ova
    vms_csv: more-vms.csv        # optional: one row per VM, columns are the same keys

Every entry inherits ``defaults`` and overrides what it names. The whole file
is validated before anything is imported, and every error names the file, the
line and the field. Relative sources are relative to the batch file.
"""

from __future__ import annotations

import csv
import io
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from asyncovf.errors import InputError
from asyncovf.spec import (
    DISK_PROVISIONING_OPTIONS,
    INFORMATIONAL_KEYS,
    IP_ALLOCATION_POLICIES,
    IP_PROTOCOLS,
)
from asyncovf.vsphere.inventory import PlacementRequest

PLACEMENT_KEYS: Final = ("datacenter", "cluster", "resource_pool", "host", "datastore", "folder")
JOB_KEYS: Final = frozenset({
    "name", "count", "source", *PLACEMENT_KEYS, "deployment", "disk_provisioning",
    "ip_allocation_policy", "ip_protocol", "network_mapping", "properties", "power_on",
    "annotation", "options", "locale", "hidden", "wait_for_ip", "ip_timeout", "inject_ovf_env",
    "mark_as_template", "extra_config", "hardware_version", "create_folders", "parallel_disks",
})
TOP_KEYS: Final = frozenset({"connection", "defaults", "vms", "vms_csv"})
CONNECTION_KEYS: Final = frozenset({"server", "user", "password", "insecure", "ca_file"})
DISK_PROVISIONING: Final = frozenset(DISK_PROVISIONING_OPTIONS)
#: Keys of govc's ``import.spec`` options document we act on, and their batch key.
OPTION_KEYS: Final = {
    "Name": "name",
    "Deployment": "deployment",
    "DiskProvisioning": "disk_provisioning",
    "IPAllocationPolicy": "ip_allocation_policy",
    "IPProtocol": "ip_protocol",
    "NetworkMapping": "network_mapping",
    "PropertyMapping": "properties",
    "PowerOn": "power_on",
    "Annotation": "annotation",
    "InjectOvfEnv": "inject_ovf_env",
    "WaitForIP": "wait_for_ip",
    "MarkAsTemplate": "mark_as_template",
    # Our extensions (govc ignores keys it does not know).
    "ExtraConfig": "extra_config",
    "HardwareVersion": "hardware_version",
}
#: Seconds to wait for the guest's IP address when no ``ip_timeout`` is given.
DEFAULT_IP_TIMEOUT: Final = 300.0
#: Yes/no cells of a CSV file (YAML has its own booleans).
_CSV_BOOLEANS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False,
                        "0": False, "": False}


class BatchError(InputError):
    """A batch file problem, located: ``file:line: field: message``."""

    def __init__(self, file: str, line: int | None, where: str, message: str) -> None:
        self.file, self.line, self.where = file, line, where
        location = f"{file}:{line}" if line else file
        super().__init__(f"{location}: {where}: {message}" if where else f"{location}: {message}")


@dataclass(frozen=True)
class Connection:
    server: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure: bool | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """One VM to import, fully resolved from defaults and its entry."""

    index: int  # position in file order, 0-based
    name: str
    source: str
    placement: PlacementRequest
    origin: str  # "batch.yaml:12", for error messages
    deployment: str | None = None
    disk_provisioning: str | None = None
    ip_allocation_policy: str | None = None
    ip_protocol: str | None = None
    network_mapping: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    power_on: bool = False
    annotation: str | None = None
    locale: str | None = None
    #: May set properties the vendor did not mark userConfigurable (govc's -hidden).
    hidden: bool = False
    # Post-import steps, run in this order after the import completes.
    extra_config: Mapping[str, str] = field(default_factory=dict)
    inject_ovf_env: bool = False
    hardware_version: str | None = None  # normalised: "vmx-19"
    mark_as_template: bool = False
    wait_for_ip: bool = False
    ip_timeout: float = DEFAULT_IP_TIMEOUT
    # Run-wide settings a job may override; None: the run's (``run --create-folders``,
    # ``--parallel-disks``).
    create_folders: bool | None = None
    parallel_disks: int | None = None


def parse_hardware_version(value: Any) -> str:
    """``vmx-19``, ``19`` or 19 → ``"vmx-19"``; ValueError with a usable message otherwise."""
    text = str(value).strip().lower() if not isinstance(value, bool) else ""
    number = text.removeprefix("vmx-")
    if not number.isdigit() or not 3 <= int(number) <= 99:
        raise ValueError(f"{value!r} is not a hardware version; expected vmx-NN or NN "
                         "(e.g. vmx-19 or 19)")
    return f"vmx-{int(number)}"


@dataclass(frozen=True)
class BatchPlan:
    path: str
    connection: Connection
    jobs: tuple[JobSpec, ...]

    def shard(self, number: int, total: int) -> BatchPlan:
        """Shard ``number`` of ``total`` (1-based): every ``total``-th job, round robin.

        Round robin keeps shards equally loaded whatever the file's order, and
        depends only on the file, so N copies of the tool split a batch with no
        coordination (e.g. Kubernetes Indexed Jobs).
        """
        if not 1 <= number <= total:
            raise InputError(f"--shard {number}/{total}: K must be between 1 and {total}")
        jobs = tuple(job for job in self.jobs if job.index % total == number - 1)
        return BatchPlan(self.path, self.connection, jobs)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        number, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text}: expected K/N, e.g. 1/4") from None
    if total < 1 or not 1 <= number <= total:
        raise InputError(f"--shard {text}: K must be between 1 and N")
    return number, total


# -- YAML with line numbers ---------------------------------------------------------


class _Located(dict[str, Any]):
    """A mapping that remembers the line of itself and of each key."""

    line: int = 0
    lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    mapping = _Located()
    mapping.line = node.start_mark.line + 1
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise yaml.MarkedYAMLError(problem=f"key {key!r} is not a string",
                                       problem_mark=key_node.start_mark)
        if key in mapping:
            raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}",
                                       problem_mark=key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(mapping: Any, key: str | None = None) -> int | None:
    if isinstance(mapping, _Located):
        return mapping.lines.get(key, mapping.line) if key else mapping.line
    return None


# -- templates ------------------------------------------------------------------------------


class _Template(string.Formatter):
    """``str.format`` limited to plain named fields: no attribute or item access."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if field_name not in self.allowed:
            raise KeyError(field_name)
        return super().get_field(field_name, args, kwargs)


def render(template: str, **values: Any) -> str:
    """Render a name or property template; raise ValueError with a usable message."""
    try:
        return _Template(frozenset(values)).format(template, **values)
    except KeyError as exc:
        raise ValueError(f"unknown placeholder {{{exc.args[0]}}} (use {{index}} or "
                         "{name})") from None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from None


def _has_placeholder(template: str) -> bool:
    return any(name is not None for _, name, _, _ in string.Formatter().parse(template))


# -- parsing ----------------------------------------------------------------------------------


def load_batch(path: str | Path) -> BatchPlan:
    """Read and validate a batch file (and its ``vms_csv``), or raise :class:`BatchError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(str(path), None, "", f"cannot read: {exc}") from exc
    if path.suffix.lower() == ".csv":
        return parse_batch(_Located(vms_csv=path.name), file=str(path), base=path.parent)
    try:
        document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise BatchError(str(path), line, "", f"YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise BatchError(str(path), None, "", f"YAML: {exc}") from exc
    return parse_batch(document, file=str(path), base=path.parent)


def parse_batch(document: Any, *, file: str, base: Path) -> BatchPlan:
    """Validate a parsed batch document; ``base`` anchors relative paths."""
    if not isinstance(document, dict):
        raise BatchError(file, None, "", "expected a mapping with 'vms' (and 'defaults')")
    _check_keys(document, TOP_KEYS, file, "")
    connection = _parse_connection(document.get("connection"), file, document)
    defaults = document.get("defaults") or _Located()
    if not isinstance(defaults, dict):
        raise BatchError(file, _line(document, "defaults"), "defaults", "must be a mapping")
    _check_keys(defaults, JOB_KEYS - {"name", "count"}, file, "defaults")
    defaults = _merge_options(defaults, file, "defaults")

    entries: list[tuple[str, Mapping[str, Any], str]] = []
    vms = document.get("vms") or []
    if not isinstance(vms, list):
        raise BatchError(file, _line(document, "vms"), "vms", "must be a list of VM entries")
    for number, entry in enumerate(vms):
        where = f"vms[{number}]"
        if not isinstance(entry, dict):
            raise BatchError(file, _line(document, "vms"), where, "must be a mapping")
        entries.append((where, entry, f"{file}:{_line(entry)}"))
    if "vms_csv" in document:
        csv_name = document["vms_csv"]
        if not isinstance(csv_name, str):
            raise BatchError(file, _line(document, "vms_csv"), "vms_csv", "must be a file name")
        entries.extend(_csv_entries(base / csv_name))
    if not entries:
        raise BatchError(file, None, "vms", "no VMs to import")

    jobs: list[JobSpec] = []
    seen: dict[str, str] = {}
    for where, entry, origin in entries:
        entry_file, _, entry_line = origin.rpartition(":")
        line = int(entry_line) if entry_line.isdigit() else None
        _check_keys(entry, JOB_KEYS, entry_file, where)
        merged_entry = _merge_options(entry, entry_file, where)
        for spec in _expand(merged_entry, defaults, where, entry_file, line, base, len(jobs)):
            if spec.name in seen:
                raise BatchError(entry_file, line, f"{where}.name",
                                 f"VM name {spec.name!r} repeats the one from {seen[spec.name]}")
            seen[spec.name] = spec.origin
            jobs.append(spec)
    return BatchPlan(path=file, connection=connection, jobs=tuple(jobs))


def _check_keys(mapping: Mapping[str, Any], allowed: frozenset[str], file: str,
                where: str) -> None:
    for key in mapping:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise BatchError(file, _line(mapping, key), f"{where}.{key}" if where else key,
                             f"unknown key; expected one of: {hint}")


def _parse_connection(raw: Any, file: str, document: Mapping[str, Any]) -> Connection:
    if raw is None:
        return Connection()
    if not isinstance(raw, dict):
        raise BatchError(file, _line(document, "connection"), "connection", "must be a mapping")
    _check_keys(raw, CONNECTION_KEYS, file, "connection")
    for key in ("server", "user", "password", "ca_file"):
        if key in raw and not isinstance(raw[key], str):
            raise BatchError(file, _line(raw, key), f"connection.{key}", "must be a string")
    if "insecure" in raw and not isinstance(raw["insecure"], bool):
        raise BatchError(file, _line(raw, "insecure"), "connection.insecure",
                         "must be true or false")
    return Connection(server=raw.get("server"), user=raw.get("user"),
                      password=raw.get("password"), insecure=raw.get("insecure"),
                      ca_file=raw.get("ca_file"))


def _merge_options(entry: Mapping[str, Any], file: str, where: str) -> _Located:
    """Fold an inline ``options:`` document (govc ``import.spec`` format) into batch keys.

    Explicit batch keys win over the document's, as a per-VM override should.
    """
    merged = _Located(entry)
    merged.line = _line(entry) or 0
    merged.lines = dict(getattr(entry, "lines", {}))
    document = merged.pop("options", None)
    if document is None:
        return merged
    line = _line(entry, "options")
    if not isinstance(document, dict):
        raise BatchError(file, line, f"{where}.options", "must be a mapping (asyncovf spec "
                                                         "output)")
    for key, value in document.items():
        if key in OPTION_KEYS:
            target = OPTION_KEYS[key]
            if target == "network_mapping":
                value = _pairs(value, "Name", "Network", file, line, f"{where}.options.{key}")
            elif target in ("properties", "extra_config"):
                value = _pairs(value, "Key", "Value", file, line, f"{where}.options.{key}")
            elif target == "hardware_version" and value in ("", None):
                continue  # the document's "not asked for"
            if target == "name" or target in merged:
                continue  # the VM name comes from the entry, never from a shared document
            merged[target] = value
        elif key in INFORMATIONAL_KEYS or key == "AllDeploymentOptions":
            continue  # what `asyncovf spec --verbose` adds to inform; nothing to apply
        else:
            raise BatchError(file, line, f"{where}.options.{key}", "unknown options key")
    return merged


def _pairs(value: Any, key_name: str, value_name: str, file: str, line: int | None,
           where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if not isinstance(value, list):
        raise BatchError(file, line, where, f"must be a list of {{{key_name}, {value_name}}}")
    pairs: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or key_name not in item:
            raise BatchError(file, line, where, f"each item needs {key_name!r}")
        pairs[str(item[key_name])] = "" if item.get(value_name) is None else str(item[value_name])
    return pairs


def _expand(
    entry: Mapping[str, Any],
    defaults: Mapping[str, Any],
    where: str,
    file: str,
    line: int | None,
    base: Path,
    first_index: int,
) -> Iterable[JobSpec]:
    def fail(key: str, message: str) -> BatchError:
        return BatchError(file, _line(entry, key) or line, f"{where}.{key}", message)

    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "a VM name is required")
    count = entry.get("count", 1)
    if isinstance(count, str) and count.strip().isdigit():
        count = int(count)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise fail("count", "must be a positive integer")
    if count > 1 and not _has_placeholder(name):
        raise fail("name", f"count is {count} but the name has no placeholder such as "
                           "{index:03d}, so every VM would get the same name")

    values: dict[str, Any] = {**defaults, **{k: v for k, v in entry.items()
                                             if k not in ("name", "count")}}
    source = values.get("source")
    if not isinstance(source, str) or not source:
        raise fail("source", "no source: set it here or in defaults")
    if "://" not in source:
        source = str((base / source).resolve()) if not Path(source).is_absolute() else source
    for key in PLACEMENT_KEYS + ("deployment", "annotation", "locale"):
        if values.get(key) is not None and not isinstance(values[key], str | int):
            raise fail(key, "must be a string")
    provisioning = values.get("disk_provisioning")
    if provisioning is not None and provisioning not in DISK_PROVISIONING:
        raise fail("disk_provisioning",
                   f"{provisioning!r} is not one of {', '.join(sorted(DISK_PROVISIONING))}")
    for key, allowed in (("ip_allocation_policy", IP_ALLOCATION_POLICIES),
                         ("ip_protocol", IP_PROTOCOLS)):
        if values.get(key) is not None and values[key] not in allowed:
            raise fail(key, f"{values[key]!r} is not one of {', '.join(allowed)}")
    def flag(key: str) -> bool:
        value = values.get(key, False)
        if isinstance(value, str) and value.strip().lower() in _CSV_BOOLEANS:
            value = _CSV_BOOLEANS[value.strip().lower()]
        if not isinstance(value, bool):
            raise fail(key, "must be true or false")
        return value

    power_on, hidden = flag("power_on"), flag("hidden")
    create_folders = flag("create_folders") if values.get("create_folders") is not None \
        else None
    parallel_disks = values.get("parallel_disks")
    if parallel_disks is not None:
        if isinstance(parallel_disks, str) and parallel_disks.strip().isdigit():
            parallel_disks = int(parallel_disks)
        if not isinstance(parallel_disks, int) or isinstance(parallel_disks, bool) \
                or parallel_disks < 1:
            raise fail("parallel_disks", f"{values['parallel_disks']!r}: must be a positive "
                                         "integer (disks uploaded at once)")
    inject_ovf_env, mark_as_template = flag("inject_ovf_env"), flag("mark_as_template")
    wait_for_ip = flag("wait_for_ip")
    if mark_as_template and power_on:
        raise fail("mark_as_template", "contradicts power_on: a template cannot be powered on; "
                                       "set one of them to false")
    if wait_for_ip and not power_on:
        raise fail("wait_for_ip", "needs power_on: true (a VM that is off gets no IP address)")
    ip_timeout = values.get("ip_timeout", DEFAULT_IP_TIMEOUT)
    try:
        ip_timeout = float(ip_timeout) if not isinstance(ip_timeout, bool) else -1.0
    except (TypeError, ValueError):
        ip_timeout = -1.0
    if not ip_timeout > 0 or ip_timeout == float("inf"):
        raise fail("ip_timeout", f"{values.get('ip_timeout')!r}: must be a positive number of "
                                 "seconds")
    hardware_version = None
    if values.get("hardware_version") is not None:
        try:
            hardware_version = parse_hardware_version(values["hardware_version"])
        except ValueError as exc:
            raise fail("hardware_version", str(exc)) from None
    mappings: dict[str, dict[str, str]] = {}
    for key in ("network_mapping", "properties", "extra_config"):
        raw = values.get(key) or {}
        if not isinstance(raw, dict):
            raise fail(key, "must be a mapping of name: value")
        text = _vmx_text if key == "extra_config" else str
        mappings[key] = {str(k): "" if v is None else text(v) for k, v in raw.items()}
    if any(not k.strip() for k in mappings["extra_config"]):
        raise fail("extra_config", "a key is empty")

    placement = PlacementRequest(**{
        key: str(values[key]) if values.get(key) is not None else None for key in PLACEMENT_KEYS
    })
    for number in range(1, count + 1):
        try:
            vm_name = render(name, index=number)
            properties = {k: render(v, index=number, name=vm_name)
                          for k, v in mappings["properties"].items()}
            annotation = values.get("annotation")
            annotation = render(str(annotation), index=number, name=vm_name) \
                if annotation is not None else None
        except ValueError as exc:
            raise fail("name", str(exc)) from None
        if len(vm_name) > 80:
            raise fail("name", f"{vm_name!r} is longer than vCenter's 80-character limit")
        yield JobSpec(
            index=first_index + number - 1,
            name=vm_name,
            source=source,
            placement=placement,
            origin=f"{file}:{line}" if line else file,
            deployment=str(values["deployment"]) if values.get("deployment") else None,
            disk_provisioning=provisioning,
            ip_allocation_policy=values.get("ip_allocation_policy"),
            ip_protocol=values.get("ip_protocol"),
            network_mapping=mappings["network_mapping"],
            properties=properties,
            power_on=power_on,
            annotation=annotation,
            locale=str(values["locale"]) if values.get("locale") else None,
            hidden=hidden,
            extra_config=mappings["extra_config"],
            inject_ovf_env=inject_ovf_env,
            hardware_version=hardware_version,
            mark_as_template=mark_as_template,
            wait_for_ip=wait_for_ip,
            ip_timeout=ip_timeout,
            create_folders=create_folders,
            parallel_disks=parallel_disks,
        )


def _vmx_text(value: Any) -> str:
    """An extra config value as a .vmx file writes it: YAML's true/false as TRUE/FALSE."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


def _csv_entries(path: Path) -> list[tuple[str, Mapping[str, Any], str]]:
    """Rows of a CSV file as VM entries; ``properties.K``, ``network.N`` and
    ``extra_config.K`` columns nest."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(str(path), None, "", f"cannot read: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "name" not in reader.fieldnames:
        raise BatchError(str(path), 1, "", "the header row must have a 'name' column")
    entries: list[tuple[str, Mapping[str, Any], str]] = []
    for row in reader:
        line = reader.line_num
        entry = _Located()
        entry.line, entry.lines = line, {}
        for column, cell in row.items():
            if column is None:
                raise BatchError(str(path), line, "", "more cells than header columns")
            if cell is None or cell.strip() == "":
                continue
            cell = cell.strip()
            if column.startswith("properties."):
                entry.setdefault("properties", {})[column.removeprefix("properties.")] = cell
            elif column.startswith("network."):
                entry.setdefault("network_mapping", {})[column.removeprefix("network.")] = cell
            elif column.startswith("extra_config."):
                entry.setdefault("extra_config", {})[column.removeprefix("extra_config.")] = cell
            else:
                entry[column] = cell
            entry.lines[column] = line
        entries.append((f"row {line}", entry, f"{path}:{line}"))
    return entries


__all__ = [
    "DEFAULT_IP_TIMEOUT",
    "BatchError",
    "BatchPlan",
    "Connection",
    "JobSpec",
    "load_batch",
    "parse_batch",
    "parse_hardware_version",
    "parse_shard",
    "render",
]
