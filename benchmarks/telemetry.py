"""What watching a run costs: N imports with nobody watching, with metrics, with traces.

Each mode through :func:`asyncovf.run_batch` in this process against one
simulator, alternating the modes for ``--rounds`` rounds so that a slow moment
of the machine hits them alike. Metrics update their registry (nobody scrapes);
traces go through the SDK's batching processor to an exporter that drops them,
so the SDK's whole cost is in and no network's. Reports, per mode, the median
of imports/s and of our process's CPU per import, and each against "off" — the
target: off costs nothing, so the other targets hold with telemetry compiled in.

Run: ``.venv/bin/python -m benchmarks.telemetry [--count 400] [--concurrency 16] [--rounds 3]``
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from asyncovf import Metrics, Tracing, Watcher, Watchers
from benchmarks.orchestration import alternating_arguments, alternating_runs, in_process
from tests.vcsim.harness import Vcsim


class Dropped(SpanExporter):
    """Takes every span and sends none anywhere."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def traces() -> Tracing:
    return Tracing(BatchSpanProcessor(Dropped()))


MODES: dict[str, Callable[[], Watcher | None]] = {
    "off": lambda: None,
    "metrics": Metrics,
    "traces": traces,
    "both": lambda: Watchers([Metrics(), traces()]),
}


def main() -> None:
    args = alternating_arguments(__doc__)

    def run(vcsim: Vcsim, package: Path, mode: str, number: int) -> dict[str, Any]:
        watcher = MODES[mode]()
        try:
            return in_process(vcsim, package, args.count, args.concurrency, watcher=watcher,
                              prefix=f"t{number}{mode}")
        finally:
            if watcher is not None:
                watcher.close()

    runs = alternating_runs(list(MODES), args.rounds, run)

    def median(mode: str, key: str) -> float:
        return float(statistics.median(run[key] for run in runs[mode]))

    keys = ("imports_per_s", "cpu_s_per_import")
    table = {mode: {key: median(mode, key) for key in keys} for mode in MODES}
    ratios = {mode: {key: round(table[mode][key] / table["off"][key], 2) for key in keys}
              for mode in MODES}
    result = {"count": args.count, "concurrency": args.concurrency, "rounds": args.rounds,
              "median": table, "over_off": ratios, "runs": runs}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| watching | imports/s | our CPU ms/import | CPU vs off |")
    print("|---|---|---|---|")
    for mode in MODES:
        row = table[mode]
        print(f"| {mode} | {row['imports_per_s']:.1f} | {row['cpu_s_per_import'] * 1000:.1f} | "
              f"{ratios[mode]['cpu_s_per_import']}× |")


if __name__ == "__main__":
    main()
