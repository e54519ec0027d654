"""The two report schemas, written and read here only: the run report and the cleanup report.

The run report (``asyncovf run --report``) is one JSON object with every job
and the totals; with it comes the summary table printed at the end of a run.
Times in it are seconds from the start of the run, so reports from different
machines (shards) line up; ``started_at`` gives the wall clock. ``asyncovf
cleanup`` reads run reports back (:func:`read_reports`) into the VMs to remove:
reading is pure (:func:`parse_report`), and refuses a document it does not
understand, naming the file and the job, so that nothing is removed on a misread.

The cleanup report (``asyncovf cleanup --json``) says what became of every
VM targeted (:func:`cleanup_document`).

Reports are written atomically: a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from asyncovf.engine.batch import JobResult, JobStatus, totals
from asyncovf.engine.cleaner import Cleaner, CleanupTarget, counts
from asyncovf.engine.pool import BatchRunner
from asyncovf.engine.pull import PULL_DIGESTS, PULL_NOT_USED
from asyncovf.errors import InputError, ReportFileError
from asyncovf.printable import printable
from asyncovf.quantity import quantity
from asyncovf.version import __version__

REPORT_VERSION = 1
PHASE_ORDER = ("seed", "clone", "spec", "import", "lease_wait", "upload", "complete",
               "extra_config",
               "inject_ovf_env", "upgrade_hardware", "mark_as_template", "power_on",
               "wait_for_ip", "abort")
#: The run report versions this asyncovf reads back.
READABLE_VERSIONS: Final = (REPORT_VERSION,)
#: The statuses a finished job has in a run report; only ``imported`` VMs are the run's
#: to remove.
JOB_STATUSES: Final = frozenset(status.value for status in (
    JobStatus.IMPORTED, JobStatus.SKIPPED, JobStatus.FAILED, JobStatus.ABORTED))
CLEANUP_VERSION: Final = 1
#: The statuses of a seed VM (engine/seeds.py) that the run made and left on vCenter.
SEED_LEFTOVERS: Final = frozenset({"ready", "kept", "failed"})


@dataclass(frozen=True)
class RunInfo:
    """What the report says about the run itself."""

    batch: str | None
    concurrency: int
    shard: str | None = None
    interrupted: str | None = None  # the signal's name
    dry_run: bool = False
    #: The command's arguments, recorded without secrets (:func:`redact_argv`);
    #: by default this process's own.
    argv: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv[1:]))
    #: vCenter's ``ServiceContent.about`` (fullName, version, build, apiVersion), when
    #: the run logged in (:func:`about_record`).
    about: Mapping[str, str] | None = None


#: Options whose value is a secret: their values never reach a report.
_SECRET_OPTION = re.compile(r"^--?[\w-]*(pass|secret|token|cookie|auth|credential)", re.I)
#: ``scheme://user:password@host``: the password part of a URL.
_URL_PASSWORD = re.compile(r"(?P<keep>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]*@", re.I)
REDACTED: Final = "***"


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` fit for a report: secret options' values and URL passwords replaced.

    ``--password`` (cli/groups.py) is the one secret option today; any option
    named like a secret is treated as one, so a new one is safe by default.
    """
    redacted: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            redacted.append(REDACTED)
            hide_next = False
            continue
        name, equals, _ = arg.partition("=")
        if _SECRET_OPTION.match(name):
            if equals:
                redacted.append(f"{name}={REDACTED}")
            else:
                redacted.append(arg)
                hide_next = True
            continue
        redacted.append(_URL_PASSWORD.sub(rf"\g<keep>{REDACTED}@", arg))
    return redacted


def about_record(about: Any) -> dict[str, str]:
    """What the report keeps of vCenter's ``AboutInfo`` (vSphere API reference:
    ``vim.AboutInfo``): product name, version, build and API version."""
    return {key: str(getattr(about, key, None) or "") for key in
            ("fullName", "version", "build", "apiVersion")}


