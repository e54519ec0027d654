"""The OVF descriptor model: a pure function of the descriptor's bytes.

Only what an importer needs to check and report is modelled: file references,
disks, networks, deployment options, products and the virtual systems that
hold them. The descriptor text itself is what vCenter's CreateImportSpec reads,
so it is kept verbatim. OVF 1.x and 2.x namespaces are both accepted; unknown
sections are ignored, never fatal.

Two concepts the descriptor uses have modules of their own: reading the
envelope's elements across OVF versions and schema forms (``envelope.py``),
and each virtual system's hardware section with its allocation units
(``hardware.py``). Neither imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from lxml import etree

from asyncovf.errors import PackageError
from asyncovf.ovf.envelope import EnvelopeReader
from asyncovf.ovf.hardware import (
    HardwareItem,
    VirtualHardware,
    allocation_unit_factor,
    parse_hardware_items,
    summarize_hardware,
)
from asyncovf.ovf.xml import DEFAULT_MAX_DESCRIPTOR_BYTES, parse_xml

#: Disk capacities above this are rejected as absurd (64 PiB, beyond any datastore).
MAX_DISK_CAPACITY: Final = 64 * 2**50


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
class ProductProperty:
    """A ProductSection ``Property``; ``key`` is the full key vCenter expects.

    DSP0243 9.5.1: ``[class "."] key ["." instance]``.
    """

    key: str
    raw_key: str
    type: str
    default: str | None = None
    qualifiers: str | None = None
    user_configurable: bool = False
    password: bool = False
    label: str | None = None
    description: str | None = None
    category: str | None = None
    configurations: tuple[str, ...] | None = None
    #: ``Value`` children: a different default per deployment option.
    defaults_by_option: tuple[tuple[str, str], ...] = ()

    def applies_to(self, option: str | None) -> bool:
        return self.configurations is None or option is None or option in self.configurations

    def default_for(self, option: str | None) -> str | None:
        for configuration, value in self.defaults_by_option:
            if configuration == option:
                return value
        return self.default


@dataclass(frozen=True)
class ProductInfo:
    """A ProductSection: product facts and its properties."""

    class_id: str | None = None
    instance: str | None = None
    product: str | None = None
    vendor: str | None = None
    version: str | None = None
    full_version: str | None = None
    properties: tuple[ProductProperty, ...] = ()


@dataclass(frozen=True)
class OperatingSystem:
    id: int | None = None
    os_type: str | None = None  # vmw:osType, e.g. ubuntu64Guest
    description: str | None = None


@dataclass(frozen=True)
class VirtualSystem:
    """A ``VirtualSystem``; a ``VirtualSystemCollection`` has ``children``."""

    id: str
    name: str
    hardware: VirtualHardware = field(default_factory=VirtualHardware)
    children: tuple[VirtualSystem, ...] = ()
    items: tuple[HardwareItem, ...] = ()
    products: tuple[ProductInfo, ...] = ()
    eulas: tuple[str, ...] = ()
    annotation: str | None = None
    operating_system: OperatingSystem | None = None
    #: Sections we do not model, by element name: kept, never fatal.
    other_sections: tuple[str, ...] = ()

    def hardware_for(self, option: str | None) -> VirtualHardware:
        """The hardware this system gets with deployment option ``option``."""
        return summarize_hardware(self.items, option, self.hardware.system_types)

    @property
    def properties(self) -> tuple[ProductProperty, ...]:
        return tuple(p for product in self.products for p in product.properties)

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
    #: Envelope-level sections we do not model, by element name.
    other_sections: tuple[str, ...] = ()

    @property
    def properties(self) -> tuple[ProductProperty, ...]:
        """Every product property of every system, collection first."""
        return tuple(p for system in self.entity.walk() for p in system.properties)

    @property
    def eulas(self) -> tuple[str, ...]:
        return tuple(e for system in self.entity.walk() for e in system.eulas)

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


def parse_descriptor(
    data: bytes,
    *,
    name: str = "descriptor.ovf",
    max_bytes: int = DEFAULT_MAX_DESCRIPTOR_BYTES,
    location: str | None = None,
) -> Descriptor:
    """Parse and check a descriptor; raise :class:`PackageError` naming what is wrong.

    ``name`` is the descriptor's file name (manifests list it by that name);
    ``location`` is where errors say it is (a path, or ``app.ova:app.ovf``).
    """
    where = location or name
    root = parse_xml(data, name=where, max_bytes=max_bytes)
    reader = EnvelopeReader(root, where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # CreateImportSpec takes a string; vCenter expects UTF-8 descriptors.
        raise PackageError(f"descriptor is not UTF-8 (byte {exc.start})", file=where) from exc

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
                    file=where,
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
        other_sections=_other_sections(reader, reader.root, _ENVELOPE_SECTIONS),
    )


def _unique(values: list[str], what: str, name: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise PackageError(f"duplicate {what} {value!r}", file=name)
        seen.add(value)


def _parse_references(reader: EnvelopeReader) -> tuple[FileReference, ...]:
    section = next(iter(reader.sections(reader.root, "References")), None)
    if section is None:
        return ()
    files: list[FileReference] = []
    for element in reader.children(section, "File"):
        file_id = reader.attr(element, "id")
        href = reader.attr(element, "href")
        if not file_id or not href:
            raise PackageError("References/File needs both ovf:id and ovf:href", file=reader.name)
        size = reader.int_attr(element, "size", what=f"file {href!r}")
        if size is not None and size > MAX_DISK_CAPACITY:
            raise PackageError(f"file {href!r}: size {size} bytes is not plausible",
                               file=reader.name)
        files.append(
            FileReference(
                id=file_id,
                href=href,
                size=size,
                compression=reader.attr(element, "compression"),
                chunk_size=reader.int_attr(element, "chunkSize", what=f"file {href!r}"),
            )
        )
    _unique([f.id for f in files], "file id", reader.name)
    _unique([f.href for f in files], "file href", reader.name)
    return tuple(files)


def _parse_disks(
    reader: EnvelopeReader, files: tuple[FileReference, ...]
) -> tuple[VirtualDiskDesc, ...]:
    file_ids = {f.id for f in files}
    disks: list[VirtualDiskDesc] = []
    for section in reader.sections(reader.root, "DiskSection"):
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
    reader: EnvelopeReader, element: etree._Element, disk_id: str, capacity: str
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


def _parse_networks(reader: EnvelopeReader) -> tuple[str, ...]:
    names: list[str] = []
    for section in reader.sections(reader.root, "NetworkSection"):
        for element in reader.children(section, "Network"):
            network = reader.attr(element, "name")
            if network:
                names.append(network)
    return tuple(dict.fromkeys(names))


def _parse_deployment_options(reader: EnvelopeReader) -> tuple[DeploymentOption, ...]:
    options: list[DeploymentOption] = []
    for section in reader.sections(reader.root, "DeploymentOptionSection"):
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


def _parse_entity(reader: EnvelopeReader, deployment: str | None) -> VirtualSystem:
    for element in reader.root:
        if reader.kind(element) in ("VirtualSystem", "VirtualSystemCollection"):
            return _parse_system(reader, element, deployment)
    raise PackageError("descriptor has no VirtualSystem or VirtualSystemCollection",
                       file=reader.name)


_ENVELOPE_SECTIONS: Final = frozenset({
    "References", "DiskSection", "NetworkSection", "DeploymentOptionSection",
    "VirtualSystem", "VirtualSystemCollection",
})
_SYSTEM_SECTIONS: Final = frozenset({
    "Info", "Name", "VirtualHardwareSection", "ProductSection", "EulaSection",
    "AnnotationSection", "OperatingSystemSection", "VirtualSystem", "VirtualSystemCollection",
})


def _other_sections(
    reader: EnvelopeReader, element: etree._Element, known: frozenset[str]
) -> tuple[str, ...]:
    names = [reader.kind(child) for child in element if isinstance(child.tag, str)]
    return tuple(dict.fromkeys(n for n in names if n not in known))


def _parse_system(
    reader: EnvelopeReader, element: etree._Element, deployment: str | None
) -> VirtualSystem:
    system_id = reader.attr(element, "id") or ""
    name = reader.child_text(element, "Name") or system_id
    base = VirtualSystem(
        id=system_id,
        name=name,
        products=tuple(_parse_product(reader, section)
                       for section in reader.sections(element, "ProductSection")),
        eulas=tuple(text for section in reader.sections(element, "EulaSection")
                    if (text := reader.child_text(section, "License"))),
        annotation=next((text for section in reader.sections(element, "AnnotationSection")
                         if (text := reader.child_text(section, "Annotation"))), None),
        operating_system=next((_parse_os(reader, section) for section in
                               reader.sections(element, "OperatingSystemSection")), None),
        other_sections=_other_sections(reader, element, _SYSTEM_SECTIONS),
    )
    if reader.kind(element) == "VirtualSystemCollection":
        children = tuple(
            _parse_system(reader, child, deployment)
            for child in element
            if reader.kind(child) in ("VirtualSystem", "VirtualSystemCollection")
        )
        _unique([c.id for c in children], "virtual system id", reader.name)
        return replace(base, children=children)
    items, system_types = parse_hardware_items(reader, element)
    return replace(base, items=items,
                   hardware=summarize_hardware(items, deployment, system_types))


def _parse_product(reader: EnvelopeReader, section: etree._Element) -> ProductInfo:
    class_id = reader.attr(section, "class")
    instance = reader.attr(section, "instance")
    properties: list[ProductProperty] = []
    category: str | None = None
    for child in section:
        if not isinstance(child.tag, str):
            continue
        local = etree.QName(child).localname
        if local == "Category":
            category = (child.text or "").strip() or None
        elif local == "Property":
            raw_key = reader.attr(child, "key")
            if not raw_key:
                raise PackageError("ProductSection/Property without ovf:key", file=reader.name)
            key = ".".join(part for part in (class_id, raw_key, instance) if part)
            configuration = reader.attr(child, "configuration")
            properties.append(ProductProperty(
                key=key,
                raw_key=raw_key,
                type=reader.attr(child, "type") or "string",
                default=reader.attr(child, "value"),
                qualifiers=reader.attr(child, "qualifiers"),
                user_configurable=_true(reader.attr(child, "userConfigurable")),
                password=_true(reader.attr(child, "password")),
                label=reader.child_text(child, "Label"),
                description=reader.child_text(child, "Description"),
                category=category,
                configurations=tuple(configuration.split()) if configuration else None,
                defaults_by_option=tuple(
                    (option, reader.attr(value, "value") or "")
                    for value in reader.children(child, "Value")
                    for option in (reader.attr(value, "configuration") or "").split()
                ),
            ))
    _unique([p.key for p in properties], "property key", reader.name)
    return ProductInfo(
        class_id=class_id,
        instance=instance,
        product=reader.child_text(section, "Product"),
        vendor=reader.child_text(section, "Vendor"),
        version=reader.child_text(section, "Version"),
        full_version=reader.child_text(section, "FullVersion"),
        properties=tuple(properties),
    )


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


def _parse_os(reader: EnvelopeReader, section: etree._Element) -> OperatingSystem:
    raw_id = reader.attr(section, "id")
    os_type = next((str(v) for k, v in section.attrib.items() if str(k).endswith("osType")),
                   None)
    return OperatingSystem(
        id=int(raw_id) if raw_id and raw_id.isascii() and raw_id.isdigit() else None,
        os_type=os_type,
        description=reader.child_text(section, "Description"),
    )


__all__ = [
    "DeploymentOption",
    "Descriptor",
    "FileReference",
    "OperatingSystem",
    "ProductInfo",
    "ProductProperty",
    "VirtualDiskDesc",
    "VirtualSystem",
    "parse_descriptor",
]
