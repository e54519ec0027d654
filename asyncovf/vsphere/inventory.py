"""Inventory: datacenters, compute resources, pools, hosts, datastores, networks
and folders, read in one property-collector traversal into an immutable snapshot.

A snapshot is a value: readers never lock, and a refresh builds a new one and
swaps the reference. Resolution accepts inventory paths (``/DC0/host/DC0_C0``),
paths relative to the datacenter (``host/DC0_C0``), plain names when they are
unique, and managed object ids (``datastore-11``).
"""

from __future__ import annotations

import socket
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import anyio
import anyio.lowlevel
from pyVmomi import vim, vmodl

from asyncovf.errors import PlacementError
from asyncovf.vsphere.session import RETRIEVE_PAGE_SIZE, VCenterSession

PC = vmodl.query.PropertyCollector

#: The managed object types we index, with the properties we read for each.
_PROPERTIES: Final[dict[type, list[str]]] = {
    vim.Folder: ["name", "parent", "childType"],
    vim.Datacenter: ["name", "parent", "vmFolder", "hostFolder"],
    vim.ComputeResource: ["name", "parent", "resourcePool", "host"],
    vim.HostSystem: ["name", "parent"],
    vim.ResourcePool: ["name", "parent", "owner"],
    vim.Datastore: ["name", "parent", "summary.freeSpace", "summary.accessible"],
    vim.Network: ["name", "parent"],
}

# Which kind each concrete type is indexed as (subtypes first: order matters).
_KINDS: Final = (
    (vim.Datacenter, "datacenter"),
    (vim.ClusterComputeResource, "compute"),
    (vim.ComputeResource, "compute"),
    (vim.HostSystem, "host"),
    (vim.ResourcePool, "pool"),  # includes vim.VirtualApp
    (vim.Datastore, "datastore"),
    (vim.Network, "network"),  # includes portgroups and opaque networks
    (vim.StoragePod, "datastore-cluster"),  # a Folder subtype: before Folder
    (vim.Folder, "folder"),
)


@dataclass(frozen=True)
class InventoryItem:
    """One inventory object: its reference, kind, name, full path and properties."""

    ref: Any
    kind: str
    name: str
    path: str
    parent: str | None  # parent's moid
    datacenter: str | None  # enclosing datacenter's moid
    props: Mapping[str, Any]
    #: A host's management addresses besides its name, lower-cased: its VMkernel
    #: NICs' IPv4 and IPv6 addresses and its DNS name. Empty for other kinds.
    addresses: frozenset[str] = frozenset()

    @property
    def moid(self) -> str:
        return str(self.ref._moId)


@dataclass(frozen=True)
class Placement:
    """Where an import goes; every field is a resolved managed object reference."""

    datacenter: InventoryItem
    resource_pool: InventoryItem
    datastore: InventoryItem
    folder: InventoryItem
    host: InventoryItem | None = None


@dataclass(frozen=True)
class PlacementRequest:
    """What the operator asked for: paths, names or ids; ``None`` means default."""

    datacenter: str | None = None
    cluster: str | None = None
    resource_pool: str | None = None
    host: str | None = None
    datastore: str | None = None
    folder: str | None = None


