"""`make report-demo`: a load test against the local vcsim, then its report as text and HTML.

A ramp of imports (1 → 2 → 4 → 8 → 16 workers), each upload slowed by the
simulator to about a second, under a --bandwidth cap the ramp runs into, with
a few uploads answered 500 by the simulator's NFC fault rules: the report has
a knee (the cap, reached), an error table and every chart. The
HTML check in a headless browser is scripts/report-demo.sh's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factory import DiskSpec, build_package  # noqa: E402
from tests.vcsim.harness import build_launcher, running_vcsim  # noqa: E402

BATCH = """\
defaults:
  source: ./photon-mini.ova
  cluster: DC0_C0
  datastore: LocalDS_0
vms:
  - name: "load-{{index:04d}}"
    count: {count}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400, help="imports in the ramp")
    parser.add_argument("--ramp", default="1:16")
    parser.add_argument("--ramp-interval", default="5")
    parser.add_argument("--bandwidth", default="6M", help="the cap the ramp runs into")
    parser.add_argument("--upload-bps", type=int, default=1_000_000,
                        help="the simulator's speed for each upload: what one worker gets")
    parser.add_argument("--failures", type=float, default=0.02,
                        help="share of uploads the simulator answers 500")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out" / "report")
    args = parser.parse_args()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    build_launcher()
    build_package(out, "photon-mini", disks=(DiskSpec(64, 1024 * 1024),), cpus=2,
                  memory_mb=512)
    batch = out / "batch.yaml"
    batch.write_text(BATCH.format(count=args.count))
    results = out / "results.json"
    with running_vcsim() as vcsim:
        # Uploads of 1 MiB at ~1 MB/s each: a worker imports about one VM a
        # second, so the ramp rises until --bandwidth caps it.
        vcsim.set_faults(nfc=[{"probability": args.failures, "status": 500,
                               "after_bytes": 1000},
                              {"throttle_bps": args.upload_bps}], seed=16)
        env = {**os.environ, "VSPHERE_SERVER": vcsim.url, "VSPHERE_USER": vcsim.username,
               "VSPHERE_PASSWORD": vcsim.password}
        command = [sys.executable, "-m", "asyncovf", "run", str(batch), "--ramp", args.ramp,
                   "--ramp-interval", args.ramp_interval, "--bandwidth", args.bandwidth,
                   "--job-retries", "0", "--upload-retries", "0", "--progress", "plain",
                   "--report", str(results), "--ca-file", str(vcsim.ca_file)]
        print("$ asyncovf run", " ".join(command[4:]), flush=True)
        # Exit status 1 is expected: the uploads the simulator failed.
        subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
    if not results.exists():
        print("report-demo: the run wrote no report", file=sys.stderr)
        return 1
    report = [sys.executable, "-m", "asyncovf", "report", str(results)]
    subprocess.run(report, cwd=ROOT, check=True)
    subprocess.run([*report, "--html", str(out / "report.html"), "--png",
                    str(out / "report.png")], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
