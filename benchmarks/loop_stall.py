"""Longest event-loop stall while the inventory loads, by property-collector page size.

pyVmomi deserializes each RetrievePropertiesEx / ContinueRetrievePropertiesEx
answer in one synchronous call on the event loop, so the largest page is the
longest time every other worker waits (lease keep-alives, uploads, timeouts).
This loads a large synthesized inventory through the real client
(``load_snapshot`` → ``VCenterSession.retrieve_contents`` → ``SoapClient``)
with the old page size (1,000: the baseline) and the new default, in the same
run, while a ticker task records the largest gap between two of its wake-ups.

vcsim cannot serve this: govmomi's simulator (0.24) ignores ``maxObjects`` and
answers every RetrievePropertiesEx whole. So a small vCenter stand-in in a
child process answers RetrieveServiceContent, Login, Logout and the paged
property-collector calls with pages serialized by pyVmomi ahead of time; its
own work happens outside the measured process.

Run: ``.venv/bin/python -m benchmarks.loop_stall [--hosts 2000] [--sizes 1000 100]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import re
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any

import anyio
import anyio.lowlevel
from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl

from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import load_snapshot, snapshot_from_contents
from asyncovf.vsphere.session import RETRIEVE_PAGE_SIZE, VCenterSession

PC = vmodl.query.PropertyCollector
VERSION = "vim.version.v8_0_3_0"
BASELINE_PAGE_SIZE = 1000

# -- a large inventory ----------------------------------------------------------------


def _typed(type_name: str, value: Any) -> Any:
    return VmomiSupport.GetVmodlType(type_name)(value)


def _content(obj: Any, **props: Any) -> Any:
    return PC.ObjectContent(obj=obj, propSet=[
        vmodl.DynamicProperty(name=name.replace("__", "."), val=value)
        for name, value in props.items()])


def _vnic(device: str, ipv4: str, n: int) -> Any:
    """A VMkernel NIC as vCenter returns it: the whole spec, not just the address."""
    return vim.host.VirtualNic(
        device=device, key=f"key-vim.host.VirtualNic-{device}", port=f"key-port-{device}",
        portgroup="", spec=vim.host.VirtualNic.Specification(
            mac=f"00:50:56:{n >> 8 & 0xff:02x}:{n & 0xff:02x}:{len(device):02x}",
            mtu=9000, tsoEnabled=True, netStackInstanceKey="defaultTcpipStack",
            ip=vim.host.IpConfig(
                dhcp=False, ipAddress=ipv4, subnetMask="255.255.0.0",
                ipV6Config=vim.host.IpConfig.IpV6AddressConfiguration(
                    autoConfigurationEnabled=False, dhcpV6Enabled=False,
                    ipV6Address=[vim.host.IpConfig.IpV6Address(
                        ipAddress=f"fe80::250:56ff:fe{n >> 8 & 0xff:02x}:{n & 0xff:02x}",
                        prefixLength=64, origin="other", dadState="preferred")])),
            distributedVirtualPort=vim.dvs.PortConnection(
                switchUuid="50 2a 3b 4c 5d 6e 7f 80-91 a2 b3 c4 d5 e6 f7 08",
                portKey=str(n), connectionCookie=n)))


def synthesize(hosts: int, host_network: bool = False) -> list[Any]:
    """A vCenter of ``hosts`` hosts: 4 datacenters, 25 hosts a cluster, and in
    proportion resource pools, datastores, port groups and VM folders."""
    root = vim.Folder("group-d1")
    contents = [_content(root, name="Datacenters",
                         childType=_typed("string[]", ["Folder", "Datacenter"]))]
    child_types = {"vm": ["Folder", "VirtualMachine", "VirtualApp"],
                   "host": ["Folder", "ComputeResource"],
                   "datastore": ["Folder", "Datastore", "StoragePod"],
                   "network": ["Folder", "Network", "DistributedVirtualSwitch"]}
    per_dc = max(hosts // 4, 1)
    for d in range(4):
        dc = vim.Datacenter(f"datacenter-{d}")
        folders = {kind: vim.Folder(f"group-{kind[0]}{d}") for kind in child_types}
        contents.append(_content(dc, name=f"DC{d}", parent=root, vmFolder=folders["vm"],
                                 hostFolder=folders["host"]))
        contents.extend(_content(folder, name=kind, parent=dc,
                                 childType=_typed("string[]", child_types[kind]))
                        for kind, folder in folders.items())
        contents.extend(_content(vim.Folder(f"group-v{d}-{f}"), name=f"team-{f}",
                                 parent=folders["vm"],
                                 childType=_typed("string[]", child_types["vm"]))
                        for f in range(per_dc // 10))
        for c in range(max(per_dc // 25, 1)):
            contents.extend(_cluster(f"{d}-{c}", folders["host"], host_network))
        contents.extend(_content(vim.Datastore(f"datastore-{d}-{s}"), name=f"ds-{d}-{s}",
                                 parent=folders["datastore"],
                                 summary__freeSpace=_typed("long", 2**40 + s),
                                 summary__accessible=True)
                        for s in range(per_dc // 2))
        contents.extend(_content(vim.dvs.DistributedVirtualPortgroup(f"dvportgroup-{d}-{g}"),
                                 name=f"vlan-{g}", parent=folders["network"])
                        for g in range(per_dc * 2))
    return contents


def _cluster(key: str, parent: Any, host_network: bool) -> list[Any]:
    """A cluster of 25 hosts, its root pool and 10 child pools.

    ``host_network``: the hosts carry their VMkernel NICs and DNS config, as in
    an inventory load that reads them (before they were read only on demand).
    """
    cluster = vim.ClusterComputeResource(f"domain-c{key}")
    root_pool = vim.ResourcePool(f"resgroup-{key}")
    members = [vim.HostSystem(f"host-{key}-{h}") for h in range(25)]
    contents = [
        _content(cluster, name=f"C{key}", parent=parent, resourcePool=root_pool,
                 host=_typed("vim.HostSystem[]", members)),
        _content(root_pool, name="Resources", parent=cluster, owner=cluster),
    ]
    contents.extend(_content(vim.ResourcePool(f"resgroup-{key}-{p}"), name=f"pool-{p}",
                             parent=root_pool, owner=cluster) for p in range(10))
    d, c = (int(part) for part in key.split("-"))
    for h, host in enumerate(members):
        network: dict[str, Any] = {}
        if host_network:
            network = {
                "config__network__vnic": _typed("vim.host.VirtualNic[]", [
                    _vnic(f"vmk{v}", f"10.{d + 10 * v}.{c}.{h}", 256 * c + h)
                    for v in range(3)]),
                "config__network__dnsConfig": vim.host.DnsConfig(
                    dhcp=False, hostName=f"esx-{key}-{h}", domainName="lab.example",
                    address=["10.0.0.2", "10.0.0.3"], searchDomain=["lab.example"])}
        contents.append(_content(host, name=f"esx-{key}-{h}.lab.example", parent=cluster,
                                 **network))
    return contents


# -- a vCenter stand-in that pages ----------------------------------------------------

_ENVELOPE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope '
             b'xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
             b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
             b'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
             b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
             b'<soapenv:Body><%s xmlns="urn:vim25">%s</%s></soapenv:Body></soapenv:Envelope>')


def _answer(method: str, value: Any = None, type_: Any = None) -> bytes:
    name = f"{method}Response".encode()
    body = b""
    if value is not None:
        info = VmomiSupport.Object(name="returnval", type=type_, version=VERSION, flags=0)
        body = SoapAdapter.Serialize(value, info, version=VERSION)
    return _ENVELOPE % (name, body, name)


def serve(pipe: Connection, hosts: int, page_sizes: Sequence[int],
          host_network: bool = False) -> None:
    """The child process: build every page once, then answer until terminated."""
    contents = synthesize(hosts, host_network)
    pages: dict[str, bytes] = {}
    first: dict[int, bytes] = {}
    for size in page_sizes:
        chunks = [contents[i:i + size] for i in range(0, len(contents), size)]
        for index, chunk in enumerate(chunks):
            token = f"{size}-{index + 1}" if index + 1 < len(chunks) else None
            result = PC.RetrieveResult(objects=chunk, token=token)
            if index == 0:
                first[size] = _answer("RetrievePropertiesEx", result, PC.RetrieveResult)
            else:
                pages[f"{size}-{index}"] = _answer("ContinueRetrievePropertiesEx", result,
                                                   PC.RetrieveResult)
    content = vim.ServiceInstanceContent(
        rootFolder=vim.Folder("group-d1"), propertyCollector=PC("propertyCollector"),
        sessionManager=vim.SessionManager("SessionManager"),
        about=vim.AboutInfo(name="stand-in", fullName="stand-in", vendor="asyncovf",
                            version="8.0.3", build="0", apiType="VirtualCenter",
                            apiVersion="8.0.3.0"))
    fixed = {
        "RetrieveServiceContent": _answer("RetrieveServiceContent", content,
                                          vim.ServiceInstanceContent),
        "Login": _answer("Login", vim.UserSession(
            key="s", userName="user", fullName="user", locale="en", messageLocale="en",
            loginTime=datetime.now(UTC), lastActiveTime=datetime.now(UTC)), vim.UserSession),
        "Logout": _answer("Logout"),
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle's algorithm on, the
        # body would wait for the client's delayed ACK, 40 ms a round trip.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802
            request = self.rfile.read(int(self.headers["Content-Length"]))
            method = re.search(rb'<soapenv:Body><(\w+) xmlns="urn:vim25"', request)
            name = method.group(1).decode() if method else ""
            if name == "RetrievePropertiesEx":
                size = re.search(rb"<maxObjects[^>]*>(\d+)</maxObjects>", request)
                answer = first[int(size.group(1))] if size else b""
            elif name == "ContinueRetrievePropertiesEx":
                token = re.search(rb"<token[^>]*>([^<]+)</token>", request)
                answer = pages[token.group(1).decode()] if token else b""
            else:
                answer = fixed.get(name, b"")
            self.send_response(200 if answer else 500)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(answer)))
            self.send_header("Set-Cookie", 'vmware_soap_session="stand-in"; Path=/')
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    pipe.send((server.server_address[1], len(contents)))
    server.serve_forever()


# -- the measurement ------------------------------------------------------------------


async def longest_stall(url: str, page_size: int) -> dict[str, float]:
    """Load the inventory once; the longest gaps between the ticker's wake-ups.

    The cyclic garbage collector's time is also told apart: a full
    collection walks every live object, so its pauses grow with the heap
    whatever the page size, and would hide what the page size changes.
    """
    collections: list[tuple[float, float]] = []
    started_gc = [0.0]

    def note_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started_gc[0] = time.perf_counter()
        else:
            collections.append((started_gc[0], time.perf_counter()))

    async with VCenterSession(ConnectionSettings(url, "user", "secret")) as session:
        done = anyio.Event()
        gaps: list[tuple[float, float]] = []

        async def tick() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await anyio.lowlevel.checkpoint()  # back at once unless the loop is held
                now = time.perf_counter()
                if now - last > 0.001:
                    gaps.append((last, now))
                last = now

        gc.callbacks.append(note_collection)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(tick)
                started = time.perf_counter()
                await load_snapshot(session, page_size=page_size)
                elapsed = time.perf_counter() - started
                done.set()
        finally:
            gc.callbacks.remove(note_collection)
        calls = session.client.calls

    def without_collections(gap: tuple[float, float]) -> float:
        """The gap less the collector's time inside it: the parsing and our own work."""
        start, end = gap
        return (end - start) - sum(max(0.0, min(end, c_end) - max(start, c_start))
                                   for c_start, c_end in collections)

    return {
        "stall_ms": max(end - start for start, end in gaps) * 1000,
        "stall_without_gc_ms": max(map(without_collections, gaps)) * 1000,
        "gc_ms": max((end - start for start, end in collections), default=0) * 1000,
        "load_s": elapsed,
        "round_trips": calls.get("RetrievePropertiesEx", 0)
        + calls.get("ContinueRetrievePropertiesEx", 0),
    }


