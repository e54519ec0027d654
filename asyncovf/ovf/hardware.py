"""A virtual system's hardware: its VirtualHardwareSection items and what they add up to.

Hardware is stated in CIM terms (DSP1041 resource types, DSP0004 allocation
units, RASD/SASD/EPASD elements), not in OVF's own, and is summarized per
deployment option: an item may belong to some options only. That is a concept
of its own, apart from the envelope's references, disks, networks and
products in ``descriptor.py``, which builds each ``VirtualSystem`` from what is
parsed here. Allocation units live here too; the DiskSection's
``capacityAllocationUnits`` uses the same ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from lxml import etree

from asyncovf.errors import PackageError
from asyncovf.ovf.envelope import EnvelopeReader

RASD: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
SASD: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData"
EPASD: Final = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData"

# CIM ResourceType values (DSP1041) that an importer reports on.
RESOURCE_CPU: Final = 3
RESOURCE_MEMORY: Final = 4
RESOURCE_NIC: Final = 10
RESOURCE_DISK: Final = 17

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
class HardwareItem:
    """One ``Item`` of a VirtualHardwareSection, as the descriptor states it."""

    resource_type: int
    instance_id: str | None = None
    element_name: str | None = None
    quantity: str | None = None
    units: str | None = None
    subtype: str | None = None
    host_resource: str | None = None
    connection: str | None = None
    parent: str | None = None
    #: ``ovf:configuration``: the deployment options this item belongs to (None: all).
    configurations: tuple[str, ...] | None = None
    required: bool = True

    def applies_to(self, option: str | None) -> bool:
        return self.configurations is None or option is None or option in self.configurations


def _rasd(item: etree._Element, local: str) -> str | None:
    for namespace in (RASD, SASD, EPASD):
        found = item.find(f"{{{namespace}}}{local}")
        if found is not None and found.text is not None:
            return found.text.strip()
    return None


def parse_hardware_items(
    reader: EnvelopeReader, system: etree._Element
) -> tuple[tuple[HardwareItem, ...], tuple[str, ...]]:
    """The items and virtual system types of ``system``'s VirtualHardwareSections.

    Raises :class:`PackageError` for a CPU or memory quantity, or memory
    units, that :func:`summarize_hardware` could not use for some option.
    """
    items: list[HardwareItem] = []
    system_types: list[str] = []
    for section in reader.sections(system, "VirtualHardwareSection"):
        for vssd in section.iter("{*}VirtualSystemType"):
            if vssd.text:
                system_types.extend(t.strip() for t in vssd.text.split(",") if t.strip())
        for item in section:
            if not isinstance(item.tag, str) or etree.QName(item).localname not in (
                "Item", "StorageItem", "EthernetPortItem"
            ):
                continue
            try:
                resource_type = int(_rasd(item, "ResourceType") or "0")
            except ValueError:
                continue  # unknown resource types are vCenter's to judge, not ours
            configuration = reader.attr(item, "configuration")
            required = reader.attr(item, "required")
            items.append(HardwareItem(
                resource_type=resource_type,
                instance_id=_rasd(item, "InstanceID"),
                element_name=_rasd(item, "ElementName"),
                quantity=_rasd(item, "VirtualQuantity"),
                units=_rasd(item, "AllocationUnits"),
                subtype=_rasd(item, "ResourceSubType"),
                host_resource=_rasd(item, "HostResource"),
                connection=_rasd(item, "Connection"),
                parent=_rasd(item, "Parent"),
                configurations=tuple(configuration.split()) if configuration else None,
                required=(required or "true").strip().lower() != "false",
            ))
    for parsed in items:  # validate what the summary will compute, for every option
        if parsed.resource_type in (RESOURCE_CPU, RESOURCE_MEMORY) and parsed.quantity:
            what = "CPU" if parsed.resource_type == RESOURCE_CPU else "memory"
            _int_or_fail(reader, parsed.quantity, f"{what} VirtualQuantity")
            if parsed.resource_type == RESOURCE_MEMORY:
                try:
                    allocation_unit_factor(parsed.units or "byte*2^20")
                except ValueError as exc:
                    raise PackageError(f"memory: {exc}", file=reader.name) from None
    return tuple(items), tuple(system_types)


def summarize_hardware(
    items: tuple[HardwareItem, ...], option: str | None, system_types: tuple[str, ...] = ()
) -> VirtualHardware:
    """CPUs, memory, disks and NICs of ``items`` for deployment option ``option``."""
    cpus: int | None = None
    memory_mb: int | None = None
    disk_ids: list[str] = []
    nics: list[NetworkCard] = []
    for item in items:
        if not item.applies_to(option):
            continue
        if item.resource_type == RESOURCE_CPU and item.quantity:
            cpus = int(item.quantity)
        elif item.resource_type == RESOURCE_MEMORY and item.quantity:
            factor = allocation_unit_factor(item.units or "byte*2^20")
            memory_mb = int(item.quantity) * factor // 2**20
        elif item.resource_type == RESOURCE_DISK:
            for prefix in ("ovf:/disk/", "ovf://disk/", "/disk/"):
                if (item.host_resource or "").startswith(prefix):
                    disk_ids.append((item.host_resource or "")[len(prefix):])
                    break
        elif item.resource_type == RESOURCE_NIC:
            nics.append(NetworkCard(network=item.connection, adapter_type=item.subtype))
    return VirtualHardware(cpus=cpus, memory_mb=memory_mb, disk_ids=tuple(disk_ids),
                           nics=tuple(nics), system_types=system_types)


def _int_or_fail(reader: EnvelopeReader, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise PackageError(f"{what} {text!r} is not an integer", file=reader.name) from None
    if value < 0:
        raise PackageError(f"{what} {text!r} is negative", file=reader.name)
    return value


__all__ = [
    "HardwareItem",
    "NetworkCard",
    "VirtualHardware",
    "allocation_unit_factor",
    "parse_hardware_items",
    "summarize_hardware",
]