class InventorySnapshot:
    """An immutable index of the inventory at one moment."""

    def __init__(self, items: Iterable[InventoryItem]) -> None:
        by_id = {item.moid: item for item in items}
        self._by_id: Mapping[str, InventoryItem] = MappingProxyType(by_id)
        self._host_addresses: frozenset[str] | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, moid: str) -> InventoryItem | None:
        return self._by_id.get(moid)

    def items(self, kind: str, datacenter: InventoryItem | None = None) -> list[InventoryItem]:
        return [
            item
            for item in self._by_id.values()
            if item.kind == kind and (datacenter is None or item.datacenter == datacenter.moid)
        ]

    def host_addresses(self) -> frozenset[str]:
        """Every name and address the snapshot knows the ESXi hosts by, lower-cased.

        A lease's device URL names the host as vCenter reaches it, which need
        not be the name the host was added by: a host added by FQDN may be
        named by its VMkernel IP, or the reverse. The inventory load reads
        names only; :meth:`InventoryCache.host_addresses` adds the DNS names
        and VMkernel addresses (:data:`HOST_ADDRESS_PROPERTIES`) when a URL
        names a host by neither. Contents that carry them count here too.
        """
        if self._host_addresses is None:
            self._host_addresses = frozenset(
                address
                for host in self.items("host")
                for address in (*_spellings(host.name), *host.addresses)
            )
        return self._host_addresses

    def find(
        self,
        kind: str,
        text: str,
        *,
        datacenter: InventoryItem | None = None,
        what: str | None = None,
    ) -> InventoryItem:
        """Resolve ``text`` to exactly one item of ``kind``, or raise naming the choices."""
        what = what or kind
        candidates = self.items(kind, datacenter)
        wanted = text.strip()
        by_id = [c for c in candidates if c.moid == wanted]
        if by_id:
            return by_id[0]
        stripped = wanted.strip("/")
        matches = [c for c in candidates if c.path.strip("/") == stripped]
        if not matches and datacenter is not None:
            relative = f"{datacenter.path.strip('/')}/{stripped}"
            matches = [c for c in candidates if c.path.strip("/") == relative]
        if not matches and "/" in stripped:
            matches = [c for c in candidates if c.path.strip("/").endswith("/" + stripped)]
        if not matches:
            matches = [c for c in candidates if c.name == wanted]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise PlacementError(f"{what} {text!r} not found; {_choices(candidates)}")
        paths = ", ".join(sorted(m.path for m in matches))
        raise PlacementError(f"{what} {text!r} is ambiguous: {paths}; give the full path")

    def only(self, kind: str, datacenter: InventoryItem | None, *, what: str,
             option: str) -> InventoryItem:
        """The single item of ``kind``, or an error asking for ``option``."""
        candidates = self.items(kind, datacenter)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise PlacementError(f"no {what} in {datacenter.path if datacenter else 'inventory'}")
        raise PlacementError(f"{len(candidates)} {what}s exist, choose one with {option}: "
                             f"{_choices(candidates)}")

    def resolve(self, request: PlacementRequest) -> Placement:
        """Turn an operator's placement request into managed object references."""
        datacenter = (
            self.find("datacenter", request.datacenter)
            if request.datacenter
            else self.only("datacenter", None, what="datacenter", option="--datacenter")
        )
        host = self.find("host", request.host, datacenter=datacenter) if request.host else None

        if request.resource_pool:
            pool = self.find("pool", request.resource_pool, datacenter=datacenter,
                             what="resource pool")
        else:
            if request.cluster:
                compute = self.find("compute", request.cluster, datacenter=datacenter,
                                    what="cluster")
            elif host is not None:
                compute = self._required(host.parent, "host's compute resource")
            else:
                compute = self.only("compute", datacenter, what="cluster or standalone host",
                                    option="--cluster, --host or --resource-pool")
            root_pool = compute.props.get("resourcePool")
            if root_pool is None:
                raise PlacementError(f"{compute.path} has no resource pool")
            pool = self._required(root_pool._moId, "root resource pool")

        datastore = (
            self._datastore(request.datastore, datacenter)
            if request.datastore
            else self.only("datastore", datacenter, what="datastore", option="--datastore")
        )
        if request.folder:
            folder = self.find("vm-folder", request.folder, datacenter=datacenter,
                               what="VM folder")
        else:
            folder = self._required(datacenter.props["vmFolder"]._moId, "VM folder")
        return Placement(datacenter=datacenter, resource_pool=pool, datastore=datastore,
                         folder=folder, host=host)

    def _datastore(self, text: str, datacenter: InventoryItem) -> InventoryItem:
        """A datastore, or the member with most free space of a datastore cluster.

        Storage DRS would pick for us only through a separate recommendation
        API; for imports, most free space is what operators expect.
        """
        try:
            return self.find("datastore", text, datacenter=datacenter)
        except PlacementError as not_a_datastore:
            try:
                pod = self.find("datastore-cluster", text, datacenter=datacenter,
                                what="datastore cluster")
            except PlacementError:
                raise not_a_datastore from None
        members = [d for d in self.items("datastore", datacenter)
                   if d.parent == pod.moid and d.props.get("summary.accessible", True)]
        if not members:
            raise PlacementError(f"datastore cluster {pod.path} has no accessible datastore")
        return max(members, key=lambda d: (d.props.get("summary.freeSpace") or 0, d.name))

    def _required(self, moid: str | None, what: str) -> InventoryItem:
        item = self.get(moid) if moid else None
        if item is None:
            raise PlacementError(f"inventory is missing the {what} ({moid})")
        return item


def _choices(candidates: list[InventoryItem]) -> str:
    if not candidates:
        return "there are none"
    paths = sorted(c.path for c in candidates)
    shown = ", ".join(paths[:10])
    more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
    return f"choices: {shown}{more}"


