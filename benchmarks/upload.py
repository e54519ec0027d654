"""Upload throughput: our upload path, with and without manifest verification,
against a plain aiohttp streaming POST of the same bytes to a fresh lease URL.

All three run in one process against one vcsim, interleaved round by round so
machine noise hits them alike; the best of ``--rounds`` is reported. Targets:
verification must not halve throughput (issue 3); with verification on,
>= 0.85x the plain POST (issue 6).

Run: ``.venv/bin/python -m benchmarks.upload [--size-mb 1024] [--parallel 1]
[--link-mib-s 400]``. Uncapped, the client, vcsim and SHA-256 share two cores
and the machine is the bottleneck (``machine_cpu_busy`` near 1.0): hashing then
costs throughput. ``--link-mib-s`` caps each upload in vcsim the way a network
link or an ESXi host would, which is where real imports are bound.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from asyncovf.engine.import_specs import create_import_spec
from asyncovf.engine.options import ImportOptions
from asyncovf.engine.phases import JobState
from asyncovf.engine.uploads import upload_targets
from asyncovf.importer import Importer
from asyncovf.ovf.package import DEFAULT_CHUNK_SIZE, Package, check_files
from asyncovf.ovf.source import open_package
from asyncovf.vsphere.connection import ConnectionSettings
from asyncovf.vsphere.inventory import PlacementRequest
from asyncovf.vsphere.lease import LeaseGuard
from tests.factory import DiskSpec, build_package
from tests.vcsim.harness import running_vcsim


async def ours(importer: Importer, package: Package, name: str, verify: bool) -> float:
    """Bytes/s of the upload phase of a full import through our job code."""
    placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
    state = JobState(name=name)
    await importer.import_package(package, name, placement,
                                  ImportOptions(verify_manifest=verify), state=state)
    return state.bytes_done / state.timings["upload"]


async def plain_post(importer: Importer, package: Package, name: str) -> float:
    """Bytes/s of a bare aiohttp POST of the same file to a fresh lease's device URL."""
    session = importer.session
    placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
    result = await create_import_spec(session, package, placement, name, ImportOptions())
    lease = await session.invoke(placement.resource_pool.ref, "ImportVApp",
                                 spec=result.importSpec, folder=placement.folder.ref)
    async with LeaseGuard(session, lease, vm_name=name) as guard:
        (target,) = upload_targets(result, guard.info, session.endpoint.host, package)
        member = package.member(target.file_name)
        headers = {"Content-Type": "application/x-vnd.vmware-streamVmdk",
                   "Content-Length": str(member.size)}
        assert member.path is not None
        started = time.perf_counter()
        async with session.client.uploads.post(target.url, headers=headers,
                                            data=read_plainly(member.path, member.offset,
                                                              member.size)) as response:
            await response.read()
            assert response.status == 200, response.status
        return member.size / (time.perf_counter() - started)


async def read_plainly(path: Path, offset: int, size: int) -> AsyncIterator[bytes]:
    """The obvious streaming read: one chunk at a time, each in a worker thread."""
    handle = await anyio.to_thread.run_sync(open, path, "rb")
    try:
        await anyio.to_thread.run_sync(handle.seek, offset)
        remaining = size
        while remaining:
            chunk = await anyio.to_thread.run_sync(handle.read, min(DEFAULT_CHUNK_SIZE,
                                                                    remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        await anyio.to_thread.run_sync(handle.close)


def cpu_jiffies() -> tuple[int, int]:
    """Machine-wide (busy, total) CPU time: is the machine the bottleneck, not our code?"""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


BUSY: dict[str, list[float]] = {"plain": [], "verify_off": [], "verify_on": []}


async def measure(connection: ConnectionSettings, package: Package, rounds: int,
                  parallel: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"plain": [], "verify_off": [], "verify_on": []}
    async with Importer(connection) as importer:
        for round_number in range(rounds):
            for mode in rates:
                results: list[float] = []

                async def one(index: int, mode: str = mode, results: list[float] = results,
                              round_number: int = round_number) -> None:
                    name = f"up-{mode}-{round_number}-{index}"
                    if mode == "plain":
                        results.append(await plain_post(importer, package, name))
                    else:
                        results.append(await ours(importer, package, name,
                                                  verify=mode == "verify_on"))

                started = time.perf_counter()
                busy_before, total_before = cpu_jiffies()
                async with anyio.create_task_group() as group:
                    for index in range(parallel):
                        group.start_soon(one, index)
                busy_after, total_after = cpu_jiffies()
                BUSY[mode].append((busy_after - busy_before) / max(1, total_after - total_before))
                if parallel == 1:
                    rates[mode].append(results[0])
                else:  # aggregate: all bytes over the wall time of the parallel round
                    total = sum(package.member(n).size for n in package.members
                                if n.endswith(".vmdk")) * parallel
                    rates[mode].append(total / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256, help="disk data per upload")
    parser.add_argument("--parallel", type=int, default=1, help="concurrent uploads per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--link-mib-s", type=float,
                        help="cap each upload at this rate in vcsim (a network link), so the "
                             "link, not this 2-core box, sets the pace")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        print(f"building a {args.size_mb} MiB disk…", flush=True)
        built = build_package(Path(tmp), "upload",
                              disks=(DiskSpec(args.size_mb * 2, args.size_mb * 2**20),))
        with running_vcsim() as vcsim:
            if args.link_mib_s:
                vcsim.set_faults(nfc={"throttle_bps": int(args.link_mib_s * 2**20), "times": 0})
            connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                            password=vcsim.password,
                                            ca_file=str(vcsim.ca_file))

            async def run() -> dict[str, list[float]]:
                package = await open_package(built.path)
                check_files(package)
                return await measure(connection, package, args.rounds, args.parallel)

            rates = anyio.run(run)
    best = {mode: max(values) / 2**20 for mode, values in rates.items()}
    result: dict[str, Any] = {
        "size_mb": args.size_mb, "parallel": args.parallel, "rounds": args.rounds,
        "link_mib_s": args.link_mib_s,
        "mib_per_s": {mode: round(v, 1) for mode, v in best.items()},
        "verify_on_vs_plain": round(best["verify_on"] / best["plain"], 3),
        "verify_off_vs_plain": round(best["verify_off"] / best["plain"], 3),
        "verify_on_vs_off": round(best["verify_on"] / best["verify_off"], 3),
        # Share of all cores busy during the round (whole machine, vcsim included):
        # near 1.0 means the machine, not the upload path, sets the pace.
        "machine_cpu_busy": {mode: round(max(v), 2) for mode, v in BUSY.items()},
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| path ({args.parallel} x {args.size_mb} MiB) | MiB/s | vs plain POST |\n"
          "|---|---|---|")
    for mode, label in (("plain", "plain aiohttp POST"), ("verify_off", "asyncovf, no verify"),
                        ("verify_on", "asyncovf, SHA256 verify")):
        print(f"| {label} | {best[mode]:.1f} | {best[mode] / best['plain']:.2f}x |")


if __name__ == "__main__":
    main()

