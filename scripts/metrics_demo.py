"""`make metrics-demo`: a run with --concurrency auto, scraped by a real Prometheus.

The local vcsim with the launcher's overloaded-vCenter model (SOAP calls wait
``--ms-per-call`` for each call in flight past ``--free-calls``, and are
refused with 503 past ``--limit``), each upload slowed to about a second so
the run lasts long enough to watch; Prometheus (Debian's) scrapes the run's
``--metrics-port`` every second. Afterwards the counters Prometheus stored are
checked against the run's report, and Prometheus's graph page of the
concurrency limit and the imports per second is rendered in headless Chromium
to ``prometheus-graph.png`` (the README's screenshot).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factory import DiskSpec, build_package  # noqa: E402
from tests.prometheus import free_port, running_prometheus  # noqa: E402
from tests.vcsim.harness import running_vcsim  # noqa: E402

BATCH = """\
defaults:
  source: ./photon-mini.ova
  cluster: DC0_C0
  datastore: LocalDS_0
vms:
  - name: "watched-{{index:04d}}"
    count: {count}
"""

#: The graph page's two panels: where auto holds the limit, and what it gets.
PANELS = (("asyncovf_concurrency_limit", 0),
          ('rate(asyncovf_imports_total{status="imported"}[10s])', 0))


def graph_url(prometheus: str, seconds: float) -> str:
    """The graph page of :data:`PANELS` over the last ``seconds`` (the page is opened
    right after the run: its default end is now)."""
    params: dict[str, str] = {}
    for number, (expression, tab) in enumerate(PANELS):
        params.update({f"g{number}.expr": expression, f"g{number}.tab": str(tab),
                       f"g{number}.range_input": f"{int(seconds) + 1}s",
                       f"g{number}.stacked": "0", f"g{number}.show_exemplars": "0"})
    return f"{prometheus}/graph?{urllib.parse.urlencode(params)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--free-calls", type=int, default=2)
    parser.add_argument("--ms-per-call", type=float, default=40.0)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--upload-bps", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out" / "metrics")
    args = parser.parse_args()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    build_package(out, "photon-mini", disks=(DiskSpec(64, 1024 * 1024),), cpus=2,
                  memory_mb=512)
    (out / "batch.yaml").write_text(BATCH.format(count=args.count))
    model = ["-overload-free-calls", str(args.free_calls),
             "-overload-ms-per-call", f"{args.ms_per_call:g}",
             "-overload-limit", str(args.limit)]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, running_vcsim(extra_args=model) as vcsim, \
            running_prometheus(Path(tmp), f"127.0.0.1:{port}", interval="1s") as prometheus:
        vcsim.set_faults(nfc={"throttle_bps": args.upload_bps})
        env = {**os.environ, "VSPHERE_SERVER": vcsim.url, "VSPHERE_USER": vcsim.username,
               "VSPHERE_PASSWORD": vcsim.password}
        started = time.time()
        run = subprocess.run(
            [sys.executable, "-m", "asyncovf", "run", "batch.yaml", "--ca-file",
             str(vcsim.ca_file), "--concurrency", "auto", "--progress", "plain",
             "--metrics-port", f"127.0.0.1:{port}", "--metrics-linger", "3",
             "--report", "report.json"], cwd=out, env=env, check=False)
        report = json.loads((out / "report.json").read_text())
        imported = prometheus.value(
            'max_over_time(asyncovf_imports_total{status="imported"}[1h])')
        uploaded = prometheus.value("max_over_time(asyncovf_uploaded_bytes_total[1h])")
        print(f"metrics-demo: Prometheus has {imported:g} imported and {uploaded:g} bytes "
              f"uploaded; the report {report['totals']['imported']} and "
              f"{report['totals']['bytes']}")
        agree = (imported == report["totals"]["imported"]
                 and uploaded == report["totals"]["bytes"])
        browser = (os.environ.get("CHROMIUM") or shutil.which("chromium")
                   or shutil.which("chromium-browser"))
        if browser is None:
            print("metrics-demo: no chromium for the screenshot: apt-get install chromium",
                  file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1400,1480", "--virtual-time-budget=15000",
                 f"--screenshot={out / 'prometheus-graph.png'}",
                 graph_url(prometheus.url, time.time() - started + 2)],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"metrics-demo: run exit {run.returncode}; {out / 'prometheus-graph.png'}")
    return 0 if run.returncode == 0 and agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