def _traversal_specs() -> list[Any]:
    """Walk folders, datacenters, compute resources and pools — never into VMs' contents."""

    def spec(name: str, type_: type, path: str, *nested: str) -> Any:
        return PC.TraversalSpec(
            name=name, type=type_, path=path, skip=False,
            selectSet=[PC.SelectionSpec(name=n) for n in nested],
        )

    everything = ("folder", "dc_vm", "dc_host", "dc_ds", "dc_net", "cr_host", "cr_pool", "rp_rp")
    return [
        spec("folder", vim.Folder, "childEntity", *everything),
        spec("dc_vm", vim.Datacenter, "vmFolder", "folder"),
        spec("dc_host", vim.Datacenter, "hostFolder", "folder"),
        spec("dc_ds", vim.Datacenter, "datastoreFolder", "folder"),
        spec("dc_net", vim.Datacenter, "networkFolder", "folder"),
        spec("cr_host", vim.ComputeResource, "host"),
        spec("cr_pool", vim.ComputeResource, "resourcePool", "rp_rp"),
        spec("rp_rp", vim.ResourcePool, "resourcePool", "rp_rp"),
    ]


#: What a host may be named by in a device URL besides its inventory name: its
#: VMkernel NICs and DNS name. Read only when a URL does not name a host by its
#: inventory name (:func:`load_host_addresses`): a host's network config costs
#: about seven times the rest of its properties to parse, so reading it in
#: every inventory load would cost a 2,000-host vCenter seconds of CPU for a
#: check that almost always matches by name.
HOST_ADDRESS_PROPERTIES: Final = ["config.network.vnic", "config.network.dnsConfig"]


async def load_host_addresses(session: VCenterSession,
                              snapshot: InventorySnapshot) -> frozenset[str]:
    """Every name and management address of the snapshot's hosts, lower-cased.

    One paged RetrievePropertiesEx over the hosts (no traversal).
    """
    hosts = snapshot.items("host")
    if not hosts:
        return snapshot.host_addresses()
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=host.ref, skip=False) for host in hosts],
        propSet=[PC.PropertySpec(type=vim.HostSystem, pathSet=HOST_ADDRESS_PROPERTIES,
                                 all=False)],
    )
    found = set(snapshot.host_addresses())
    for content in await session.retrieve_contents([spec]):
        found |= _host_addresses({p.name: p.val for p in content.propSet or ()})
        await anyio.lowlevel.checkpoint()
    return frozenset(found)


async def load_snapshot(session: VCenterSession, *,
                        page_size: int = RETRIEVE_PAGE_SIZE) -> InventorySnapshot:
    """Read the whole placement inventory in one RetrievePropertiesEx traversal.

    Paged: ``page_size`` objects per answer (see :data:`RETRIEVE_PAGE_SIZE`).
    """
    root = session.content.rootFolder
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=root, skip=False, selectSet=_traversal_specs())],
        propSet=[PC.PropertySpec(type=t, pathSet=paths, all=False)
                 for t, paths in _PROPERTIES.items()],
    )
    contents = await session.retrieve_contents([spec], page_size=page_size)
    # Built a step at a time, with the loop's other work in between: at once,
    # 8,000 objects held the loop for 0.2-0.4 s (benchmarks/loop_stall.py),
    # longer than parsing any page.
    steps = _build_snapshot(contents, root_moid=root._moId)
    while (snapshot := _build_step(steps)) is None:
        await anyio.lowlevel.checkpoint()
    return snapshot


def _spellings(address: str) -> set[str]:
    """``address`` lower-cased, and an IPv6 address also in its canonical form.

    URLs carry IPv6 addresses compressed (``fe80::1``), which need not be how
    the host reports them. ``inet_pton``/``inet_ntop`` rather than
    ``ipaddress``: this runs for every address of every host while the
    snapshot is built on the event loop, and ``ipaddress`` is 12 times slower.
    """
    text = address.strip().lower()
    if ":" not in text:
        # 0.0.0.0 is "no address yet", and connecting to it reaches this machine.
        return {text} if text and text != "0.0.0.0" else set()
    try:
        canonical = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
    except OSError:  # not an address after all (or one with a zone: kept as written)
        return {text}
    return {text, canonical} if canonical != "::" else set()


