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
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from asyncovf.engine.batch_errors import BatchProblems
from asyncovf.engine.options import (
    VM_OPTION_KEYS,
    ImportOptions,
    Shared,
    document_values,
    read_options,
    read_text,
)
from asyncovf.engine.templates import has_placeholder, render
from asyncovf.errors import BatchError, InputError
from asyncovf.printable import printable
from asyncovf.vsphere.inventory import PlacementRequest

PLACEMENT_KEYS: Final = ("datacenter", "cluster", "resource_pool", "host", "datastore", "folder")
JOB_KEYS: Final = frozenset({"name", "count", "source", *PLACEMENT_KEYS, "options",
                             *VM_OPTION_KEYS})
TOP_KEYS: Final = frozenset({"connection", "defaults", "vms", "vms_csv"})
CONNECTION_KEYS: Final = frozenset({"server", "user", "password", "insecure", "ca_file"})
#: vCenter's limit on a VM name.
MAX_VM_NAME: Final = 80

# Limits on a batch file, each checked before the work it bounds is done, so a
# hostile or mistyped file costs a one-line error instead of gigabytes (README,
# "Batch file limits").
#: Bytes in a batch file or its ``vms_csv``; a 100,000-row CSV fits with room.
MAX_BATCH_BYTES: Final = 16 * 1024 * 1024
#: Nesting of YAML collections; a batch file with an options document needs about 7.
MAX_YAML_DEPTH: Final = 32
#: Values (YAML nodes) in one file: about 10,000 VMs listed one by one; larger
#: fleets use ``count`` or ``vms_csv``. Bounds the memory of a file of tiny values.
MAX_YAML_NODES: Final = 100_000
#: ``count`` of one entry, and VMs in one batch (after counts, before sharding).
MAX_COUNT_PER_ENTRY: Final = 10_000
MAX_VMS_PER_BATCH: Final = 100_000
#: Characters in one CSV cell: the csv module's own default limit, checked per
#: file (csv.field_size_limit is process-wide, so we never change it).
MAX_CSV_CELL: Final = 128 * 1024


def check_vm_name(name: str) -> None:
    """Raise ValueError unless ``name`` is fit for a VM: within vCenter's length, and
    free of control characters (which would forge lines wherever it is shown)."""
    if printable(name) != name:
        raise ValueError(f"'{printable(name)}' holds control characters; a VM name must "
                         "be printable")
    if len(name) > MAX_VM_NAME:
        raise ValueError(f"{name!r} is longer than vCenter's {MAX_VM_NAME}-character limit")


@dataclass(frozen=True, slots=True)
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
    """A mapping that remembers the line of itself and of each key (else its own)."""

    __slots__ = ("line", "lines")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = 0
        self.lines: Mapping[str, int] = _NO_LINES


