"""Read vcsim's inventory back with our own client, to check what an import left."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.session import VCenterSession

PC = vmodl.query.PropertyCollector


@dataclass(frozen=True)
class VmFacts:
    moid: str
    name: str
    cpus: int
    memory_mb: int
    disks: int
    networks: tuple[str, ...] = ()


async def list_vms(connection: ConnectionSettings) -> list[VmFacts]:
    """Every VM in the inventory with the hardware facts the tests compare."""
    async with VCenterSession(connection) as session:
        manager = session.content.viewManager
        view = await session.invoke(manager, "CreateContainerView",
                                    container=session.content.rootFolder,
                                    type=[vim.VirtualMachine], recursive=True)
        try:
            spec = PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[PC.TraversalSpec(
                    name="view", type=vim.view.ContainerView, path="view", skip=False)])],
                propSet=[PC.PropertySpec(type=vim.VirtualMachine, all=False, pathSet=[
                    "name", "config.hardware.numCPU", "config.hardware.memoryMB",
                    "config.hardware.device"])],
            )
            contents = await session.retrieve_contents([spec])
        finally:
            await session.invoke(view, "Destroy")
    facts = []
    for content in contents:
        props: dict[str, Any] = {p.name: p.val for p in content.propSet or ()}
        devices = props.get("config.hardware.device") or []
        facts.append(VmFacts(
            moid=content.obj._moId,
            name=props.get("name", ""),
            cpus=props.get("config.hardware.numCPU") or 0,
            memory_mb=props.get("config.hardware.memoryMB") or 0,
            disks=sum(1 for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
            networks=tuple(getattr(d.backing, "deviceName", "") or "" for d in devices
                           if isinstance(d, vim.vm.device.VirtualEthernetCard)),
        ))
    return facts


async def vms_named(connection: ConnectionSettings, name: str) -> list[VmFacts]:
    return [vm for vm in await list_vms(connection) if vm.name == name]