def _host_addresses(props: dict[str, Any]) -> frozenset[str]:
    """Take a host's VMkernel NICs and DNS config out of ``props``; keep their addresses.

    Only the strings stay in the snapshot, not the NIC objects. Every level
    may be unset: a disconnected host has no ``config``, a NIC without IPv4
    has no ``ipAddress``, IPv6 may be off (HostVirtualNicSpec.ip, HostIpConfig,
    HostDnsConfig in the vSphere API reference).
    """
    found: set[str] = set()
    for vnic in props.pop("config.network.vnic", None) or ():
        ip = getattr(getattr(vnic, "spec", None), "ip", None)
        if ip is None:
            continue
        found |= _spellings(getattr(ip, "ipAddress", None) or "")
        ipv6 = getattr(ip, "ipV6Config", None)
        for entry in getattr(ipv6, "ipV6Address", None) or ():
            found |= _spellings(getattr(entry, "ipAddress", None) or "")
    dns = props.pop("config.network.dnsConfig", None)
    host_name = (getattr(dns, "hostName", None) or "").strip().strip(".")
    if host_name:
        domain = (getattr(dns, "domainName", None) or "").strip().strip(".")
        found |= _spellings(f"{host_name}.{domain}" if domain else host_name)
    return frozenset(found)


def snapshot_from_contents(contents: Iterable[Any], *, root_moid: str) -> InventorySnapshot:
    """Build a snapshot from ``ObjectContent`` (pure: no I/O, unit-testable)."""
    steps = _build_snapshot(contents, root_moid=root_moid)
    while (snapshot := _build_step(steps)) is None:
        pass
    return snapshot


def _build_step(steps: Generator[None, None, InventorySnapshot]) -> InventorySnapshot | None:
    """Take the build one step further; the snapshot once it is built, else None."""
    try:
        next(steps)
    except StopIteration as done:
        built: InventorySnapshot = done.value
        return built
    return None


#: Objects indexed between two pauses of :func:`_build_snapshot` (a few ms of work).
_BUILD_STEP: Final = 500


def _build_snapshot(contents: Iterable[Any], *,
                    root_moid: str) -> Generator[None, None, InventorySnapshot]:
    """:func:`snapshot_from_contents`, pausing (``yield``) every :data:`_BUILD_STEP` objects."""
    raw: dict[str, tuple[Any, str, dict[str, Any]]] = {}
    for count, content in enumerate(contents, 1):
        if count % _BUILD_STEP == 0:
            yield
        obj = content.obj
        kind = next((k for t, k in _KINDS if isinstance(obj, t)), None)
        if kind is None:
            continue
        props = {p.name: p.val for p in content.propSet or ()}
        if kind == "folder" and "VirtualMachine" in (props.get("childType") or ()):
            kind = "vm-folder"  # only VM folders can receive an import
        raw[obj._moId] = (obj, kind, props)

    paths: dict[str, str] = {}
    datacenters: dict[str, str | None] = {}

    def path_of(moid: str, depth: int = 0) -> str:
        if moid in paths:
            return paths[moid]
        entry = raw.get(moid)
        if entry is None or moid == root_moid or depth > 64:
            return ""
        obj, kind, props = entry
        parent = props.get("parent")
        if kind == "pool" and parent is not None and parent._moId not in raw:
            parent = props.get("owner")
        parent_path = path_of(parent._moId, depth + 1) if parent is not None else ""
        paths[moid] = f"{parent_path}/{props.get('name', moid)}"
        return paths[moid]

    def datacenter_of(moid: str, depth: int = 0) -> str | None:
        if moid in datacenters:
            return datacenters[moid]
        entry = raw.get(moid)
        result: str | None = None
        if entry is not None and depth <= 64:
            _, kind, props = entry
            if kind == "datacenter":
                result = moid
            elif props.get("parent") is not None:
                result = datacenter_of(props["parent"]._moId, depth + 1)
        datacenters[moid] = result
        return result

    items: list[InventoryItem] = []
    for count, (moid, (obj, kind, props)) in enumerate(raw.items(), 1):
        if count % _BUILD_STEP == 0:
            yield
        parent = props.get("parent")
        items.append(
            InventoryItem(
                ref=obj,
                kind=kind,
                name=str(props.get("name", moid)),
                path=path_of(moid),
                parent=parent._moId if parent is not None else None,
                datacenter=datacenter_of(moid),
                addresses=_host_addresses(props) if kind == "host" else frozenset(),
                props=MappingProxyType(props),
            )
        )
    return InventorySnapshot(items)


