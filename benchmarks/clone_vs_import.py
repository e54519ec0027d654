"""Clone fan-out against importing every VM: N VMs from one OVA with a big disk.

Both through :func:`asyncovf.run_batch` in this process, against one simulator
whose NFC intake is capped in total (``--link-mib-s``, all uploads together),
standing in for the one network link a fleet's uploads share. Reports wall
time and the disk bytes the client sent (the simulator's NFC intake count) for
each strategy, and the ratios. On the simulator a clone costs almost nothing,
so the time ratio measures the client's side of the work: on vCenter each full
clone is a copy on the storage side, a linked clone none.

Run: ``.venv/bin/python -m benchmarks.clone_vs_import [--count 200] [--disk-mib 256]
[--concurrency 16] [--link-mib-s 200]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.orchestration import in_process
from tests.factory import DiskSpec, build_package
from tests.vcsim.harness import running_vcsim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--disk-mib", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--link-mib-s", type=float, default=200.0,
                        help="the simulator's total NFC intake, MiB/s (0: no cap)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        package = build_package(Path(tmp), "bench", disks=(
            DiskSpec(args.disk_mib + 16, args.disk_mib * 1024 * 1024),))
        # A flag, not a behaviour change: each run's counter reset restores the flags.
        with running_vcsim(extra_args=["-nfc-total-mib-s", f"{args.link_mib_s:g}"]) as vcsim:
            runs = {}
            for strategy in ("clone", "import"):
                runs[strategy] = in_process(vcsim, package.path, args.count, args.concurrency,
                                            prefix=f"{strategy[0]}v", strategy=strategy)
    clone, imported = runs["clone"], runs["import"]
    result = {
        "count": args.count, "disk_mib": args.disk_mib, "concurrency": args.concurrency,
        "link_mib_s": args.link_mib_s,
        "seconds": {"clone": clone["seconds"], "import": imported["seconds"]},
        "client_bytes_sent": {"clone": clone["nfc_bytes"], "import": imported["nfc_bytes"]},
        "clone_speedup": round(imported["seconds"] / clone["seconds"], 1),
        "bytes_ratio": round(clone["nfc_bytes"] / imported["nfc_bytes"], 4),
        "runs": runs,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| strategy | seconds | MiB sent by the client | SOAP calls per VM |")
    print("|---|---|---|---|")
    for strategy, run in runs.items():
        print(f"| {strategy} | {run['seconds']:.2f} | {run['nfc_bytes'] / 2**20:.0f} | "
              f"{run['soap_per_import']:.2f} |")
    print(f"| clone / import | {1 / result['clone_speedup']:.3f}× | {result['bytes_ratio']}× | |")


if __name__ == "__main__":
    main()
