"""`make demo`: start the local vcsim, build a sample OVA, run a 100-VM batch, summarise;
then the same fleet again with ``--strategy clone``: one upload, every other VM a clone.

Everything here is real: a real vCenter simulator (govmomi's vcsim) over TLS
with certificate verification on, a real OVA (OVF descriptor, streamOptimized
VMDK, SHA256 manifest), real SOAP calls and NFC uploads, and the real
``asyncovf run`` command with its live progress display and JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factory import DiskSpec, build_package  # noqa: E402
from tests.vcsim.harness import build_launcher, running_vcsim  # noqa: E402

BATCH = """\
# A demo batch: {count} web servers and one database, from the same appliance.
defaults:
  source: ./photon-mini.ova
  cluster: DC0_C0
  datastore: LocalDS_0
  annotation: "imported by asyncovf make demo"
vms:
  - name: "web-{{index:03d}}"
    count: {web}
  - name: db-01
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="VMs in the batch")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    out = ROOT / "demo-out"
    print("building the vcsim launcher (cached after the first run)…", flush=True)
    build_launcher()
    built = build_package(out, "photon-mini", disks=(DiskSpec(64, 1024 * 1024),), cpus=2,
                          memory_mb=512)
    batch = out / "batch.yaml"
    batch.write_text(BATCH.format(count=args.count, web=args.count - 1))
    report = out / "report.json"
    print(f"appliance: {built.path.relative_to(ROOT)} ({built.path.stat().st_size // 1024} KiB: "
          "descriptor, streamOptimized disk, manifest)")
    print(f"batch:     {batch.relative_to(ROOT)} ({args.count} VMs)")

    with running_vcsim() as vcsim:
        print(f"vcsim:     {vcsim.url} (TLS verified with {vcsim.ca_file})\n", flush=True)
        env = {**os.environ, "VSPHERE_SERVER": vcsim.url, "VSPHERE_USER": vcsim.username,
               "VSPHERE_PASSWORD": vcsim.password}
        command = [sys.executable, "-m", "asyncovf", "run", str(batch),
                   "--concurrency", str(args.concurrency), "--report", str(report),
                   "--ca-file", str(vcsim.ca_file)]
        print("$ asyncovf run", " ".join(command[4:]), flush=True)
        code = subprocess.run(command, env=env, cwd=ROOT).returncode
        counters = vcsim.counters()

        # The same fleet as clones of one seed: the disk goes over the network once.
        vcsim.reset_counters()
        clones = out / "clones.yaml"
        clones.write_text(BATCH.format(count=args.count, web=args.count - 1)
                          .replace('"web-', '"app-').replace("db-01", "appdb-01"))
        clone_report = out / "clones-report.json"
        clone_command = [sys.executable, "-m", "asyncovf", "run", str(clones),
                         "--strategy", "clone", "--concurrency", str(args.concurrency),
                         "--report", str(clone_report), "--ca-file", str(vcsim.ca_file),
                         "--progress", "plain"]
        print("\n$ asyncovf run", " ".join(clone_command[4:]), flush=True)
        cloned = subprocess.run(clone_command, env=env, cwd=ROOT, capture_output=True,
                                text=True)
        print("\n".join(cloned.stdout.splitlines()[-2:]))
        clone_counters = vcsim.counters()

    data = json.loads(report.read_text())
    totals = data["totals"]
    logins, logouts = counters.ok("Login"), counters.ok("Logout")
    imports = counters.ok("ImportVApp")
    ended = counters.ok("HttpNfcLeaseComplete") + counters.ok("HttpNfcLeaseAbort")
    print(f"\nreport: {report.relative_to(ROOT)} ({len(data['jobs'])} jobs, "
          f"{totals['soap_calls_per_import']} SOAP calls per import)")
    print(f"vCenter saw: Login {logins} = Logout {logouts}; "
          f"ImportVApp {imports} = Complete+Abort {ended}")
    clone_totals = json.loads(clone_report.read_text())["totals"]
    print(f"clones: {clone_totals['imported']} VMs from {clone_counters.ok('ImportVApp')} "
          f"upload of {clone_counters.nfc_bytes / 2**20:.1f} MiB "
          f"(the import sent {counters.nfc_bytes / 2**20:.1f} MiB); "
          f"Login {clone_counters.ok('Login')} = Logout {clone_counters.ok('Logout')}")
    ok = (code == 0 and totals["imported"] == args.count and logins == logouts
          and imports == ended and cloned.returncode == 0
          and clone_totals["imported"] == args.count
          and clone_counters.ok("ImportVApp") == 1
          and clone_counters.ok("Login") == clone_counters.ok("Logout"))
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