def _package_record(source: str, package: Any) -> dict[str, Any]:
    members = getattr(package, "members", None) or {}
    files = getattr(package, "files", None) or {}
    uploads = [f.content_size for f in files.values()]
    return {"source": source, "kind": getattr(package, "kind", None),
            "bytes": sum(member.size for member in members.values()),
            "upload_bytes": sum(uploads) if uploads and None not in uploads else None}


def _settings_record(settings: Any) -> dict[str, Any]:
    return {"concurrency": settings.concurrency, "ramp": list(settings.ramp) or None,
            "ramp_interval": settings.ramp_interval if settings.ramp else None,
            "bandwidth": settings.bandwidth, "max_per_host": settings.max_per_host,
            "max_per_datastore": settings.max_per_datastore,
            "job_retries": settings.job_retries, "upload_attempts": settings.upload_attempts,
            "parallel_disks": settings.parallel_disks, "spec_per_vm": settings.spec_per_vm,
            "strategy": settings.strategy, "adaptive": settings.adaptive,
            "error_window": settings.error_window,
            "max_error_rate": settings.max_error_rate}


def job_record(result: JobResult, origin: float) -> dict[str, Any]:
    def offset(moment: float | None) -> float | None:
        return round(moment - origin, 6) if moment is not None else None

    phases: list[dict[str, Any]] = []
    for index, (attempt, phase, started) in enumerate(result.phases):
        following = result.phases[index + 1] if index + 1 < len(result.phases) else None
        ended = following[2] if following is not None and following[0] == attempt else None
        if phase in ("imported", "failed", "aborted"):
            continue
        phases.append({"attempt": attempt, "phase": phase, "start": offset(started),
                       "end": offset(ended if ended is not None else result.finished)})
    return {
        "name": result.name,
        "status": result.status.value,
        "vm": result.vm,
        "ip_address": result.ip_address,
        "source": result.spec.source,
        "attempts": result.attempts,
        "upload_retries": result.upload_retries,
        "bytes": result.bytes,
        "worker": result.worker,
        "start": offset(result.started),
        "end": offset(result.finished),
        "timings": {phase: round(result.timings[phase], 6)
                    for phase in PHASE_ORDER if phase in result.timings},
        "phases": phases,
        "error": result.error,
        "error_kind": result.error_kind,
        # Refused for its input: out of the error rate (asyncovf.engine.error_rate).
        "input_error": result.input_error,
        # The VM --on-conflict replace destroyed for this job (its MOR id), if any.
        "replaced": result.replaced,
        # Pull mode: the host read the files, so nobody checked the manifest's digests.
        "pulled": result.pulled,
        "digests": PULL_DIGESTS if result.pulled else None,
        "warnings": list(result.warnings),
        "cleanup_errors": list(result.cleanup_errors),
        # Its OpenTelemetry trace, when the run was traced: joins this row to it.
        "trace_id": result.trace_id,
    }