@dataclass(eq=False)
class _Refresh:
    """One load under way, and what its waiters share when it ends."""

    done: anyio.Event = field(default_factory=anyio.Event)
    snapshot: InventorySnapshot | None = None
    #: Why the load failed, for the callers that waited for this one load only.
    error: Exception | None = None


class InventoryCache:
    """The one inventory cache all workers share.

    Readers take :attr:`snapshot` — an immutable value — and never lock. A
    refresh builds a whole new snapshot and replaces the reference in one
    assignment. Concurrent misses coalesce: the first caller refreshes (with
    its own session), the others wait for that refresh instead of starting
    their own.
    """

    def __init__(self, snapshot: InventorySnapshot | None = None) -> None:
        self._snapshot = snapshot
        self._refreshing: _Refresh | None = None
        self.refreshes = 0
        #: The hosts' management addresses, read for one snapshot (see
        #: :meth:`host_addresses`).
        self._addresses: tuple[InventorySnapshot, frozenset[str]] | None = None

    async def host_addresses(self, session: VCenterSession) -> frozenset[str]:
        """The hosts' names and management addresses for the current snapshot.

        Read once per snapshot, when first asked for: only a device URL that
        names a host by something other than its inventory name asks.
        Concurrent first callers may each read it; the answers are the same.
        """
        snapshot = await self.get(session)
        known = self._addresses
        if known is not None and known[0] is snapshot:
            return known[1]
        addresses = await load_host_addresses(session, snapshot)
        self._addresses = (snapshot, addresses)
        return addresses

    @property
    def snapshot(self) -> InventorySnapshot | None:
        return self._snapshot

    async def get(self, session: VCenterSession) -> InventorySnapshot:
        """The current snapshot, loading the first one if there is none yet."""
        snapshot = self._snapshot
        if snapshot is not None:
            return snapshot
        return await self.refresh(session, seen=None)

    async def refresh(
        self, session: VCenterSession, *, seen: InventorySnapshot | None
    ) -> InventorySnapshot:
        """Replace the snapshot ``seen`` by a fresh one; share a refresh already under way.

        ``seen`` is the snapshot the caller found wanting: if it was already
        replaced meanwhile, the newer one is returned without another round trip.

        A shared refresh that fails with an error hands that error to the
        callers that waited for it (they asked for the same load), and to no
        later caller: the next call loads again. A shared refresh that was
        cancelled — its worker's own job timeout, say — is not the waiters'
        cancellation: they go round again, and the first of them loads while
        the others share that load.
        """
        while True:
            current = self._snapshot
            if current is not None and current is not seen:
                return current
            under_way = self._refreshing
            if under_way is None:
                return await self._load(session)
            await under_way.done.wait()
            if under_way.snapshot is not None:
                return under_way.snapshot
            if under_way.error is not None:
                raise under_way.error

    async def _load(self, session: VCenterSession) -> InventorySnapshot:
        """Load with ``session``, as the refresh the others wait for."""
        refresh = self._refreshing = _Refresh()
        try:
            snapshot = await load_snapshot(session)
            self._snapshot = refresh.snapshot = snapshot
            self.refreshes += 1
            return snapshot
        except Exception as exc:
            refresh.error = exc
            raise
        finally:
            # On every exit (a cancellation too) the waiters wake; they read
            # the outcome from ``refresh``, never from the cache, so a later
            # load cannot be mistaken for this one.
            self._refreshing = None
            refresh.done.set()

    async def refresh_after_change(self, session: VCenterSession) -> InventorySnapshot:
        """A snapshot read after the caller's own change to the inventory (CreateFolder).

        :meth:`refresh` may hand back a snapshot, or share a refresh, that
        another worker started before the change, and so lacks it. Wait for a
        refresh under way, then refresh: sharing only one that starts from now.
        """
        under_way = self._refreshing
        if under_way is not None:
            await under_way.done.wait()
        return await self.refresh(session, seen=self._snapshot)

    async def resolve(self, session: VCenterSession, request: PlacementRequest) -> Placement:
        """Resolve a placement; on a miss refresh once (someone may have just created it)."""
        snapshot = await self.get(session)
        try:
            return snapshot.resolve(request)
        except PlacementError:
            fresh = await self.refresh(session, seen=snapshot)
            return fresh.resolve(request)


__all__ = [
    "InventoryCache",
    "InventoryItem",
    "InventorySnapshot",
    "Placement",
    "PlacementRequest",
    "HOST_ADDRESS_PROPERTIES",
    "load_host_addresses",
    "load_snapshot",
    "snapshot_from_contents",
]
