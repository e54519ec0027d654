"""Placement resolution over a snapshot built from property-collector contents."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim

from asyncovf.engine.job import check_device_hosts
from asyncovf.engine.options import ImportOptions
from asyncovf.engine.uploads import JobHooks
from asyncovf.errors import PlacementError, UntrustedTarget
from asyncovf.vsphere.inventory import InventorySnapshot, PlacementRequest, snapshot_from_contents
from asyncovf.vsphere.nfc import UploadTarget, check_device_host


def content(obj: Any, **props: Any) -> Any:
    """An ObjectContent look-alike (pyVmomi's own refuses plain lists as values)."""
    return SimpleNamespace(obj=obj, propSet=[SimpleNamespace(name=k.replace("__", "."), val=v)
                                             for k, v in props.items()])


def build(extra_cluster: bool = True) -> InventorySnapshot:
    root = vim.Folder("group-d1")
    dc = vim.Datacenter("datacenter-2")
    vm_folder, host_folder = vim.Folder("folder-3"), vim.Folder("folder-4")
    ds_folder, sub = vim.Folder("folder-5"), vim.Folder("folder-6")
    cluster, pool = vim.ClusterComputeResource("domain-c7"), vim.ResourcePool("resgroup-8")
    child_pool = vim.ResourcePool("resgroup-9")
    host = vim.HostSystem("host-10")
    standalone, standalone_pool = vim.ComputeResource("domain-s11"), vim.ResourcePool("rg-12")
    ds = vim.Datastore("datastore-13")
    contents = [
        content(root, name="Datacenters", childType=["Folder", "Datacenter"]),
        content(dc, name="DC0", parent=root, vmFolder=vm_folder, hostFolder=host_folder),
        content(vm_folder, name="vm", parent=dc, childType=["Folder", "VirtualMachine"]),
        content(sub, name="web", parent=vm_folder, childType=["Folder", "VirtualMachine"]),
        content(host_folder, name="host", parent=dc, childType=["Folder", "ComputeResource"]),
        content(ds_folder, name="datastore", parent=dc, childType=["Folder", "Datastore"]),
        content(cluster, name="C0", parent=host_folder, resourcePool=pool, host=[host]),
        content(pool, name="Resources", parent=cluster, owner=cluster),
        content(child_pool, name="gold", parent=pool, owner=cluster),
        content(host, name="esx1", parent=cluster),
        content(ds, name="LocalDS_0", parent=ds_folder, summary__freeSpace=10,
                summary__accessible=True),
    ]
    if extra_cluster:
        contents += [
            content(standalone, name="esx2", parent=host_folder, resourcePool=standalone_pool),
            content(standalone_pool, name="Resources", parent=standalone, owner=standalone),
        ]
    return snapshot_from_contents(contents, root_moid="group-d1")


def test_paths_are_built_from_parents() -> None:
    snapshot = build()
    assert snapshot.get("resgroup-9").path == "/DC0/host/C0/Resources/gold"  # type: ignore[union-attr]
    assert [i.path for i in snapshot.items("vm-folder")] == ["/DC0/vm", "/DC0/vm/web"]


@pytest.mark.parametrize("cluster", ["C0", "/DC0/host/C0", "host/C0", "domain-c7"])
def test_cluster_by_name_path_relative_path_or_id(cluster: str) -> None:
    placement = build().resolve(PlacementRequest(cluster=cluster))
    assert placement.resource_pool.moid == "resgroup-8"
    assert placement.datastore.name == "LocalDS_0" and placement.folder.path == "/DC0/vm"


def test_host_implies_its_cluster_pool() -> None:
    placement = build().resolve(PlacementRequest(host="esx1", folder="web"))
    assert placement.resource_pool.moid == "resgroup-8"
    assert placement.host is not None and placement.host.moid == "host-10"
    assert placement.folder.path == "/DC0/vm/web"


def test_resource_pool_path() -> None:
    placement = build().resolve(PlacementRequest(resource_pool="C0/Resources/gold"))
    assert placement.resource_pool.moid == "resgroup-9"


def test_default_compute_needs_exactly_one() -> None:
    with pytest.raises(PlacementError, match=r"2 cluster or standalone hosts exist, choose one "
                                             r"with --cluster.*/DC0/host/C0, /DC0/host/esx2"):
        build().resolve(PlacementRequest())
    assert build(extra_cluster=False).resolve(PlacementRequest()).resource_pool.moid == "resgroup-8"


def test_unknown_datastore_lists_the_choices() -> None:
    with pytest.raises(PlacementError, match=r"datastore 'nope' not found; choices: "
                                             r"/DC0/datastore/LocalDS_0"):
        build().resolve(PlacementRequest(cluster="C0", datastore="nope"))


def test_ambiguous_name_asks_for_the_full_path() -> None:
    with pytest.raises(PlacementError, match="resource pool 'Resources' is ambiguous: "
                                             "/DC0/host/C0/Resources, /DC0/host/esx2/Resources"):
        build().resolve(PlacementRequest(resource_pool="Resources"))


def with_datastore_cluster(*free: tuple[str, int, bool]) -> InventorySnapshot:
    """``build()``'s inventory plus a datastore cluster "gold-pod" of the given members."""
    base = build(extra_cluster=False)
    pod = vim.StoragePod("group-p20")
    ds_folder = base.get("folder-5")
    assert ds_folder is not None
    contents = [content(item.ref, **{k.replace(".", "__"): v for k, v in item.props.items()})
                for item in (base.get(m) for m in ("group-d1", "datacenter-2", "folder-3",
                                                   "folder-4", "folder-5", "domain-c7",
                                                   "resgroup-8", "host-10", "datastore-13"))
                if item is not None]
    contents.append(content(pod, name="gold-pod", parent=ds_folder.ref,
                            childType=["Datastore"]))
    for index, (name, space, accessible) in enumerate(free):
        contents.append(content(vim.Datastore(f"datastore-{30 + index}"), name=name,
                                parent=pod, summary__freeSpace=space,
                                summary__accessible=accessible))
    return snapshot_from_contents(contents, root_moid="group-d1")


def test_a_datastore_cluster_places_on_its_member_with_most_free_space() -> None:
    snapshot = with_datastore_cluster(("pod-a", 500, True), ("pod-b", 900, True),
                                      ("pod-c", 5000, False))
    assert [i.path for i in snapshot.items("datastore-cluster")] == ["/DC0/datastore/gold-pod"]
    placement = snapshot.resolve(PlacementRequest(cluster="C0", datastore="gold-pod"))
    assert placement.datastore.name == "pod-b"  # pod-c has more, but is inaccessible
    # a datastore named directly still wins, and so does an id
    assert snapshot.resolve(PlacementRequest(cluster="C0", datastore="pod-a")).datastore.name \
        == "pod-a"


def test_an_empty_datastore_cluster_is_a_clear_error() -> None:
    snapshot = with_datastore_cluster(("pod-a", 500, False))
    with pytest.raises(PlacementError, match="datastore cluster /DC0/datastore/gold-pod has no "
                                             "accessible datastore"):
        snapshot.resolve(PlacementRequest(cluster="C0", datastore="gold-pod"))
    with pytest.raises(PlacementError, match="datastore 'nope' not found"):
        snapshot.resolve(PlacementRequest(cluster="C0", datastore="nope"))


def vnic(ipv4: str | None = None, *ipv6: str) -> Any:
    """A VMkernel NIC as HostNetworkInfo.vnic lists it."""
    v6 = (vim.host.IpConfig.IpV6AddressConfiguration(
        ipV6Address=[vim.host.IpConfig.IpV6Address(ipAddress=a, prefixLength=64) for a in ipv6])
        if ipv6 else None)
    return vim.host.VirtualNic(device="vmk0", spec=vim.host.VirtualNic.Specification(
        ip=vim.host.IpConfig(dhcp=False, ipAddress=ipv4, ipV6Config=v6)))


def with_hosts(*hosts: dict[str, Any]) -> InventorySnapshot:
    """One datacenter with a cluster of the given hosts (``content()`` properties each)."""
    root, dc = vim.Folder("group-d1"), vim.Datacenter("datacenter-2")
    host_folder, cluster = vim.Folder("folder-4"), vim.ClusterComputeResource("domain-c7")
    contents = [
        content(root, name="Datacenters", childType=["Folder", "Datacenter"]),
        content(dc, name="DC0", parent=root, hostFolder=host_folder),
        content(host_folder, name="host", parent=dc, childType=["Folder", "ComputeResource"]),
        content(cluster, name="C0", parent=host_folder),
    ]
    contents += [content(vim.HostSystem(f"host-{10 + n}"), parent=cluster, **props)
                 for n, props in enumerate(hosts)]
    return snapshot_from_contents(contents, root_moid="group-d1")


def test_a_host_is_known_by_its_name_its_dns_name_and_its_vmkernel_addresses() -> None:
    snapshot = with_hosts(
        {"name": "ESX1.lab.example",
         "config__network__vnic": [vnic("10.0.0.11", "FE80:0:0:0::1"), vnic("192.168.5.11")],
         "config__network__dnsConfig": vim.host.DnsConfig(hostName="esx1",
                                                           domainName="lab.example")},
        {"name": "10.0.0.12",
         "config__network__vnic": [vnic("10.0.0.12")],
         "config__network__dnsConfig": vim.host.DnsConfig(hostName="ESX2",
                                                          domainName="lab.example.")},
    )
    assert snapshot.host_addresses() == {
        "esx1.lab.example", "10.0.0.11", "fe80:0:0:0::1", "fe80::1", "192.168.5.11",
        "10.0.0.12", "esx2.lab.example",
    }
    # The snapshot keeps the strings, not the NIC and DNS objects.
    host = snapshot.find("host", "ESX1.lab.example")
    assert "config.network.vnic" not in host.props
    assert "config.network.dnsConfig" not in host.props


def test_hosts_without_config_or_addresses_are_known_by_their_names() -> None:
    snapshot = with_hosts(
        {"name": "esx-disconnected"},  # no config at all: the properties are absent
        {"name": "esx-dhcp",
         "config__network__vnic": [vnic(None), vnic(""), vnic("0.0.0.0", "::"),
                                   vim.host.VirtualNic(device="vmk9")],
         "config__network__dnsConfig": vim.host.DnsConfig()},
        {"name": "esx-short", "config__network__vnic": [],
         "config__network__dnsConfig": vim.host.DnsConfig(hostName="esx-short.")},
    )
    assert snapshot.host_addresses() == {"esx-disconnected", "esx-dhcp", "esx-short"}


def fqdn_and_ip_hosts() -> InventorySnapshot:
    return with_hosts(
        {"name": "esx1.lab.example", "config__network__vnic": [vnic("10.0.0.11", "2001:db8::11")]},
        {"name": "10.0.0.12",
         "config__network__dnsConfig": vim.host.DnsConfig(hostName="esx2",
                                                          domainName="lab.example")},
    )


@pytest.mark.parametrize("url", [
    "https://10.0.0.11/nfc/52a1/disk-0.vmdk",  # registered by FQDN, named by its vmk0 IP
    "https://[2001:db8::11]:443/nfc/52a1/disk-0.vmdk",  # ... or by its IPv6 address
    "https://ESX2.lab.example/nfc/52a1/disk-0.vmdk",  # registered by IP, named by DNS name
    "https://esx1.lab.example/nfc/52a1/disk-0.vmdk",
    "https://10.0.0.12/nfc/52a1/disk-0.vmdk",
])
def test_a_device_url_naming_a_host_by_any_of_its_addresses_is_accepted(url: str) -> None:
    check_device_host(url, "vc.lab.example", fqdn_and_ip_hosts().host_addresses())


@pytest.mark.parametrize("url", [
    "https://10.0.0.99/nfc/52a1/disk-0.vmdk",
    "https://[2001:db8::99]/nfc/52a1/disk-0.vmdk",
    "https://esx9.lab.example/nfc/52a1/disk-0.vmdk",
    "https://0.0.0.0/nfc/52a1/disk-0.vmdk",
])
def test_a_device_url_naming_a_foreign_address_is_still_refused(url: str) -> None:
    with pytest.raises(UntrustedTarget, match="refusing to upload"):
        check_device_host(url, "vc.lab.example", fqdn_and_ip_hosts().host_addresses())


class HostLookup:
    """The job's host-addresses hook: counts how often the addresses are read."""

    def __init__(self, addresses: frozenset[str]) -> None:
        self.addresses, self.reads = addresses, 0

    async def __call__(self) -> frozenset[str]:
        self.reads += 1
        return self.addresses


def targets(*hosts: str) -> list[UploadTarget]:
    return [UploadTarget(file_name=f"disk-{i}.vmdk", url=f"https://{host}/nfc/52a1/disk-{i}",
                         size=1, is_disk=True) for i, host in enumerate(hosts)]


@pytest.mark.anyio
async def test_hosts_named_by_their_inventory_names_need_no_address_lookup() -> None:
    lookup = HostLookup(fqdn_and_ip_hosts().host_addresses())
    session: Any = SimpleNamespace(endpoint=SimpleNamespace(host="vc.lab.example"))
    options = ImportOptions(esxi_hosts=frozenset({"esx1.lab.example", "10.0.0.12"}))
    await check_device_hosts(session, targets("esx1.lab.example", "vc.lab.example"),
                             options, JobHooks(host_addresses=lookup))
    assert lookup.reads == 0


@pytest.mark.anyio
async def test_a_host_named_by_its_address_is_looked_up_once_for_all_targets() -> None:
    lookup = HostLookup(fqdn_and_ip_hosts().host_addresses())
    session: Any = SimpleNamespace(endpoint=SimpleNamespace(host="vc.lab.example"))
    options = ImportOptions(esxi_hosts=frozenset({"esx1.lab.example", "10.0.0.12"}))
    await check_device_hosts(session, targets("10.0.0.11", "[2001:db8::11]", "esx2.lab.example"),
                             options, JobHooks(host_addresses=lookup))
    assert lookup.reads == 1
    with pytest.raises(UntrustedTarget, match="refusing to upload to '10.0.0.99'"):
        await check_device_hosts(session, targets("10.0.0.99"), options,
                                 JobHooks(host_addresses=lookup))
    assert lookup.reads == 2  # looked up, and still foreign