def build_report(runner: BatchRunner, info: RunInfo) -> dict[str, Any]:
    origin = runner.started
    finished = runner.finished if runner.finished is not None else time.monotonic()
    elapsed = max(finished - origin, 1e-9)
    summary = totals(runner.results)
    imported = summary["imported"]
    calls = dict(sorted(runner.soap_calls.items()))
    # Whoever logged in for the run may leave vCenter's ``about`` on the runner.
    about = info.about if info.about is not None else getattr(runner, "about", None)
    seeds = getattr(runner, "seeds", None)
    return {
        "version": REPORT_VERSION,
        "run": {
            "batch": info.batch,
            "started_at": datetime.fromtimestamp(time.time() - (time.monotonic() - origin),
                                                 UTC).isoformat(timespec="milliseconds"),
            "seconds": round(elapsed, 6),
            "concurrency": info.concurrency,
            "shard": info.shard,
            "interrupted": info.interrupted,
            "dry_run": info.dry_run,
            "ramp": ({"steps": list(runner.settings.ramp),
                      "interval": runner.settings.ramp_interval}
                     if runner.settings.ramp else None),
            "concurrency_series": [[t, limit] for t, limit in runner.concurrency_series],
            # Why the circuit breaker stopped the run (engine/breaker.py), if it did.
            "breaker": getattr(getattr(runner, "breaker", None), "tripped", None),
            "tool": {"name": "asyncovf", "version": __version__},
            "command": ["asyncovf", *redact_argv(info.argv)],
            "vcenter": dict(about) if about is not None else None,
            "packages": [_package_record(source, package)
                         for source, package in sorted(runner.packages.items())],
            "settings": _settings_record(runner.settings),
        },
        "jobs": [job_record(result, origin) for result in runner.results],
        # strategy: clone's seed VMs, one per group (engine/seeds.py).
        "seeds": [seed.record() for seed in seeds.seeds] if seeds is not None else [],
        "totals": {
            **summary,
            "seconds": round(elapsed, 6),
            "imports_per_second": round(imported / elapsed, 3),
            "sessions_opened": runner.sessions_opened,
            "sessions_closed": runner.sessions_closed,
            "relogins": runner.relogins,
            "sessions_renewed": runner.sessions_renewed,
            "soap_retries": runner.soap_retries,
            "soap_calls": calls,
            "soap_calls_per_import": round(sum(calls.values()) / imported, 2) if imported else None,
            "errors_by_kind": dict(Counter(r.error_kind or "other" for r in runner.results
                                           if r.status is JobStatus.FAILED).most_common()),
        },
    }


def write_report(path: str | os.PathLike[str], report: Mapping[str, Any]) -> None:
    """Write ``report`` as JSON atomically (temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def summary_table(results: Sequence[JobResult], *, limit: int = 50) -> str:
    """A plain-text table for stdout: failures first, then up to ``limit`` other jobs."""
    rows = sorted(results, key=lambda r: (r.status is not JobStatus.FAILED,
                                          r.status is not JobStatus.ABORTED, r.spec.index))
    shown = rows[:limit]
    # Names, ids and errors come from the batch file and vCenter: one line each, escaped.
    names = {id(r): printable(r.name) for r in shown}
    width = max([len(name) for name in names.values()] + [4])
    lines = [f"{'VM':<{width}}  {'status':<8}  {'vm':<10}  {'tries':>5}  {'MiB':>8}  "
             f"{'seconds':>8}  error"]
    for r in shown:
        seconds = (r.finished - r.started) if r.finished and r.started else 0.0
        lines.append(f"{names[id(r)]:<{width}}  {r.status.value:<8}  "
                     f"{printable(r.vm or '-'):<10}  "
                     f"{r.attempts:>5}  {r.bytes / 2**20:>8.1f}  {seconds:>8.2f}  "
                     f"{printable((r.error or '')[:120])}")
    if len(rows) > limit:
        lines.append(f"… and {len(rows) - limit} more (see --report)")
    return "\n".join(lines)


def totals_line(report: Mapping[str, Any]) -> str:
    t = report["totals"]
    parts = [f"{t['imported']} imported", f"{t['skipped']} skipped", f"{t['failed']} failed",
             f"{t['aborted']} aborted"]
    rate = t["imports_per_second"]
    # A clone run's bytes went to its seeds (strategy: clone), not to its jobs;
    # a pulled job's were fetched by its host, not sent by us.
    pulled = sum(job.get("bytes") or 0 for job in report.get("jobs") or () if job.get("pulled"))
    uploaded = t["bytes"] - pulled + sum(seed.get("bytes") or 0
                                         for seed in report.get("seeds") or ())
    by_hosts = f", {pulled / 2**20:.1f} MiB pulled by the hosts" if pulled else ""
    return (f"{quantity(t['jobs'], 'job')}: " + ", ".join(parts)
            + f" in {t['seconds']:.1f} s ({rate:.1f} imports/s, "
            + f"{uploaded / 2**20:.1f} MiB uploaded{by_hosts})")


def seed_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per seed VM of the run (``strategy: clone``): what became of it."""
    lines = []
    for seed in report.get("seeds") or ():
        what = f"seed {printable(seed['name'])} ({printable(seed['vm'] or '-')}) for " \
               f"{quantity(seed['jobs'], 'VM')}: {seed['status']}"
        if seed.get("seconds"):
            what += f", imported in {seed['seconds']:.2f} s"
        if seed.get("error"):
            what += f": {printable(seed['error'][:200])}"
        lines.append(what)
    return lines


