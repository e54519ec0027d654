"""``--create-folders``: make the VM folder a placement names, if it is missing.

Folders are created one path component at a time under the datacenter's VM
folder. Many workers may want the same new folder at once; whoever loses the
race gets ``DuplicateName`` from vCenter, which here means "already done" —
then the inventory cache is refreshed once so every worker sees the folder.
"""

from __future__ import annotations

import logging

from asyncovf.errors import PlacementError, VCenterError
from asyncovf.vsphere.inventory import InventoryCache, InventoryItem, PlacementRequest
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)


def folder_components(text: str, datacenter: InventoryItem) -> list[str]:
    """The names below the datacenter's VM folder that ``text`` means.

    Accepts ``/DC0/vm/a/b``, ``vm/a/b`` and ``a/b``.
    """
    parts = [p for p in text.strip().split("/") if p]
    dc_parts = [p for p in datacenter.path.split("/") if p]
    if parts[:len(dc_parts)] == dc_parts:
        parts = parts[len(dc_parts):]
    if parts[:1] == ["vm"]:
        parts = parts[1:]
    if not parts:
        raise PlacementError(f"folder {text!r} names no folder below the VM folder")
    return parts


async def ensure_vm_folder(session: VCenterSession, cache: InventoryCache,
                           request: PlacementRequest) -> bool:
    """Create the request's folder path if it does not exist; True if anything was made."""
    if not request.folder:
        return False
    snapshot = await cache.get(session)
    datacenter = (snapshot.find("datacenter", request.datacenter) if request.datacenter
                  else snapshot.only("datacenter", None, what="datacenter",
                                     option="--datacenter"))
    try:
        snapshot.find("vm-folder", request.folder, datacenter=datacenter, what="VM folder")
        return False
    except PlacementError:
        pass
    parent = snapshot.get(datacenter.props["vmFolder"]._moId)
    if parent is None:
        raise PlacementError(f"inventory is missing the VM folder of {datacenter.path}")
    created = False
    for name in folder_components(request.folder, datacenter):
        child = next((f for f in snapshot.items("vm-folder", datacenter)
                      if f.parent == parent.moid and f.name == name), None)
        if child is None:
            try:
                await session.invoke(parent.ref, "CreateFolder", name=name)
                log.info("created folder %s/%s", parent.path, name)
                created = True
            except VCenterError as exc:
                if exc.fault_type != "DuplicateName":
                    raise
            snapshot = await cache.refresh_after_change(session)
            child = next((f for f in snapshot.items("vm-folder", datacenter)
                          if f.parent == parent.moid and f.name == name), None)
            if child is None:
                raise PlacementError(f"folder {parent.path}/{name} was created but is not in "
                                     "the inventory")
        parent = child
    return created


__all__ = ["ensure_vm_folder", "folder_components"]