def snapshot_build_ms(hosts: int, host_network: bool = False) -> float:
    """Building the snapshot from all the contents: one synchronous step at any page size."""
    contents = synthesize(hosts, host_network)
    started = time.perf_counter()
    snapshot_from_contents(contents, root_moid="group-d1")
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[BASELINE_PAGE_SIZE, RETRIEVE_PAGE_SIZE],
                        help="page sizes; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--host-network", action="store_true",
                        help="hosts carry VMkernel NICs and DNS config (what the inventory "
                             "load read before reading them only on demand)")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=serve, args=(theirs, args.hosts, args.sizes,
                                                 args.host_network), daemon=True)
    server.start()
    try:
        while not ours.poll(0.5):
            if not server.is_alive():
                raise SystemExit(f"the vCenter stand-in exited with {server.exitcode}")
        port, objects = ours.recv()
        url = f"http://127.0.0.1:{port}/sdk"
        runs: dict[int, list[dict[str, float]]] = {size: [] for size in args.sizes}
        anyio.run(longest_stall, url, args.sizes[0])  # warm-up: imports, first-use caches
        for _ in range(args.rounds):  # interleaved, so drift hits every size alike
            for size in args.sizes:
                runs[size].append(anyio.run(longest_stall, url, size))
    finally:
        server.terminate()
        server.join()

    def median(size: int, key: str) -> float:
        return statistics.median(run[key] for run in runs[size])

    base = args.sizes[0]
    result: dict[str, Any] = {"objects": objects, "hosts": args.hosts, "rounds": args.rounds,
                              "baseline_page_size": base, "sizes": {}}
    for size in args.sizes:
        result["sizes"][size] = {
            "round_trips": int(runs[size][0]["round_trips"]),
            "longest_stall_without_gc_ms": round(median(size, "stall_without_gc_ms"), 1),
            "without_gc_vs_baseline": round(median(size, "stall_without_gc_ms")
                                            / median(base, "stall_without_gc_ms"), 3),
            "longest_stall_ms": round(median(size, "stall_ms"), 1),
            "stall_vs_baseline": round(median(size, "stall_ms") / median(base, "stall_ms"), 3),
            "longest_gc_pause_ms": round(median(size, "gc_ms"), 1),
            "load_s": round(median(size, "load_s"), 3),
            "load_vs_baseline": round(median(size, "load_s") / median(base, "load_s"), 3),
        }
    result["snapshot_build_ms"] = round(snapshot_build_ms(args.hosts, args.host_network), 1)
    print(json.dumps(result, indent=1))
    rows = "\n".join(
        f"| {size} | {r['round_trips']} | {r['longest_stall_without_gc_ms']} "
        f"({r['without_gc_vs_baseline']:.2f}x) | {r['longest_gc_pause_ms']} | "
        f"{r['longest_stall_ms']} ({r['stall_vs_baseline']:.2f}x) | "
        f"{r['load_s']} ({r['load_vs_baseline']:.2f}x) |"
        for size, r in result["sizes"].items())
    print(f"\n{objects} objects ({args.hosts} hosts), medians of {args.rounds} rounds; "
          f"building the snapshot from them at once: {result['snapshot_build_ms']} ms\n"
          f"| page size | round trips | longest stall without GC, ms (vs {base}) "
          f"| longest GC pause, ms | longest stall, ms (vs {base}) | load, s (vs {base}) |\n"
          f"|---|---|---|---|---|---|\n{rows}")


if __name__ == "__main__":
    main()