def pull_warnings(report: Mapping[str, Any]) -> list[str]:
    """The run's pull-mode warnings, each once with its count of jobs: the jobs the hosts
    pulled (nobody checked their digests), and each reason jobs asked to be pulled
    were uploaded instead."""
    jobs = report.get("jobs") or ()
    lines = []
    pulled = sum(1 for job in jobs if job.get("pulled"))
    if pulled:
        lines.append(f"{quantity(pulled, 'job')} pulled by the hosts; digests: {PULL_DIGESTS}")
    reasons = Counter(warning for job in jobs for warning in job.get("warnings") or ()
                      if warning.startswith(PULL_NOT_USED))
    lines.extend(f"{printable(reason)} ({quantity(count, 'job')})"
                 for reason, count in reasons.items())
    return lines


# -- reading a run report back: the VMs a run created (pure, then the files) --------------------


@dataclass(frozen=True)
class ReportTargets:
    """What a run report asks to remove, and how many of its jobs it leaves alone."""

    targets: tuple[CleanupTarget, ...]
    left_alone: int = 0


def parse_report(data: Any, *, file: str, include_skipped: bool = False) -> ReportTargets:
    """The targets of one run report (``asyncovf run --report``), already decoded from JSON.

    ``include_skipped`` takes the VMs the run skipped too (``--on-conflict skip``
    met them finished): not the run's own, unless an earlier attempt of the same
    batch made them, as a restarted shard's report says of what its killed pod
    finished. Only the operator can say so (``cleanup --include-skipped``).

    Raises :class:`InputError` naming the file and the job when the document is
    not a run report, so that nothing is removed on a misread.
    """
    jobs = check_run_report(data, file=file)["jobs"]
    targets: dict[str, CleanupTarget] = {}
    left_alone = 0
    for index, job in enumerate(jobs):
        where = f"{file}: jobs[{index}]"
        if not isinstance(job, dict):
            raise InputError(f"{where}: expected an object, got {type(job).__name__}")
        name, status, vm = job.get("name"), job.get("status"), job.get("vm")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: 'name' missing or not a string")
        where = f"{where} ({name})"
        if status not in JOB_STATUSES:
            raise InputError(f"{where}: status {status!r} is not one of "
                             + ", ".join(sorted(JOB_STATUSES)))
        taken = status == JobStatus.IMPORTED.value or (
            include_skipped and status == JobStatus.SKIPPED.value)
        if not taken:
            left_alone += 1
            continue
        if not isinstance(vm, str) or not vm or vm != vm.strip() or " " in vm:
            raise InputError(f"{where}: status {status!r} but 'vm' is {vm!r}, not a managed "
                             "object id such as 'vm-123'")
        known = targets.get(vm)
        if known is not None and known.name != name:
            raise InputError(f"{where}: {vm} is also {known.name!r} ({known.origin}); "
                             "a VM has one name")
        targets.setdefault(vm, CleanupTarget(vm=vm, name=name, origin=where))
    for index, seed in enumerate(data.get("seeds") or ()):
        # A seed the run made and did not remove (kept, or its removal failed) is the
        # run's; one it found there (--on-conflict skip) is not.
        if not isinstance(seed, dict) or seed.get("status") not in SEED_LEFTOVERS:
            continue
        name, vm = seed.get("name"), seed.get("vm")
        if isinstance(name, str) and name and isinstance(vm, str) and vm and " " not in vm:
            targets.setdefault(vm, CleanupTarget(vm=vm, name=name,
                                                 origin=f"{file}: seeds[{index}] ({name})"))
    return ReportTargets(tuple(targets.values()), left_alone)


