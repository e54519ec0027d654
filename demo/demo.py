"""`make demo`: start the local vcsim, build a sample OVA, import it N times, summarise.

Everything here is real: a real vCenter simulator (govmomi's vcsim) over TLS,
a real OVA (OVF descriptor, streamOptimized VMDK, SHA256 manifest), real SOAP
and NFC uploads. Each worker owns its own vCenter session, as in production.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncovf.engine.job import JobState  # noqa: E402
from asyncovf.importer import ConnectionSettings, Importer  # noqa: E402
from asyncovf.ovf.package import Package, check_files, open_package  # noqa: E402
from asyncovf.vsphere.inventory import PlacementRequest  # noqa: E402
from tests.factory import DiskSpec, build_package  # noqa: E402
from tests.vcsim.harness import build_launcher, running_vcsim  # noqa: E402


async def import_all(connection: ConnectionSettings, package: Package, names: list[str],
                     workers: int) -> list[JobState]:
    states = {name: JobState(name=name) for name in names}
    send, receive = anyio.create_memory_object_stream[str](max_buffer_size=len(names))
    for name in names:
        send.send_nowait(name)
    send.close()

    async def worker() -> None:
        async with Importer(connection) as importer:
            placement = await importer.resolve(PlacementRequest(cluster="DC0_C0"))
            async for name in receive:
                try:
                    await importer.import_package(package, name, placement, state=states[name])
                except Exception as exc:  # reported in the table, the others go on
                    states[name].error = str(exc)

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)
    return [states[name] for name in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    out = ROOT / "demo-out"
    print("building the vcsim launcher (cached after the first run)…", flush=True)
    build_launcher()
    built = build_package(out, "photon-mini", disks=(DiskSpec(64, 1024 * 1024),), cpus=2,
                          memory_mb=512)
    print(f"sample appliance: {built.path.relative_to(ROOT)} "
          f"({built.path.stat().st_size // 1024} KiB, descriptor + streamOptimized disk + "
          "manifest)")

    with running_vcsim() as vcsim:
        print(f"vcsim listening at {vcsim.url}")
        connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                        password=vcsim.password, ca_file=str(vcsim.ca_file))
        names = [f"demo-{i:03d}" for i in range(1, args.count + 1)]

        async def run() -> tuple[list[JobState], float]:
            package = await open_package(built.path)
            check_files(package)
            started = time.monotonic()
            states = await import_all(connection, package, names, args.workers)
            return states, time.monotonic() - started

        states, elapsed = anyio.run(run)
        counters = vcsim.counters()

    print()
    print(f"{'VM':<10} {'status':<9} {'moid':<8} {'bytes':>9} {'seconds':>8}")
    for state in states:
        seconds = sum(state.timings.values())
        print(f"{state.name:<10} {state.phase.value:<9} {state.vm or '-':<8} "
              f"{state.bytes_done:>9} {seconds:>8.3f}" + (f"  {state.error}" if state.error
                                                          else ""))
    imported = sum(1 for s in states if s.phase.value == "imported")
    print()
    print(f"{imported}/{len(states)} imported in {elapsed:.2f} s "
          f"({imported / elapsed:.1f} imports/s, {args.workers} workers)")
    logins, logouts = counters.ok("Login"), counters.ok("Logout")
    imports = counters.ok("ImportVApp")
    ends = counters.ok("HttpNfcLeaseComplete") + counters.ok("HttpNfcLeaseAbort")
    print(f"vCenter saw: Login {logins} / Logout {logouts}; ImportVApp {imports} / "
          f"Complete+Abort {ends}")
    ok = imported == len(states) and logins == logouts and imports == ends
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
