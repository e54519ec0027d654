"""Pull mode against pushing: one OVA with a big disk, served over https, imported both ways.

Each import is ``asyncovf import URL [--pull]`` in a process of its own, the
package on the project's test web server (https, a throwaway CA given with
``--source-ca-file``), against one simulator announcing API 6.7. The process
counts the bytes its sockets sent and received (``socket.socket``'s send and
receive methods, wrapped before anything is imported: TLS records, HTTP and
SOAP included) and its CPU seconds, and prints them as it exits. The simulator
counts the disk bytes it received over NFC (push) or fetched itself (pull).

Target (the issue's): in pull mode the client's traffic is under 1 % of the
disk's bytes. Reported per mode: wall time, the client's bytes sent and
received, their share of the disk bytes, and the client's CPU seconds per GiB.

Run: ``.venv/bin/python -m benchmarks.pull_vs_push [--disk-mib 1024] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import trustme

from tests.factory import DiskSpec, build_package
from tests.httpserver import serve_directory
from tests.vcsim.harness import Vcsim, running_vcsim

ROOT = Path(__file__).resolve().parents[1]

#: Run in the measured process: count socket bytes, then run the CLI; print the
#: counts and the CPU time as the last line of stderr, whatever the outcome.
_WRAPPER = r"""
import atexit, json, resource, socket, sys
counts = {"sent": 0, "received": 0}
def counted(name, key, size):
    original = getattr(socket.socket, name)
    def method(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        counts[key] += size(result, args)
        return result
    setattr(socket.socket, name, method)
counted("send", "sent", lambda n, a: n)
counted("sendmsg", "sent", lambda n, a: n)
counted("sendall", "sent", lambda n, a: len(a[0]))
counted("recv", "received", lambda data, a: len(data))
counted("recv_into", "received", lambda n, a: n)
def report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    io = dict(line.split(": ") for line in open("/proc/self/io").read().split("\n") if line)
    sys.stderr.write("\n" + json.dumps({**counts, "cpu_s": usage.ru_utime + usage.ru_stime,
                                        "rchar": int(io["rchar"]), "wchar": int(io["wchar"])})
                     + "\n")
atexit.register(report)
from asyncovf.cli import console
sys.argv = ["asyncovf", *sys.argv[1:]]
console()
"""


async def import_once(vcsim: Vcsim, url: str, ca_pem: Path, name: str, pull: bool
                      ) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VSPHERE_")}
    env.update(VSPHERE_SERVER=vcsim.url, VSPHERE_USER=vcsim.username,
               VSPHERE_PASSWORD=vcsim.password)
    started = time.perf_counter()
    result = await anyio.run_process(
        [sys.executable, "-c", _WRAPPER, "import", url, "--name", name, "--ca-file",
         str(vcsim.ca_file), "--source-ca-file", str(ca_pem), "--cluster", "DC0_C0",
         "--datastore", "LocalDS_0", *(["--pull"] if pull else [])],
        env=env, cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    measured: dict[str, Any] = json.loads(stderr.strip().splitlines()[-1])
    return {**measured, "seconds": round(seconds, 3)}


def disk_bytes(ova: Path) -> int:
    with tarfile.open(ova) as archive:
        return sum(member.size for member in archive.getmembers()
                   if member.name.endswith(".vmdk"))


async def measure(vcsim: Vcsim, ova: Path, rounds: int) -> dict[str, list[dict[str, Any]]]:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_pem = ova.parent / "source-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    runs: dict[str, list[dict[str, Any]]] = {"push": [], "pull": []}
    async with serve_directory(ova.parent, ssl_context=context) as served:
        for number in range(rounds):
            for mode in runs:
                vcsim.reset_counters()
                vcsim.behave(api_version="6.7")
                run = await import_once(vcsim, served.url(ova.name), ca_pem,
                                        f"pv{number}{mode}", mode == "pull")
                counters = vcsim.counters()
                run.update(nfc_bytes=counters.nfc_bytes, pull_bytes=counters.pull_bytes,
                           pulls=counters.pulls_succeeded)
                runs[mode].append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--disk-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        package = build_package(Path(tmp), "bench", disks=(
            DiskSpec(args.disk_mib + 16, args.disk_mib * 1024 * 1024),))
        disk = disk_bytes(package.path)
        with running_vcsim() as vcsim:
            runs = anyio.run(measure, vcsim, package.path, args.rounds)
    assert all(run["pulls"] == 1 for run in runs["pull"]), runs["pull"]
    assert all(run["pulls"] == 0 for run in runs["push"]), runs["push"]

    def median(mode: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[mode])

    gib = disk / 2**30
    table = {mode: {"seconds": median(mode, "seconds"), "sent": median(mode, "sent"),
                    "received": median(mode, "received"),
                    "cpu_s_per_gib": median(mode, "cpu_s") / gib} for mode in runs}
    for row in table.values():
        row["traffic_share"] = (row["sent"] + row["received"]) / disk
    result = {"disk_bytes": disk, "rounds": args.rounds, "median": table, "runs": runs}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| mode | seconds | client sent MiB | client received MiB | traffic / disk bytes | "
          "our CPU s per GiB |")
    print("|---|---|---|---|---|---|")
    for mode, row in table.items():
        print(f"| {mode} | {row['seconds']:.2f} | {row['sent'] / 2**20:.2f} | "
              f"{row['received'] / 2**20:.2f} | {row['traffic_share'] * 100:.3f} % | "
              f"{row['cpu_s_per_gib']:.2f} |")


if __name__ == "__main__":
    main()
