"""The OVF descriptor model: a pure function of the descriptor's bytes.

Only what an importer needs to check and report is modelled: file references,
disks, networks, deployment options and each virtual system's hardware. The
descriptor text itself is what vCenter's CreateImportSpec reads, so it is kept
verbatim. OVF 1.x and 2.x namespaces are both accepted; unknown sections are
ignored, never fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from lxml import etree

from asyncovf.errors import PackageError
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES, parse_xml

OVF_NAMESPACES: Final = {
    "http://schemas.dmtf.org/ovf/envelope/1": "1.x",
    "http://schemas.dmtf.org/ovf/envelope/2": "2.x",
}
RASD: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
SASD: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData"
EPASD: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData"

# CIM ResourceType values (DSP1041) that an importer reports on.
RESOURCE_CPU: Final = 3
RESOURCE_MEMORY: Final = 4
RESOURCE_NIC: Final = 10
RESOURCE_DISK: Final = 17

#: Disk capacities above this are rejected as absurd (64 PiB, beyond any datastore).
MAX_DISK_CAPACITY: Final = 64 * 2**50

_UNIT_FACTORS: Final = {
    "byte": 1, "bytes": 1, "b": 1,
    "kb": 2**10, "kilobytes": 2**10, "kib": 2**10,
    "mb": 2**20, "megabytes": 2**20, "mib": 2**20,
    "gb": 2**30, "gigabytes": 2**30, "gib": 2**30,
    "tb": 2**40, "terabytes": 2**40, "tib": 2**40,
}
_POWER_UNIT = re.compile(r"^byte\s*\*\s*(\d+)\s*\^\s*(\d+)$", re.IGNORECASE)
_MULTIPLE_UNIT = re.compile(r"^byte\s*\*\s*(\d+)$", re.IGNORECASE)


def allocation_unit_factor(units: str | None) -> int:
    """Bytes per unit for ``byte * 2^20``, ``MB``, ``GigaBytes`` and friends."""
    if units is None or not units.strip():
        return 1
    text = units.strip()
    if match := _POWER_UNIT.match(text):
        return int(int(match.group(1)) ** int(match.group(2)))
    if match := _MULTIPLE_UNIT.match(text):
        return int(match.group(1))
    factor = _UNIT_FACTORS.get(text.lower())
    if factor is None:
        raise ValueError(f"unknown allocation units {units!r}")
    return factor


@dataclass(frozen=True)
class FileReference:
    """A ``References/File``: something the package ships and the importer uploads."""

    id: str
    href: str
    size: int | None
    compression: str | None = None
    chunk_size: int | None = None


@dataclass(frozen=True)
class VirtualDiskDesc:
    """A ``DiskSection/Disk``."""

    disk_id: str
    capacity: str
    capacity_bytes: int | None
    file_ref: str | None
    format: str | None
    populated_size: int | None = None
    parent_ref: str | None = None


@dataclass(frozen=True)
class NetworkCard:
    network: str | None
    adapter_type: str | None


@dataclass(frozen=True)
class VirtualHardware:
    """The hardware of one virtual system for one deployment option."""

    cpus: int | None = None
    memory_mb: int | None = None
    disk_ids: tuple[str, ...] = ()
    nics: tuple[NetworkCard, ...] = ()
    system_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class VirtualSystem:
    """A ``VirtualSystem``; a ``VirtualSystemCollection`` has ``children``."""

    id: str
    name: str
    hardware: VirtualHardware = field(default_factory=VirtualHardware)
    children: tuple[VirtualSystem, ...] = ()

    @property
    def is_collection(self) -> bool:
        return bool(self.children)

    def walk(self) -> tuple[VirtualSystem, ...]:
        """This system and every nested one, depth first."""
        out: list[VirtualSystem] = [self]
        for child in self.children:
            out.extend(child.walk())
        return tuple(out)


@dataclass(frozen=True)
class DeploymentOption:
    id: str
    label: str | None
    default: bool


@dataclass(frozen=True)
class Descriptor:
    """A parsed OVF descriptor, plus its text for CreateImportSpec."""

    name: str
    ovf_version: str
    text: str
    files: tuple[FileReference, ...]
    disks: tuple[VirtualDiskDesc, ...]
    networks: tuple[str, ...]
    deployment_options: tuple[DeploymentOption, ...]
    entity: VirtualSystem

    def file(self, file_id: str) -> FileReference | None:
        return next((f for f in self.files if f.id == file_id), None)

    def file_by_href(self, href: str) -> FileReference | None:
        return next((f for f in self.files if f.href == href), None)

    @property
    def default_deployment(self) -> str | None:
        for option in self.deployment_options:
            if option.default:
                return option.id
        return self.deployment_options[0].id if self.deployment_options else None


class _Reader:
    """Namespace-aware accessors for one descriptor; holds no state beyond its names."""

    def __init__(self, root: etree._Element, name: str) -> None:
        self.name = name
        qname = etree.QName(root)
        if qname.localname != "Envelope" or qname.namespace not in OVF_NAMESPACES:
            raise PackageError(
                f"not an OVF descriptor: root element is <{qname.localname}> in "
                f"namespace {qname.namespace or '(none)'}",
                file=name,
            )
        self.ns = qname.namespace
        self.version = OVF_NAMESPACES[qname.namespace]
        self.root = root

    def tag(self, local: str) -> str:
        return f"{{{self.ns}}}{local}"

    def attr(self, element: etree._Element, local: str) -> str | None:
        value = element.get(f"{{{self.ns}}}{local}")
        if value is None:
            value = element.get(local)  # some tools omit the ovf: prefix
        return value

    def children(self, element: etree._Element, local: str) -> list[etree._Element]:
        return list(element.iterchildren(self.tag(local)))

    def child_text(self, element: etree._Element, local: str) -> str | None:
        found = element.find(self.tag(local))
        return found.text.strip() if found is not None and found.text else None

    def int_attr(self, element: etree._Element, local: str, *, what: str) -> int | None:
        raw = self.attr(element, local)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            raise PackageError(f"{what}: {local}={raw!r} is not an integer",
                               file=self.name) from None
        if value < 0:
            raise PackageError(f"{what}: {local}={raw!r} is negative", file=self.name)
        return value


def parse_descriptor(
    data: bytes, *, name: str = "descriptor.ovf", max_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES
) -> Descriptor:
    """Parse and check a descriptor; raise :class:`PackageError` naming what is wrong."""
    root = parse_xml(data, name=name, max_bytes=max_bytes)
    reader = _Reader(root, name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # CreateImportSpec takes a string; vCenter expects UTF-8 descriptors.
        raise PackageError(f"descriptor is not UTF-8 (byte {exc.start})", file=name) from exc

    files = _parse_references(reader)
    disks = _parse_disks(reader, files)
    networks = _parse_networks(reader)
    options = _parse_deployment_options(reader)
    default = next((o.id for o in options if o.default), options[0].id if options else None)
    entity = _parse_entity(reader, default)

    disk_ids = {d.disk_id for d in disks}
    for system in entity.walk():
        for disk_id in system.hardware.disk_ids:
            if disk_id not in disk_ids:
                raise PackageError(
                    f"virtual system {system.id!r} uses disk {disk_id!r}, "
                    "which DiskSection does not define",
                    file=name,
                )
    return Descriptor(
        name=name,
        ovf_version=reader.version,
        text=text,
        files=files,
        disks=disks,
        networks=networks,
        deployment_options=options,
        entity=entity,
    )


def _unique(values: list[str], what: str, name: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise PackageError(f"duplicate {what} {value!r}", file=name)
        seen.add(value)


def _parse_references(reader: _Reader) -> tuple[FileReference, ...]:
    section = reader.root.find(reader.tag("References"))
    if section is None:
        return ()
    files: list[FileReference] = []
    for element in reader.children(section, "File"):
        file_id = reader.attr(element, "id")
        href = reader.attr(element, "href")
        if not file_id or not href:
            raise PackageError("References/File needs both ovf:id and ovf:href", file=reader.name)
        files.append(
            FileReference(
                id=file_id,
                href=href,
                size=reader.int_attr(element, "size", what=f"file {href!r}"),
                compression=reader.attr(element, "compression"),
                chunk_size=reader.int_attr(element, "chunkSize", what=f"file {href!r}"),
            )
        )
    _unique([f.id for f in files], "file id", reader.name)
    _unique([f.href for f in files], "file href", reader.name)
    return tuple(files)


def _parse_disks(
    reader: _Reader, files: tuple[FileReference, ...]
) -> tuple[VirtualDiskDesc, ...]:
    file_ids = {f.id for f in files}
    disks: list[VirtualDiskDesc] = []
    for section in reader.root.iterchildren(reader.tag("DiskSection")):
        for element in reader.children(section, "Disk"):
            disk_id = reader.attr(element, "diskId")
            if not disk_id:
                raise PackageError("DiskSection/Disk without ovf:diskId", file=reader.name)
            capacity = reader.attr(element, "capacity") or ""
            file_ref = reader.attr(element, "fileRef")
            if file_ref and file_ref not in file_ids:
                raise PackageError(
                    f"disk {disk_id!r} references file {file_ref!r}, "
                    "which References does not list",
                    file=reader.name,
                )
            disks.append(
                VirtualDiskDesc(
                    disk_id=disk_id,
                    capacity=capacity,
                    capacity_bytes=_capacity_bytes(reader, element, disk_id, capacity),
                    file_ref=file_ref,
                    format=reader.attr(element, "format"),
                    populated_size=reader.int_attr(element, "populatedSize",
                                                   what=f"disk {disk_id!r}"),
                    parent_ref=reader.attr(element, "parentRef"),
                )
            )
    _unique([d.disk_id for d in disks], "disk id", reader.name)
    return tuple(disks)


def _capacity_bytes(
    reader: _Reader, element: etree._Element, disk_id: str, capacity: str
) -> int | None:
    if capacity.startswith("${"):
        return None  # set by a ProductSection property at deploy time
    try:
        amount = int(capacity)
    except ValueError:
        raise PackageError(f"disk {disk_id!r}: capacity {capacity!r} is not an integer",
                           file=reader.name) from None
    try:
        factor = allocation_unit_factor(reader.attr(element, "capacityAllocationUnits"))
    except ValueError as exc:
        raise PackageError(f"disk {disk_id!r}: {exc}", file=reader.name) from None
    total = amount * factor
    if amount <= 0 or total > MAX_DISK_CAPACITY:
        raise PackageError(f"disk {disk_id!r}: capacity {total} bytes is not plausible",
                           file=reader.name)
    return total


def _parse_networks(reader: _Reader) -> tuple[str, ...]:
    names: list[str] = []
    for section in reader.root.iterchildren(reader.tag("NetworkSection")):
        for element in reader.children(section, "Network"):
            network = reader.attr(element, "name")
            if network:
                names.append(network)
    return tuple(dict.fromkeys(names))


def _parse_deployment_options(reader: _Reader) -> tuple[DeploymentOption, ...]:
    options: list[DeploymentOption] = []
    for section in reader.root.iterchildren(reader.tag("DeploymentOptionSection")):
        for element in reader.children(section, "Configuration"):
            option_id = reader.attr(element, "id")
            if not option_id:
                continue
            options.append(
                DeploymentOption(
                    id=option_id,
                    label=reader.child_text(element, "Label"),
                    default=(reader.attr(element, "default") or "").lower() == "true",
                )
            )
    _unique([o.id for o in options], "deployment option id", reader.name)
    return tuple(options)


def _parse_entity(reader: _Reader, deployment: str | None) -> VirtualSystem:
    for element in reader.root:
        if not isinstance(element.tag, str):
            continue
        local = etree.QName(element).localname
        if local in ("VirtualSystem", "VirtualSystemCollection"):
            return _parse_system(reader, element, deployment)
    raise PackageError("descriptor has no VirtualSystem or VirtualSystemCollection",
                       file=reader.name)


def _parse_system(
    reader: _Reader, element: etree._Element, deployment: str | None
) -> VirtualSystem:
    system_id = reader.attr(element, "id") or ""
    name = reader.child_text(element, "Name") or system_id
    if etree.QName(element).localname == "VirtualSystemCollection":
        children = tuple(
            _parse_system(reader, child, deployment)
            for child in element
            if isinstance(child.tag, str)
            and etree.QName(child).localname in ("VirtualSystem", "VirtualSystemCollection")
        )
        _unique([c.id for c in children], "virtual system id", reader.name)
        return VirtualSystem(id=system_id, name=name, children=children)
    return VirtualSystem(id=system_id, name=name, hardware=_parse_hardware(reader, element,
                                                                           deployment))


def _rasd(item: etree._Element, local: str) -> str | None:
    for namespace in (RASD, SASD, EPASD):
        found = item.find(f"{{{namespace}}}{local}")
        if found is not None and found.text is not None:
            return found.text.strip()
    return None


def _parse_hardware(
    reader: _Reader, system: etree._Element, deployment: str | None
) -> VirtualHardware:
    cpus: int | None = None
    memory_mb: int | None = None
    disk_ids: list[str] = []
    nics: list[NetworkCard] = []
    system_types: list[str] = []
    for section in system.iterchildren(reader.tag("VirtualHardwareSection")):
        for vssd in section.iter("{*}VirtualSystemType"):
            if vssd.text:
                system_types.extend(t.strip() for t in vssd.text.split(",") if t.strip())
        for item in section:
            if not isinstance(item.tag, str) or etree.QName(item).localname not in (
                "Item", "StorageItem", "EthernetPortItem"
            ):
                continue
            configuration = reader.attr(item, "configuration")
            if configuration and deployment and deployment not in configuration.split():
                continue
            try:
                resource_type = int(_rasd(item, "ResourceType") or "0")
            except ValueError:
                continue  # unknown resource types are vCenter's to judge, not ours
            quantity = _rasd(item, "VirtualQuantity")
            if resource_type == RESOURCE_CPU and quantity:
                cpus = _int_or_fail(reader, quantity, "CPU VirtualQuantity")
            elif resource_type == RESOURCE_MEMORY and quantity:
                amount = _int_or_fail(reader, quantity, "memory VirtualQuantity")
                try:
                    factor = allocation_unit_factor(_rasd(item, "AllocationUnits") or "byte*2^20")
                except ValueError as exc:
                    raise PackageError(f"memory: {exc}", file=reader.name) from None
                memory_mb = amount * factor // 2**20
            elif resource_type == RESOURCE_DISK:
                host_resource = _rasd(item, "HostResource") or ""
                for prefix in ("ovf:/disk/", "/disk/"):
                    if host_resource.startswith(prefix):
                        disk_ids.append(host_resource[len(prefix):])
                        break
            elif resource_type == RESOURCE_NIC:
                nics.append(NetworkCard(network=_rasd(item, "Connection"),
                                        adapter_type=_rasd(item, "ResourceSubType")))
    return VirtualHardware(
        cpus=cpus,
        memory_mb=memory_mb,
        disk_ids=tuple(disk_ids),
        nics=tuple(nics),
        system_types=tuple(system_types),
    )


def _int_or_fail(reader: _Reader, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise PackageError(f"{what} {text!r} is not an integer", file=reader.name) from None
    if value < 0:
        raise PackageError(f"{what} {text!r} is negative", file=reader.name)
    return value


__all__ = [
    "DeploymentOption",
    "Descriptor",
    "FileReference",
    "NetworkCard",
    "VirtualDiskDesc",
    "VirtualHardware",
    "VirtualSystem",
    "allocation_unit_factor",
    "parse_descriptor",
]
