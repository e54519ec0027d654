"""A VM's options against its descriptor and vCenter's inventory, before anything is created.

:func:`check_options` holds them against the descriptor alone (deployment,
property values): pure, so a bad value is an :class:`~asyncovf.errors.InputError`
before anything reaches vCenter. :func:`map_networks` turns the network names
an operator gave into managed object references in the VM's datacenter, and
maps what was left unmapped to the datacenter's obvious default, with one
warning for all of them. :func:`resolve_options` does both for a batch job and
gives it the run's transfer settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from asyncovf.engine.options import ImportOptions, RunSettings
from asyncovf.engine.plan import JobSpec
from asyncovf.errors import InputError
from asyncovf.ovf.descriptor import Descriptor
from asyncovf.ovf.properties import check_properties
from asyncovf.spec import check_deployment
from asyncovf.vsphere.inventory import InventorySnapshot, Placement

log = logging.getLogger(__name__)

#: What vCenter calls the network a fresh host comes with: the usual default.
DEFAULT_NETWORK_NAMES: Final = ("VM Network",)


def check_job(spec: JobSpec, descriptor: Descriptor, *, strategy: str = "import") -> None:
    """Refuse, as an :class:`InputError`, a job whose deployment the descriptor lacks, or
    whose strategy cannot be: a job's first check, before any session is spent on it.

    ``strategy`` is the run's, for a job that does not say. Only one VM is cloned
    (a vApp's VMs would need CloneVApp_Task), and the seed's own settings need
    the clone strategy.
    """
    _check_deployment(spec.name, spec.options, descriptor)
    if (spec.options.strategy or strategy) == "clone":
        if descriptor.entity.is_collection:
            raise InputError(f"{spec.name}: strategy clone clones one VM, and this package "
                             "is a vApp (VirtualSystemCollection); use strategy: import")
    elif spec.options.linked_clone or spec.options.keep_seed:
        key = "linked_clone" if spec.options.linked_clone else "keep_seed"
        raise InputError(f"{spec.name}: {key} needs strategy: clone (or --strategy clone)")


def _check_deployment(name: str, options: ImportOptions, descriptor: Descriptor) -> None:
    """A deployment the descriptor does not define, as an :class:`InputError` naming ``name``."""
    try:
        check_deployment(descriptor, options.deployment)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None


def check_options(name: str, options: ImportOptions, descriptor: Descriptor) -> None:
    """Refuse, as an :class:`InputError`, options the descriptor alone shows to be wrong:
    a deployment it does not define, a property it does not have or a value its
    type refuses."""
    _check_deployment(name, options, descriptor)
    check_properties(descriptor, options.properties, where=name, hidden=options.hidden)


def map_networks(name: str, mapping: Mapping[str, str], snapshot: InventorySnapshot,
                 placement: Placement, descriptor: Descriptor | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
    """OVF network name → network MOR (port group, distributed port group, opaque).

    Given the ``descriptor``, a mapped name it does not have is refused, listing
    its networks, and its networks left unmapped fall back to the datacenter's
    default network, with a warning.
    """
    ovf_networks = descriptor.networks if descriptor is not None else ()
    if descriptor is not None:
        unknown = [ovf_name for ovf_name in mapping if ovf_name not in ovf_networks]
        if unknown:
            raise InputError(f"{name}: network mapping names {', '.join(map(repr, unknown))}"
                             f", which the descriptor does not have (its networks: "
                             f"{', '.join(ovf_networks) or 'none'})")
    mapped = {
        ovf_name: snapshot.find("network", target, datacenter=placement.datacenter,
                                what=f"network for {ovf_name!r}").ref
        for ovf_name, target in mapping.items() if target
    }
    unmapped = [ovf_name for ovf_name in ovf_networks if ovf_name not in mapped]
    if unmapped:
        fallback = _default_network(snapshot, placement)
        if fallback is not None:
            # Same name as the default: vCenter maps it by itself.
            unmapped = [ovf_name for ovf_name in unmapped if ovf_name != fallback.name]
            for ovf_name in unmapped:
                mapped[ovf_name] = fallback.ref
            if unmapped:
                note = _unmapped_note(unmapped, fallback.name)
                # One line for all of them, once per job: ``warnings`` is the job's,
                # and holds the note already when this is a retry of the same job.
                if warnings is None or note not in warnings:
                    log.warning("%s: %s", name, note)
                    if warnings is not None:
                        warnings.append(note)
    return mapped


def _unmapped_note(unmapped: Sequence[str], fallback: str, *, shown: int = 3) -> str:
    """The one warning for the networks left unmapped: the first ``shown`` and a count
    of the rest (a descriptor may have thousands)."""
    if len(unmapped) == 1:
        return f"network {unmapped[0]!r} is not mapped; using {fallback!r}"
    names = ", ".join(map(repr, unmapped[:shown]))
    if len(unmapped) > shown:
        names += f", … and {len(unmapped) - shown} more"
    return f"{len(unmapped)} networks are not mapped ({names}); using {fallback!r}"


def _default_network(snapshot: InventorySnapshot, placement: Placement) -> Any:
    """The datacenter's only network, or its "VM Network"; None when it has no obvious one."""
    networks = snapshot.items("network", placement.datacenter)
    if len(networks) == 1:
        return networks[0]
    return next((n for n in networks if n.name in DEFAULT_NETWORK_NAMES), None)


def resolve_options(spec: JobSpec, snapshot: InventorySnapshot, placement: Placement,
                    settings: RunSettings, *, descriptor: Descriptor | None = None,
                    warnings: list[str] | None = None) -> tuple[ImportOptions, dict[str, Any]]:
    """A batch job's options with the run's transfer settings, and its networks as MORs,
    both from the one ``snapshot`` its placement was resolved in."""
    if descriptor is not None:
        check_options(spec.name, spec.options, descriptor)
    networks = map_networks(spec.name, spec.options.network_mapping, snapshot, placement,
                            descriptor, warnings)
    return settings.apply(spec.options, esxi_hosts=snapshot.host_addresses()), networks


__all__ = [
    "DEFAULT_NETWORK_NAMES",
    "check_job",
    "check_options",
    "map_networks",
    "resolve_options",
]
