"""Import-spec reuse against one CreateImportSpec per VM: N imports of a 1 MiB OVA.

Both through :func:`asyncovf.run_batch` in this process, against one simulator,
alternating (reuse, per VM, reuse, per VM …) for ``--rounds`` rounds so that a
slow moment of the machine hits both alike; each VM's name is new in every run.
Reports, per mode, the median over the rounds of imports/s, SOAP calls per import
(every call the simulator counted: the name check, the placement check's
session and the finished mark included), our process's CPU per import and the
simulator's over the same run (the target: ours at most its), and the ratios
reuse / per VM.

Run: ``.venv/bin/python -m benchmarks.spec_reuse [--count 400] [--concurrency 16] [--rounds 3]``
"""

from __future__ import annotations

import json
import statistics

from benchmarks.orchestration import alternating_arguments, alternating_runs, in_process

MODES = {"reuse": False, "per VM": True}


def main() -> None:
    args = alternating_arguments(__doc__)
    runs = alternating_runs(list(MODES), args.rounds, lambda vcsim, package, mode, number:
                            in_process(vcsim, package, args.count, args.concurrency,
                                       spec_per_vm=MODES[mode],
                                       prefix=f"r{number}{'p' if MODES[mode] else 'd'}"))

    def median(mode: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[mode])

    keys = ("imports_per_s", "soap_per_import", "cpu_s_per_import",
            "simulator_cpu_s_per_import")
    table = {mode: {key: median(mode, key) for key in keys} for mode in MODES}
    ratios = {key: round(table["reuse"][key] / table["per VM"][key], 2) for key in keys}
    calls = {mode: runs[mode][-1]["soap_by_method"] for mode in MODES}
    result = {"count": args.count, "concurrency": args.concurrency, "rounds": args.rounds,
              "median": table, "reuse_over_per_vm": ratios, "calls_last_round": calls,
              "runs": runs}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print("| import spec | imports/s | SOAP calls/import | our CPU ms/import | "
          "simulator CPU ms/import |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        row = table[mode]
        print(f"| {mode} | {row['imports_per_s']:.1f} | {row['soap_per_import']:.2f} | "
              f"{row['cpu_s_per_import'] * 1000:.1f} | "
              f"{row['simulator_cpu_s_per_import'] * 1000:.1f} |")
    print(f"| reuse / per VM | {ratios['imports_per_s']}× | {ratios['soap_per_import']}× | "
          f"{ratios['cpu_s_per_import']}× | {ratios['simulator_cpu_s_per_import']}× |")


if __name__ == "__main__":
    main()
