"""``asyncovf spec``: the options document for an appliance, before any import.

The document uses govc's ``import.spec`` key names and order, so scripts and
option files written for ``govc import.ova -options`` keep working; ``asyncovf
import --options FILE`` and a batch entry's ``options:`` take it back. Pure: a
function of the parsed package, no vCenter.
"""

from __future__ import annotations

from typing import Any, Final

from asyncovf.ovf.descriptor import Descriptor, FileReference, ProductProperty, VirtualSystem
from asyncovf.ovf.package import Package

#: CreateImportSpec's disk provisioning values; the first is what vCenter uses by default.
DISK_PROVISIONING_OPTIONS: Final = (
    "flat", "thin", "thick", "eagerZeroedThick", "monolithicSparse", "monolithicFlat",
    "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "seSparse", "sparse",
)
IP_ALLOCATION_POLICIES: Final = ("dhcpPolicy", "transientPolicy", "fixedPolicy",
                                 "fixedAllocatedPolicy")
IP_PROTOCOLS: Final = ("IPv4", "IPv6")


def deployment_options(descriptor: Descriptor) -> list[str]:
    """Deployment option ids, the default first (as govc lists them)."""
    default = descriptor.default_deployment
    ids = [option.id for option in descriptor.deployment_options]
    return ([default] if default else []) + [i for i in ids if i != default]


def check_deployment(descriptor: Descriptor, deployment: str | None) -> None:
    """Raise ValueError, listing the choices, unless the descriptor defines ``deployment``.

    None (the descriptor's default) is always valid.
    """
    options = deployment_options(descriptor)
    if deployment is not None and deployment not in options:
        raise ValueError(f"deployment option {deployment!r} not in the descriptor; "
                         f"choices: {', '.join(options) or 'none'}")


def property_mapping(descriptor: Descriptor, deployment: str | None, *,
                     verbose: bool = False, hidden: bool = False) -> list[dict[str, Any]]:
    """Every user-configurable property that applies to ``deployment``, with its default.

    ``hidden`` adds the properties the vendor did not mark ``userConfigurable``
    (govc's ``-hidden``): setting those is possible but rarely what you want.
    """
    mapping: list[dict[str, Any]] = []
    seen: set[str] = set()
    for prop in descriptor.properties:
        # A vApp's VMs may share a key: vCenter maps by key, so list it once.
        if not prop.applies_to(deployment) or prop.key in seen:
            continue
        if not prop.user_configurable and not hidden:
            continue
        seen.add(prop.key)
        entry: dict[str, Any] = {"Key": prop.key, "Value": prop.default_for(deployment) or ""}
        if verbose:
            entry["Spec"] = property_spec(prop)
        mapping.append(entry)
    return mapping


def property_spec(prop: ProductProperty) -> dict[str, Any]:
    spec: dict[str, Any] = {"Key": prop.raw_key, "Type": prop.type}
    spec.update({name: value for name, value in (
        ("Qualifiers", prop.qualifiers), ("Default", prop.default), ("Label", prop.label),
        ("Description", prop.description), ("Category", prop.category)) if value is not None})
    spec["UserConfigurable"] = prop.user_configurable
    if prop.password:
        spec["Password"] = True
    if prop.configurations is not None:
        spec["Configurations"] = list(prop.configurations)
    return spec


def _hardware(system: VirtualSystem, option: str | None) -> dict[str, Any]:
    hardware = system.hardware_for(option)
    return {
        "CPUs": hardware.cpus,
        "MemoryMB": hardware.memory_mb,
        "Disks": list(hardware.disk_ids),
        "NICs": [{"Network": nic.network, "Adapter": nic.adapter_type} for nic in hardware.nics],
    }


def options_document(
    descriptor: Descriptor,
    *,
    package: Package | None = None,
    verbose: bool = False,
    hidden: bool = False,
    deployment: str | None = None,
) -> dict[str, Any]:
    """The options document, keys in govc's order; ``verbose`` adds what an operator reviews."""
    options = deployment_options(descriptor)
    check_deployment(descriptor, deployment)
    chosen = deployment or (options[0] if options else None)
    annotation = "\n".join(a for s in descriptor.entity.walk() if (a := s.annotation))

    document: dict[str, Any] = {}
    if options:
        document["AllDeploymentOptions"] = options
        document["Deployment"] = chosen
    if verbose:
        document["AllDiskProvisioningOptions"] = list(DISK_PROVISIONING_OPTIONS)
    document["DiskProvisioning"] = DISK_PROVISIONING_OPTIONS[0]
    if verbose:
        document["AllIPAllocationPolicyOptions"] = list(IP_ALLOCATION_POLICIES)
    document["IPAllocationPolicy"] = IP_ALLOCATION_POLICIES[0]
    if verbose:
        document["AllIPProtocolOptions"] = list(IP_PROTOCOLS)
    document["IPProtocol"] = IP_PROTOCOLS[0]
    document["PropertyMapping"] = property_mapping(descriptor, chosen, verbose=verbose,
                                                   hidden=hidden)
    document["NetworkMapping"] = [{"Name": name, "Network": ""} for name in descriptor.networks]
    document["Annotation"] = annotation
    document["MarkAsTemplate"] = False
    document["PowerOn"] = False
    document["InjectOvfEnv"] = False
    document["WaitForIP"] = False
    document["Name"] = descriptor.entity.name
    # Our extensions, after govc's keys (govc ignores keys it does not know).
    document["ExtraConfig"] = []
    document["HardwareVersion"] = ""
    if verbose:
        document["Disks"] = [
            {"Id": disk.disk_id, "CapacityBytes": disk.capacity_bytes,
             "Capacity": disk.capacity, "File": disk.file_ref, "Format": disk.format,
             "PopulatedSize": disk.populated_size}
            for disk in descriptor.disks
        ]
        document["Hardware"] = {
            option or "default": {system.name: _hardware(system, option)
                                  for system in descriptor.entity.walk()
                                  if not system.is_collection}
            for option in _or_default(options)
        }
        document["Eulas"] = list(descriptor.eulas)
        os = descriptor.entity.operating_system
        if os is not None:
            document["OperatingSystem"] = {"Id": os.id, "OsType": os.os_type,
                                           "Description": os.description}
        if package is not None:
            document["Package"] = {
                "Kind": package.kind,
                "Manifest": package.manifest.name if package.manifest else None,
                "Certificate": package.has_certificate,
                "Files": [_file_facts(f) for f in descriptor.files],
            }
    return document


def _file_facts(ref: FileReference) -> dict[str, Any]:
    facts: dict[str, Any] = {"Href": ref.href, "Size": ref.size}
    if ref.compression:
        facts["Compression"] = ref.compression
    if ref.chunk_size:
        facts["ChunkSize"] = ref.chunk_size
    return facts


def _or_default(options: list[str]) -> list[str | None]:
    """The options to show hardware for: each one, or just the descriptor's only shape."""
    return list(options) if options else [None]


#: Keys of the verbose document that only inform: accepted and ignored on input.
INFORMATIONAL_KEYS: Final = frozenset({
    "AllDiskProvisioningOptions", "AllIPAllocationPolicyOptions", "AllIPProtocolOptions",
    "Disks", "Hardware", "Eulas", "OperatingSystem", "Package",
})

__all__ = [
    "DISK_PROVISIONING_OPTIONS",
    "INFORMATIONAL_KEYS",
    "IP_ALLOCATION_POLICIES",
    "IP_PROTOCOLS",
    "check_deployment",
    "deployment_options",
    "options_document",
    "property_mapping",
]