_NO_LINES: Final[Mapping[str, int]] = {}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader with line numbers, no anchors or aliases, and bounded nesting.

    A few lines of aliases can stand for billions of values; a batch file needs
    none. Depth is checked while composing, well before Python's recursion limit.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(event, "anchor", None) is not None:
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise _marked(f"{kind}{event.anchor}: anchors and aliases are not allowed in a "
                          "batch file; repeat the value or put it in defaults", event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent) and self.depth >= MAX_YAML_DEPTH:
            raise _marked(f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
        self.nodes += 1
        _tick(self.nodes)
        if self.nodes > MAX_YAML_NODES:
            raise _marked(f"more than {MAX_YAML_NODES} values in one file; list larger fleets "
                          "with count or vms_csv", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _marked(problem: str, mark: Any) -> yaml.MarkedYAMLError:
    return yaml.MarkedYAMLError(problem=problem, problem_mark=mark)


def _construct_int(loader: _LineLoader, node: yaml.ScalarNode) -> int:
    try:
        return loader.construct_yaml_int(node)
    except ValueError as exc:  # more digits than int() converts (sys.get_int_max_str_digits)
        raise _marked(f"an integer of {len(str(node.value))} characters is too long",
                      node.start_mark) from exc


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    mapping = _Located()
    mapping.line = node.start_mark.line + 1
    lines: dict[str, int] = {}
    mapping.lines = lines
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
        lines[key] = line
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _line(mapping: Any, key: str | None = None) -> int | None:
    if isinstance(mapping, _Located):
        return mapping.lines.get(key, mapping.line) if key else mapping.line
    return None


# -- parsing ----------------------------------------------------------------------------------

#: A VM entry: where it is (None: a CSV row's, "row N", made when needed), its file.
_Entry = tuple[str | None, Mapping[str, Any], str]


#: Called now and then while a batch file is read (every _TICK values, rows or
#: jobs): a caller reading it in a worker thread passes a check that raises when
#: the reading should stop (anyio.from_thread.check_cancelled), so Ctrl-C need
#: not wait for a large file's validation to end.
_checkpoint: ContextVar[Callable[[], None] | None] = ContextVar("batch_checkpoint", default=None)
_TICK: Final = 1024


def _tick(count: int) -> None:
    if count % _TICK == 0:
        check = _checkpoint.get()
        if check is not None:
            check()


def load_batch(path: str | Path, *, checkpoint: Callable[[], None] | None = None) -> BatchPlan:
    """Read and validate a batch file (and its ``vms_csv``), or raise :class:`BatchError`.

    ``checkpoint`` is called now and then, and may raise to stop the reading.
    """
    token = _checkpoint.set(checkpoint)
    try:
        return _load_batch(Path(path))
    finally:
        _checkpoint.reset(token)


def _load_batch(path: Path) -> BatchPlan:
    text = _read_bounded(path, "utf-8")
    if path.suffix.lower() == ".csv":
        del text  # read again as rows; not held meanwhile
        return parse_batch(_Located(vms_csv=path.name), file=str(path), base=path.parent)
    loader = _LineLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise BatchError(str(path), line, "", f"YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise BatchError(str(path), None, "", f"YAML: {exc}") from exc
    finally:
        loader.dispose()
    return parse_batch(document, file=str(path), base=path.parent)


def _read_bounded(path: Path, encoding: str) -> str:
    """The text of ``path``, refused by its size or (a pipe, a device) as it is read."""
    too_big = f"larger than the limit of {MAX_BATCH_BYTES} bytes for a batch file"
    try:
        with path.open("rb") as stream:
            if os.fstat(stream.fileno()).st_size > MAX_BATCH_BYTES:
                raise BatchError(str(path), None, "", too_big)
            # In chunks: read(n) allocates n bytes up front, whatever the file.
            chunks: list[bytes] = []
            size = 0
            while chunk := stream.read(64 * 1024):
                size += len(chunk)
                if size > MAX_BATCH_BYTES:
                    raise BatchError(str(path), None, "", too_big)
                chunks.append(chunk)
        return b"".join(chunks).decode(encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(str(path), None, "", f"cannot read: {exc}") from exc


def parse_batch(document: Any, *, file: str, base: Path) -> BatchPlan:
    """Validate a parsed batch document; ``base`` anchors relative paths.

    Problems are collected (:mod:`~asyncovf.engine.batch_errors`), raised
    together; one that stops the reading (shape, limit) with those before it.
    """
    if not isinstance(document, dict):
        raise BatchError(file, None, "", "expected a mapping with 'vms' (and 'defaults')")
    problems = BatchProblems(_line)
    if not problems.check_keys(document, TOP_KEYS, file, ""):
        problems.raise_any()  # a misspelt section: the rest would be misread
    connection: Mapping[str, str | bool] = {}
    with problems.collecting():
        connection = problems.connection(document.get("connection"), CONNECTION_KEYS, file,
                                         _line(document, "connection"))
    defaults = document.get("defaults") or _Located()
    if not isinstance(defaults, dict):
        raise problems.fatal(BatchError(file, _line(document, "defaults"), "defaults",
                                        "must be a mapping"))
    problems.check_keys(defaults, JOB_KEYS - {"name", "count"}, file, "defaults")
    with problems.collecting():
        defaults = _merge_options(defaults, file, "defaults")

    entries: list[_Entry] = []
    vms = document.get("vms") or []
    if not isinstance(vms, list):
        raise problems.fatal(BatchError(file, _line(document, "vms"), "vms",
                                        "must be a list of VM entries"))
    for number, entry in enumerate(vms):
        where = f"vms[{number}]"
        if not isinstance(entry, dict):
            problems.add(BatchError(file, _line(document, "vms"), where, "must be a mapping"))
            continue
        entries.append((where, entry, file))
    if "vms_csv" in document:
        csv_name = document["vms_csv"]
        if not isinstance(csv_name, str):
            raise problems.fatal(BatchError(file, _line(document, "vms_csv"), "vms_csv",
                                            "must be a file name"))
        try:
            entries.extend(_csv_entries(base / csv_name))
        except BatchError as exc:
            raise problems.fatal(exc) from exc
    if not entries and not problems:
        raise BatchError(file, None, "vms", "no VMs to import")

    # Every entry checked and counted before any is expanded: a count over the
    # limits is refused before a job is built. Each list is used up as the next
    # is built, so a 100,000-row CSV is not held twice over.
    checked: list[tuple[str | None, _Located, str, int | None, int]] = []
    total = 0
    entries.reverse()
    while entries:
        label, entry, entry_file = entries.pop()
        line = _line(entry)
        where = label or f"row {line}"
        known = problems.check_keys(entry, JOB_KEYS, entry_file, where)
        count = 0
        with problems.collecting():
            merged_entry = _merge_options(entry, entry_file, where)
            count = _count(merged_entry, where, entry_file, line)
            if known:  # else its other problems may only follow from the typo
                checked.append((label, merged_entry, entry_file, line, count))
        total += count
        if total > MAX_VMS_PER_BATCH:
            raise problems.fatal(BatchError(
                entry_file, _line(entry, "count") or line, f"{where}.count",
                f"the batch reaches {total} VMs here, over the limit of "
                f"{MAX_VMS_PER_BATCH} per batch; split it into several files"))
        _tick(len(checked))

    jobs: list[JobSpec] = []
    seen: dict[str, str] = {}
    shared = Shared()
    checked.reverse()
    while checked:
        label, merged_entry, entry_file, line, count = checked.pop()
        where = label or f"row {line}"
        with problems.collecting():
            for spec in _expand(merged_entry, defaults, where, entry_file, line, base,
                                len(jobs), count, shared):
                if spec.name in seen:
                    problems.add(BatchError(entry_file, line, f"{where}.name",
                                            f"VM name {spec.name!r} repeats the one from "
                                            f"{seen[spec.name]}"))
                    continue
                seen[spec.name] = spec.origin
                jobs.append(spec)
                _tick(len(jobs))
    problems.raise_any()
    return BatchPlan(path=file, connection=connection, jobs=tuple(jobs))


def _merge_options(entry: Mapping[str, Any], file: str, where: str) -> _Located:
    """Fold an inline ``options:`` document (govc ``import.spec`` format) into batch keys.

    Explicit batch keys win over the document's, as a per-VM override should;
    the VM name comes from the entry, never from a shared document. An entry
    without one is its own result.
    """
    if isinstance(entry, _Located) and "options" not in entry:
        return entry
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
    count: int,
    shared: Shared,
) -> Iterable[JobSpec]:
    def fail(key: str, message: str) -> BatchError:
        top, _, inner = key.partition(".")  # "properties.motd": the line of motd if known
        at = (_line(entry.get(top), inner) if inner else None) or _line(entry, top) or line
        return BatchError(file, at, f"{where}.{key}", message)

    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "a VM name is required")
    if count > 1 and not has_placeholder(name):
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
    options = shared(read_options({key: values[key] for key in VM_OPTION_KEYS
                                   if key in values}, _EntrySource(file, entry, line, where)))
    placement = shared(PlacementRequest(**{
        key: str(values[key]) if values.get(key) is not None else None for key in PLACEMENT_KEYS
    }))
    source, origin = shared(source), f"{file}:{line}" if line else file
    for number in range(1, count + 1):
        key = "name"
        try:
            vm_name = render(name, index=number)
            check_vm_name(vm_name)
            properties = {}
            for property_key, template in options.properties.items():
                key = f"properties.{property_key}"
                properties[property_key] = render(template, index=number, name=vm_name)
            annotation = None
            if options.annotation is not None:
                key = "annotation"
                annotation = render(options.annotation, index=number, name=vm_name)
        except ValueError as exc:
            raise fail(key, str(exc)) from None
        yield JobSpec(
            index=first_index + number - 1,
            name=vm_name,
            source=source,
            placement=placement,
            origin=origin,
            options=options if (properties, annotation) == (options.properties,
                                                            options.annotation)
            else replace(options, properties=properties, annotation=annotation),
        )


def _count(entry: Mapping[str, Any], where: str, file: str, line: int | None) -> int:
    """The entry's ``count``, checked against MAX_COUNT_PER_ENTRY."""
    def fail(message: str) -> BatchError:
        return BatchError(file, _line(entry, "count") or line, f"{where}.count", message)

    over = f"is over the limit of {MAX_COUNT_PER_ENTRY} VMs per entry; split it into " \
           "several entries"
    count = entry.get("count", 1)
    if isinstance(count, str) and count.strip().isdecimal():  # isdigit() takes "²"
        digits = count.strip().lstrip("0") or "0"
        if len(digits) > 9:  # refused before int(), which has its own digit limit
            raise fail(f"a number of {len(digits)} digits {over}")
        count = int(digits)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise fail("must be a positive integer")
    if count > MAX_COUNT_PER_ENTRY:
        raise fail(f"{count if count < 10**12 else 'a number over 10^12'} {over}")
    return count


def _csv_entries(path: Path) -> list[_Entry]:
    """Rows of a CSV file as VM entries; ``properties.K``, ``network.N`` and
    ``extra_config.K`` columns nest."""
    reader = csv.DictReader(_lines(_read_bounded(path, "utf-8-sig")))
    try:
        return _csv_rows(reader, path)
    except csv.Error as exc:
        # csv refuses a cell over csv.field_size_limit() as it reads; that limit is
        # process-wide, so it is caught, never changed. The DictReader's line_num
        # moves only after a good row; its reader's is the offending line.
        message = str(exc)
        if "field larger than field limit" in message:
            message = f"a cell is longer than the limit of {csv.field_size_limit()} characters"
        raise BatchError(str(path), reader.reader.line_num or 1, "", f"CSV: {message}") from None


def _lines(text: str) -> Iterator[str]:
    """``text`` line by line, as iterating ``io.StringIO(text)`` gives it (split at
    "\n" only, ends kept), without the copy of four bytes a character StringIO makes."""
    start = 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        yield text[start:end]
        start = end


def _csv_rows(reader: csv.DictReader[str], path: Path) -> list[_Entry]:
    if reader.fieldnames is None or "name" not in reader.fieldnames:
        raise BatchError(str(path), 1, "", "the header row must have a 'name' column")
    entries: list[_Entry] = []
    file, columns = str(path), dict[str, Shared]()  # equal cells of a column: one str
    for row in reader:
        _tick(len(entries) + 1)
        line = reader.line_num
        entry = _Located()
        entry.line = line  # every cell's line too
        for column, cell in row.items():
            if column is None:
                raise BatchError(str(path), line, "", "more cells than header columns")
            if cell is None or cell.strip() == "":
                continue
            if len(cell) > MAX_CSV_CELL:  # even if the process-wide csv limit was raised
                raise BatchError(str(path), line, column, f"CSV: a cell is longer than the "
                                 f"limit of {MAX_CSV_CELL} characters")
            cell = (columns.get(column) or columns.setdefault(column, Shared()))(cell.strip())
            if column.startswith("properties."):
                entry.setdefault("properties", {})[column.removeprefix("properties.")] = cell
            elif column.startswith("network."):
                entry.setdefault("network_mapping", {})[column.removeprefix("network.")] = cell
            elif column.startswith("extra_config."):
                entry.setdefault("extra_config", {})[column.removeprefix("extra_config.")] = cell
            else:
                entry[column] = cell
        entries.append((None, entry, file))
    return entries


__all__ = [
    "CONNECTION_KEYS",
    "JOB_KEYS",
    "MAX_BATCH_BYTES",
    "MAX_COUNT_PER_ENTRY",
    "MAX_CSV_CELL",
    "MAX_VMS_PER_BATCH",
    "MAX_VM_NAME",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "PLACEMENT_KEYS",
    "BatchPlan",
    "JobSpec",
    "check_vm_name",
    "load_batch",
    "parse_batch",
    "parse_shard",
]