def check_run_report(data: Any, *, file: str) -> dict[str, Any]:
    """``data`` as a run report (a JSON object with a readable version and a list of
    jobs), or a :class:`ReportFileError` saying why it is not one. What every
    reader of a run report checks first: the cleanup's targets and the load
    report's statistics."""
    if not isinstance(data, dict) or "jobs" not in data:
        raise ReportFileError(f"{file}: not an asyncovf run report (expected a JSON object "
                              "with 'jobs', as 'asyncovf run --report' writes)")
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise ReportFileError(f"{file}: report version {version!r}; this asyncovf reads "
                              "version " + ", ".join(map(str, READABLE_VERSIONS)))
    jobs = data["jobs"]
    if not isinstance(jobs, list):
        raise ReportFileError(f"{file}: 'jobs' is {type(jobs).__name__}, expected a list")
    return data


def load_run_report(path: str | Path) -> dict[str, Any]:
    """A run report file, decoded and checked (:func:`check_run_report`); blocking."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ReportFileError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReportFileError(f"{path}: not UTF-8 text, so not a run report") from None
    except json.JSONDecodeError as exc:
        raise ReportFileError(f"{path}:{exc.lineno}: not JSON ({exc.msg}), so not a run "
                              "report") from None
    return check_run_report(data, file=str(path))


def read_report(path: str | Path, *, include_skipped: bool = False) -> ReportTargets:
    """Read and parse one report file (blocking: call it in a worker thread)."""
    return parse_report(load_run_report(path), file=str(path), include_skipped=include_skipped)


def read_reports(paths: Sequence[str | Path], *,
                 include_skipped: bool = False) -> ReportTargets:
    """Several reports (the shards of one run) as one list of targets."""
    targets: dict[str, CleanupTarget] = {}
    left_alone = 0
    for path in paths:
        report = read_report(path, include_skipped=include_skipped)
        left_alone += report.left_alone
        for target in report.targets:
            known = targets.get(target.vm)
            if known is not None and known.name != target.name:
                raise InputError(f"{target.origin}: {target.vm} is also {known.name!r} "
                                 f"({known.origin}); a VM has one name")
            targets.setdefault(target.vm, target)
    return ReportTargets(tuple(targets.values()), left_alone)


# -- the cleanup report -------------------------------------------------------------------------


def cleanup_document(cleaner: Cleaner, *, selection: dict[str, Any],
                     interrupted: str | None = None) -> dict[str, Any]:
    """The ``asyncovf cleanup --json`` JSON: every target's outcome, and the totals."""
    return {
        "version": CLEANUP_VERSION,
        "selection": selection,
        "interrupted": interrupted,
        "vms": [{"vm": r.target.vm, "name": r.target.name, "status": r.status.value,
                 "detail": r.detail, "powered_off": r.powered_off, "seconds": r.seconds,
                 "origin": r.target.origin} for r in cleaner.results],
        "totals": {**counts(cleaner.results), "sessions_opened": cleaner.sessions_opened,
                   "sessions_closed": cleaner.sessions_closed},
    }


__all__ = [
    "PHASE_ORDER",
    "SEED_LEFTOVERS",
    "READABLE_VERSIONS",
    "REPORT_VERSION",
    "ReportTargets",
    "RunInfo",
    "about_record",
    "build_report",
    "check_run_report",
    "cleanup_document",
    "job_record",
    "load_run_report",
    "parse_report",
    "read_report",
    "read_reports",
    "redact_argv",
    "pull_warnings",
    "seed_lines",
    "summary_table",
    "totals_line",
    "write_report",
]
