"""Soak: thousands of imports against vcsim with random faults, then the invariant check.

Not part of the test suite (it takes minutes). One simulator, one batch of
``--count`` imports of a small OVA at ``--concurrency``, run as ``asyncovf
run`` and :func:`asyncovf.run_batch` run it (the source opened, the
placements checked in a session of their own, then the pool), with faults
injected at random (``--fault-rate`` each, seeded by ``--seed``):

* SOAP: InvalidState on CreateImportSpec, TaskInProgress on ImportVApp,
  FileFault on FindChild, lost answers of lease reads (repeated by the
  session), of ImportVApp after vCenter carried it out (the worker logs out
  and in again to end the lease it never learned, the VM is removed, the job
  retried) and of HttpNfcLeaseComplete (the lease is aborted, the job
  retried), answers 4.5 s late on CreateImportSpec (past the 3 s call timeout)
  — CreateImportSpec is asked once per group, so its faults land on that one
  call (and on whoever asks again after it failed) unless ``--spec-per-vm``;
* NFC: HTTP 500 after some bytes, connection resets, stalls (past a 1 s
  stall deadline);
* leases: moved to error mid-upload.

The seed fixes the sequence of random draws; which call draws which number
still depends on how the workers interleave, so two runs with one seed are
alike, not identical.

Then it checks, on the server's side: every Login logged out (the placement
check's too), every ImportVApp completed or aborted (or ended with the session
the worker renewed after losing its answer — never more of those than
renewals), no lease open, and the inventory holding exactly the VMs the run
reports imported. It prints one JSON document (the invariants, job outcomes,
retries, what was injected) and exits 1 if an invariant fails. Run:

``.venv/bin/python -m benchmarks.soak [--count 2000] [--concurrency 16] [--seed N]``
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from asyncovf import (
    AsyncOvfError,
    BatchPlan,
    ConnectionSettings,
    JobSpec,
    JobStatus,
    PlacementRequest,
    RetryPolicy,
    RunSettings,
)

# Internal, on purpose. The run goes through BatchRun, the object run_batch and
# ``asyncovf run`` drive, rather than run_batch itself: the invariants need the
# pool's own counters (sessions renewed after a lost ImportVApp answer, sessions
# opened and closed, relogins, SOAP retries), which only its runner keeps and
# run_batch's results do not carry.
from asyncovf.engine.run import BatchRun, open_sources
from tests.factory import DiskSpec, build_package
from tests.integration.inspect import list_vms
from tests.vcsim.harness import Counters, Vcsim, running_vcsim

PREFIX = "soak"
#: Short enough that late answers cost little, long enough that no real call hits it.
CALL_TIMEOUT = 3.0


def fault_rules(rate: float) -> dict[str, Any]:
    """Each rule fires on ``rate`` of the calls (uploads, leases) it matches."""
    return {
        "soap": [
            {"method": "CreateImportSpec", "fault": "InvalidState", "probability": rate},
            {"method": "CreateImportSpec", "delay_ms": int(CALL_TIMEOUT * 1500),
             "probability": rate},
            {"method": "ImportVApp", "fault": "TaskInProgress", "probability": rate},
            {"method": "ImportVApp", "drop_after_call": True, "probability": rate},
            {"method": "FindChild", "fault": "FileFault", "probability": rate},
            {"method": "RetrievePropertiesEx", "drop": True, "probability": rate},
            {"method": "HttpNfcLeaseComplete", "drop": True, "probability": rate},
        ],
        "nfc": [
            {"status": 500, "after_bytes": 20_000, "probability": rate},
            {"reset": True, "after_bytes": 10_000, "probability": rate},
            {"stall_seconds": 3.0, "probability": rate},
        ],
        "lease": {"error_after_bytes": 30_000, "error_fault": "FileFault", "probability": rate},
    }


def settled(vcsim: Vcsim, within: float = 30.0) -> Counters:
    """The counters once no SOAP call is in flight (late answers finish in the simulator)."""
    deadline = time.monotonic() + within
    while True:
        counters = vcsim.counters()
        if all(m.get("started", 0) <= m.get("calls", 0) for m in counters.methods.values()) \
                or time.monotonic() > deadline:
            return counters
        time.sleep(0.1)


def soak(vcsim: Vcsim, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    connection = ConnectionSettings(server=vcsim.url, username=vcsim.username,
                                    password=vcsim.password, ca_file=str(vcsim.ca_file),
                                    call_timeout=CALL_TIMEOUT)
    jobs = tuple(JobSpec(index=i, name=f"{PREFIX}-{i:05d}", source=str(source),
                         placement=PlacementRequest(cluster="DC0_C0", datastore="LocalDS_0"),
                         origin="soak") for i in range(args.count))
    plan = BatchPlan("soak", {}, jobs)
    settings = RunSettings(concurrency=args.concurrency, job_retries=args.job_retries,
                           spec_per_vm=args.spec_per_vm,
                           upload_attempts=args.upload_retries + 1, upload_initial_wait=0.05,
                           stall_timeout=1.0,
                           soap_retry=RetryPolicy(attempts=3, initial_wait=0.05, max_wait=0.5))

    async def run() -> BatchRun:
        # run_batch's steps, keeping hold of the run for its counters. The
        # placement check logs in once more than the workers (Login == Logout
        # still holds) and makes its calls under the same faults.
        packages, source_errors = await open_sources(
            plan, verify_manifest=settings.verify_manifest)
        batch = BatchRun(connection, plan, packages, source_errors, settings)
        try:
            try:
                await batch.check()
            except AsyncOvfError as exc:  # the check could not be made: no job starts
                batch.settle(exc)
                return batch
            await batch.run()
        finally:
            batch.settle()
        return batch

    vcsim.reset_counters()
    vcsim.set_faults(seed=args.seed, **fault_rules(args.fault_rate))
    started = time.perf_counter()
    batch = anyio.run(run)
    elapsed = time.perf_counter() - started
    results, runner = batch.results, batch.runner
    vcsim.set_faults()  # none: the checks below read the inventory undisturbed
    counters = settled(vcsim)

    imported = {r.name for r in results if r.status is JobStatus.IMPORTED}
    in_inventory = {vm.name for vm in anyio.run(list_vms, connection)
                    if vm.name.startswith(PREFIX + "-")}
    completes, aborts = counters.ok("HttpNfcLeaseComplete"), counters.ok("HttpNfcLeaseAbort")
    invariants = {
        "login_equals_logout": counters.ok("Login") == counters.ok("Logout"),
        "no_session_left": counters.sessions_live == 0,
        "importvapp_equals_complete_plus_abort_plus_ended_with_session":
            counters.ok("ImportVApp") == completes + aborts + counters.leases_ended_by_server
            + counters.leases_ended_by_logout,
        "leases_ended_by_logout_only_after_a_lost_answer":
            counters.leases_ended_by_logout <= runner.sessions_renewed,
        "no_lease_open": counters.leases_open == 0,
        "inventory_equals_imported": in_inventory == imported,
        "runner_sessions_closed": runner.sessions_opened == runner.sessions_closed,
        "every_job_imported_or_failed": all(
            r.status in (JobStatus.IMPORTED, JobStatus.FAILED) for r in results),
    }
    statuses = Counter(r.status.value for r in results)
    injected_soap = {method: {k: v for k, v in (("faults", counters.faults(method)),
                                                ("dropped", counters.dropped(method)),
                                                ("delayed", counters.delayed(method))) if v}
                     for method in sorted(counters.methods)}
    return {
        "ok": all(invariants.values()),
        "invariants": invariants,
        "run": {"count": args.count, "concurrency": args.concurrency, "seed": args.seed,
                "fault_rate": args.fault_rate, "job_retries": args.job_retries,
                "upload_retries": args.upload_retries, "seconds": round(elapsed, 1),
                "imports_per_s": round(len(imported) / elapsed, 1)},
        "jobs": {
            **{status: statuses.get(status, 0) for status in ("imported", "failed", "aborted")},
            "retried_jobs": sum(r.attempts > 1 for r in results),
            "attempts": sum(r.attempts for r in results),
            "upload_retries": sum(r.upload_retries for r in results),
            # As the run report counts them (its totals' errors_by_kind).
            "errors_by_kind": dict(Counter(r.error_kind or "other" for r in results
                                           if r.status is JobStatus.FAILED).most_common()),
            "error_samples": sorted({(r.error or "")[:140] for r in results
                                     if r.status is JobStatus.FAILED})[:8],
            "cleanup_errors": sum(len(r.cleanup_errors) for r in results),
            "cleanup_error_samples": sorted({e[:160] for r in results
                                             for e in r.cleanup_errors})[:8],
        },
        "sessions": {"login": counters.ok("Login"), "logout": counters.ok("Logout"),
                     "live": counters.sessions_live, "relogins": runner.relogins,
                     "renewed_after_a_lost_importvapp_answer": runner.sessions_renewed,
                     "soap_retries": runner.soap_retries},
        "leases": {"importvapp_ok": counters.ok("ImportVApp"), "complete_ok": completes,
                   "abort_ok": aborts, "open": counters.leases_open,
                   "ended_with_a_renewed_session": counters.leases_ended_by_logout,
                   "created": counters.leases_created, "moved_to_error": counters.leases_in_error},
        # What vCenter did on its own: the VMs of aborted imports it deleted
        # itself, or set out to and found the tool had removed first.
        "vcenter_own": {"vms_deleted": counters.vms_deleted_by_server,
                        "vms_the_tool_removed_first": counters.vms_already_gone,
                        "leases_timed_out": counters.leases_timed_out,
                        "logins_refused": counters.logins_refused},
        "inventory": {"vms": len(in_inventory), "imported": len(imported),
                      "not_imported_but_present": sorted(in_inventory - imported)[:10],
                      "imported_but_missing": sorted(imported - in_inventory)[:10]},
        "injected": {"soap": {m: v for m, v in injected_soap.items() if v},
                     "nfc": dict(counters.nfc_faults),
                     "nfc_uploads": dict(counters.nfc_requests)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--job-retries", type=int, default=1)
    parser.add_argument("--upload-retries", type=int, default=3)
    parser.add_argument("--spec-per-vm", action="store_true",
                        help="one CreateImportSpec per VM, so its faults land on every job")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every retry (by default only errors, e.g. failed cleanup)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR,
                        format="soak: %(levelname)s: %(message)s", stream=sys.stderr)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    with tempfile.TemporaryDirectory(prefix="asyncovf-soak-") as directory:
        source = build_package(Path(directory), "soak", disks=(DiskSpec(16, 128 * 1024),)).path
        with running_vcsim() as vcsim:
            result = soak(vcsim, source, args)
    print(json.dumps(result, indent=2))
    if not result["ok"]:
        failed = [name for name, ok in result["invariants"].items() if not ok]
        print(f"soak: invariants failed: {', '.join(failed)} (--seed {args.seed})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
