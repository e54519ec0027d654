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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from asyncovf.engine.options import (
    VM_OPTION_KEYS,
    ImportOptions,
    document_values,
    read_options,
    read_text,
)
from asyncovf.errors import BatchError, InputError
from asyncovf.vsphere.inventory import PlacementRequest

PLACEMENT_KEYS: Final = ("datacenter", "cluster", "resource_pool", "host", "datastore", "folder")
JOB_KEYS: Final = frozenset({"name", "count", "source", *PLACEMENT_KEYS, "options",
                             *VM_OPTION_KEYS})
TOP_KEYS: Final = frozenset({"connection", "defaults", "vms", "vms_csv"})
CONNECTION_KEYS: Final = frozenset({"server", "user", "password", "insecure", "ca_file"})
#: vCenter's limit on a VM name.
MAX_VM_NAME: Final = 80


def check_vm_name(name: str) -> None:
    """Raise ValueError unless vCenter takes ``name`` as a VM name."""
    if len(name) > MAX_VM_NAME:
        raise ValueError(f"{name!r} is longer than vCenter's {MAX_VM_NAME}-character limit")


@dataclass(frozen=True)
class JobSpec:
    """One VM to import: its name, source and placement, and how to import it."""

    index: int  # position in file order, 0-based
    name: str
    source: str
    placement: PlacementRequest
    origin: str  # "batch.yaml:12", for error messages
    options: ImportOptions = field(default_factory=ImportOptions)


@dataclass(frozen=True)
class BatchPlan:
    path: str
    #: The file's ``connection:`` values (CONNECTION_KEYS), checked; the command
    #: line's win over them (ConnectionSettings.from_options).
    connection: Mapping[str, str | bool] = field(repr=False)
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


def _parse_connection(raw: Any, file: str,
                      document: Mapping[str, Any]) -> Mapping[str, str | bool]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BatchError(file, _line(document, "connection"), "connection", "must be a mapping")
    _check_keys(raw, CONNECTION_KEYS, file, "connection")
    for key in ("server", "user", "password", "ca_file"):
        if key in raw and not isinstance(raw[key], str):
            raise BatchError(file, _line(raw, key), f"connection.{key}", "must be a string")
    if "insecure" in raw and not isinstance(raw["insecure"], bool):
        raise BatchError(file, _line(raw, "insecure"), "connection.insecure",
                         "must be true or false")
    return dict(raw)


def _merge_options(entry: Mapping[str, Any], file: str, where: str) -> _Located:
    """Fold an inline ``options:`` document (govc ``import.spec`` format) into batch keys.

    Explicit batch keys win over the document's, as a per-VM override should;
    the VM name comes from the entry, never from a shared document.
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
    values = document_values(document, lambda key, message: BatchError(
        file, line, f"{where}.options.{key}", message))
    for key, value in values.items():
        merged.setdefault(key, value)
    return merged


class _EntrySource:
    """A batch entry as an options source: errors name the file, line and key."""

    def __init__(self, file: str, entry: Mapping[str, Any], line: int | None,
                 where: str) -> None:
        self.file, self.entry, self.line, self.where = file, entry, line, where

    def setting(self, key: str) -> str:
        return f"{key}: true"

    def invalid(self, key: str, message: str) -> InputError:
        return BatchError(self.file, _line(self.entry, key) or self.line,
                          f"{self.where}.{key}", message)

    conflict = invalid


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
    for key in PLACEMENT_KEYS:
        if values.get(key) is not None:
            try:
                read_text(values[key])
            except ValueError as exc:
                raise fail(key, str(exc)) from None
    options = read_options({key: values[key] for key in VM_OPTION_KEYS if key in values},
                           _EntrySource(file, entry, line, where))
    placement = PlacementRequest(**{
        key: str(values[key]) if values.get(key) is not None else None for key in PLACEMENT_KEYS
    })
    for number in range(1, count + 1):
        try:
            vm_name = render(name, index=number)
            properties = {k: render(v, index=number, name=vm_name)
                          for k, v in options.properties.items()}
            annotation = render(options.annotation, index=number, name=vm_name) \
                if options.annotation is not None else None
            check_vm_name(vm_name)
        except ValueError as exc:
            raise fail("name", str(exc)) from None
        yield JobSpec(
            index=first_index + number - 1,
            name=vm_name,
            source=source,
            placement=placement,
            origin=f"{file}:{line}" if line else file,
            options=replace(options, properties=properties, annotation=annotation),
        )


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
    "CONNECTION_KEYS",
    "JOB_KEYS",
    "MAX_VM_NAME",
    "PLACEMENT_KEYS",
    "BatchPlan",
    "JobSpec",
    "check_vm_name",
    "load_batch",
    "parse_batch",
    "parse_shard",
    "render",
]
