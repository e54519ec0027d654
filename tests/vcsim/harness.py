"""Build, start and query the vcsim test vCenter (tests/vcsim/launcher/main.go).

Used by pytest (``tests/conftest.py``), by ``make demo`` and by the benchmarks,
so it depends on the standard library only. The launcher binary is cached in
``.cache/vcsim/`` under a hash of its Go sources and the Go version: it is
rebuilt exactly when either changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER_SOURCE = Path(__file__).resolve().parent / "launcher" / "main.go"
GOPATH = "/usr/share/gocode"
GOVMOMI = Path(GOPATH) / "src/github.com/vmware/govmomi/simulator"
DEBIAN_PACKAGES = "golang-go golang-github-vmware-govmomi-dev"


class VcsimUnavailable(RuntimeError):
    """The launcher cannot be built or started on this machine."""


def _go() -> str:
    go = shutil.which("go")
    if go is None or not GOVMOMI.is_dir():
        raise VcsimUnavailable(
            "the vcsim test vCenter needs Go and govmomi's sources: "
            f"apt-get install {DEBIAN_PACKAGES} (make test does this when run as root)")
    return go


def build_launcher(cache_dir: Path | None = None) -> Path:
    """The launcher binary, built if its source or the Go toolchain changed."""
    go = _go()
    cache = cache_dir or ROOT / ".cache"
    version = subprocess.run([go, "version"], capture_output=True, text=True,
                             check=True).stdout
    sources = sorted(LAUNCHER_SOURCE.parent.glob("*.go"))
    digest = hashlib.sha256(
        b"".join(p.name.encode() + p.read_bytes() for p in sources) + version.encode()
    ).hexdigest()[:16]
    binary = cache / "vcsim" / f"vcsim-launcher-{digest}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOPATH": GOPATH, "GO111MODULE": "off",
           "GOCACHE": str(cache / "go-build"), "GOFLAGS": ""}
    # Build to a unique name and rename: concurrent builders never see half a binary.
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    result = subprocess.run([go, "build", "-o", str(partial), "."], cwd=LAUNCHER_SOURCE.parent,
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise VcsimUnavailable(f"building the vcsim launcher failed:\n{result.stderr}")
    os.replace(partial, binary)
    return binary


@dataclass(frozen=True)
class Counters:
    """SOAP methods and NFC uploads the simulator saw since the last reset."""

    methods: Mapping[str, Mapping[str, int]]
    nfc_requests: Mapping[str, int]
    nfc_bytes: int
    nfc_max_in_flight: int = 0
    nfc_connections: int = 0  # client connections that carried NFC requests
    leases_open: int = 0  # created by ImportVApp, neither completed nor aborted
    leases_created: int = 0
    sessions_live: int = 0  # logged in and not out (expired ones excluded)
    sessions_expired: int = 0
    leases_ended_by_server: int = 0  # their session expired
    #: Ended because the session that created them logged out while they were
    #: open: expected only where the client lost ImportVApp's answer; anywhere
    #: else, a leaked lease that the worker's final Logout happened to end.
    leases_ended_by_logout: int = 0
    leases_in_error: int = 0  # moved to error by a lease rule (error_after_bytes, expiry)
    nfc_faults: Mapping[str, int] = field(default_factory=dict)  # applied, by kind
    leases_timed_out: int = 0  # no progress within their leaseTimeout (harness clock)
    sessions_idle_expired: int = 0  # ended for idling (also in sessions_expired)
    logins_refused: int = 0  # HTTP 503: the session cap was reached
    sessions_peak: int = 0  # the most sessions live at once since the reset
    vms_deleted_by_server: int = 0  # deleted by the launcher as vCenter does (abort, timeout)
    vms_already_gone: int = 0  # the launcher set out to delete them; the client was first
    #: NFC bytes read through the total intake cap (``nfc_total_mib_s``), and the
    #: reads that waited for it: proof that the cap throttled, without timing it.
    nfc_cap_bytes: int = 0
    nfc_cap_waits: int = 0
    #: CloneVM_Task calls answered with a task (the launcher's own, clones.go).
    clones_started: int = 0
    clones_running: int = 0  # clone tasks running now
    clones_succeeded: int = 0
    #: Clone tasks that ended in error: a task_fault, a refused spec, a clone vcsim
    #: failed, and the cancelled ones too (also in ``clones_cancelled``).
    clones_failed: int = 0
    clones_cancelled: int = 0  # ended by CancelTask (RequestCanceled)
    #: VMs of clone tasks that ended in error, left in the inventory
    #: (``clone_leaves_vm``): partial VMs the client must remove.
    clone_vms_left: int = 0
    #: VMs of clone tasks that ended in error, deleted by the launcher first
    #: (``clone_leaves_vm`` false; also in ``vms_deleted_by_server``).
    clone_vms_deleted: int = 0
    #: HttpNfcLeasePullFromUrls_Task calls answered with a task (pull.go).
    pulls_started: int = 0
    pulls_running: int = 0  # pull tasks running now
    pulls_succeeded: int = 0
    #: Pull tasks that ended in error, the cancelled ones too (also in ``pulls_cancelled``).
    pulls_failed: int = 0
    pulls_cancelled: int = 0  # ended by CancelTask (RequestCanceled)
    #: Bytes the launcher fetched from pull sources (for an OVA member, the
    #: archive up to its end). What it wrote to the leases is in ``nfc_bytes``.
    pull_bytes: int = 0
    #: The overload model (overload.go): SOAP calls refused with HTTP 503 past
    #: ``overload_limit``, calls that waited, and the waits' total in ms.
    overload_refused: int = 0
    overload_delayed: int = 0
    overload_wait_ms: float = 0.0
    #: The most SOAP calls in flight at once since the reset (counted with the
    #: model off too). A refused call counts for the moment it takes to refuse
    #: it: calls refused past ``overload_limit`` L make it read L + 1.
    calls_in_flight_peak: int = 0

    def calls(self, method: str) -> int:
        """Calls answered (or dropped)."""
        return self.methods.get(method, {}).get("calls", 0)

    def started(self, method: str) -> int:
        """Calls that arrived, answered or not: ``started - calls`` are in flight."""
        return self.methods.get(method, {}).get("started", 0)

    def delayed(self, method: str) -> int:
        return self.methods.get(method, {}).get("delayed", 0)

    def dropped(self, method: str) -> int:
        return self.methods.get(method, {}).get("dropped", 0)

    def faults(self, method: str) -> int:
        return self.methods.get(method, {}).get("faults", 0)

    def ok(self, method: str) -> int:
        return self.calls(method) - self.faults(method)

    def total_calls(self) -> int:
        return sum(m.get("calls", 0) for m in self.methods.values())


@dataclass(frozen=True)
class Behaviour:
    """What the launcher does on its own, as vCenter does (``behaviour`` in vcenter.go)."""

    delete_on_abort: bool
    lease_timeout_seconds: int
    session_cap: int
    session_idle_seconds: float
    delete_before_answer: bool = False
    clone_seconds: float = 0.0  # a clone task runs this long (0: ended when answered)
    clone_leaves_vm: bool = True  # a failed or cancelled clone leaves its VM
    nfc_total_mib_s: float = 0.0  # all NFC uploads together at most this fast (0: no cap)
    pull_supported: bool = True  # import leases support pull mode (pull.go)
    pull_delay_seconds: float = 0.0  # a pull task waits this long before it fetches
    api_version: str = ""  # the API version announced (about.go; empty: vcsim's 6.5)
    #: The overload model (overload.go): SOAP calls in flight served without
    #: waiting (0: the model is off), the wait per call in flight past them (ms),
    #: and the most in flight before calls are refused with HTTP 503 (0: no limit).
    overload_free_calls: int = 0
    overload_ms_per_call: float = 40.0
    overload_limit: int = 0


@dataclass
class Vcsim:
    """A running simulator: where it is, how to log in, and its counters."""

    url: str
    username: str
    password: str
    ca_file: Path
    process: subprocess.Popen[bytes]
    log: Any = None  # the launcher's stderr, a temporary file

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _request(self, path: str, method: str = "GET", body: bytes | None = None) -> bytes:
        base = urlsplit(self.url)
        request = urllib.request.Request(f"{base.scheme}://{base.netloc}{path}", method=method,
                                         data=body)
        with urllib.request.urlopen(request, context=self._context(), timeout=10) as response:
            data: bytes = response.read()
            return data

    def counters(self) -> Counters:
        raw: dict[str, Any] = json.loads(self._request("/_harness/counters"))
        nfc = raw.get("nfc") or {}
        return Counters(methods=raw.get("methods") or {}, nfc_requests=nfc.get("requests") or {},
                        nfc_bytes=int(nfc.get("bytes") or 0),
                        nfc_max_in_flight=int(nfc.get("max_in_flight") or 0),
                        nfc_connections=int(nfc.get("connections") or 0),
                        leases_open=int(raw.get("leases_open") or 0),
                        leases_created=int(raw.get("leases_created") or 0),
                        sessions_live=int(raw.get("sessions_live") or 0),
                        sessions_expired=int(raw.get("sessions_expired") or 0),
                        leases_ended_by_server=int(raw.get("leases_ended_by_server") or 0),
                        leases_ended_by_logout=int(raw.get("leases_ended_by_logout") or 0),
                        leases_in_error=int(raw.get("leases_in_error") or 0),
                        nfc_faults=nfc.get("faults") or {},
                        leases_timed_out=int(raw.get("leases_timed_out") or 0),
                        sessions_idle_expired=int(raw.get("sessions_idle_expired") or 0),
                        logins_refused=int(raw.get("logins_refused") or 0),
                        sessions_peak=int(raw.get("sessions_peak") or 0),
                        vms_deleted_by_server=int(raw.get("vms_deleted_by_server") or 0),
                        vms_already_gone=int(raw.get("vms_already_gone") or 0),
                        nfc_cap_bytes=int(nfc.get("cap_bytes") or 0),
                        nfc_cap_waits=int(nfc.get("cap_waits") or 0),
                        clones_started=int(raw.get("clones_started") or 0),
                        clones_running=int(raw.get("clones_running") or 0),
                        clones_succeeded=int(raw.get("clones_succeeded") or 0),
                        clones_failed=int(raw.get("clones_failed") or 0),
                        clones_cancelled=int(raw.get("clones_cancelled") or 0),
                        clone_vms_left=int(raw.get("clone_vms_left") or 0),
                        clone_vms_deleted=int(raw.get("clone_vms_deleted") or 0),
                        pulls_started=int(raw.get("pulls_started") or 0),
                        pulls_running=int(raw.get("pulls_running") or 0),
                        pulls_succeeded=int(raw.get("pulls_succeeded") or 0),
                        pulls_failed=int(raw.get("pulls_failed") or 0),
                        pulls_cancelled=int(raw.get("pulls_cancelled") or 0),
                        pull_bytes=int(raw.get("pull_bytes") or 0),
                        overload_refused=int(raw.get("overload_refused") or 0),
                        overload_delayed=int(raw.get("overload_delayed") or 0),
                        overload_wait_ms=float(raw.get("overload_wait_ms") or 0),
                        calls_in_flight_peak=int(raw.get("calls_in_flight_peak") or 0))

    def reset_counters(self) -> None:
        """Zero the counters, clear every fault rule and restore the default behaviour."""
        self._request("/_harness/reset", method="POST")

    def behave(self, *, delete_on_abort: bool | None = None,
               lease_timeout_seconds: int | None = None, session_cap: int | None = None,
               session_idle_seconds: float | None = None,
               delete_before_answer: bool | None = None, clone_seconds: float | None = None,
               clone_leaves_vm: bool | None = None,
               nfc_total_mib_s: float | None = None, pull_supported: bool | None = None,
               pull_delay_seconds: float | None = None,
               api_version: str | None = None, overload_free_calls: int | None = None,
               overload_ms_per_call: float | None = None,
               overload_limit: int | None = None) -> Behaviour:
        """Change what the launcher does as vCenter does (the fields given; see vcenter.go).

        By default it deletes the VM of an aborted or timed-out import, times out
        a lease without progress after 300 s, refuses Login with HTTP 503 past
        500 live sessions and ends sessions idle for 30 min. A reset restores that.
        ``delete_before_answer``: an Abort's answer waits until the VM is deleted
        (vCenter's deletion wins the race with the client's removal, every time).

        Clone tasks (clones.go): ``clone_seconds`` (default 0) keeps each
        CloneVM_Task's task ``running`` that long (wall time; the clone is in the
        inventory meanwhile, and CancelTask ends the task in RequestCanceled);
        ``clone_leaves_vm`` (default true) leaves the VM of a clone task that ends
        in error or is cancelled (false: the launcher deletes it before the task
        reports the error, as vCenter's rollback does).
        ``nfc_total_mib_s`` (default 0: no cap) caps all NFC uploads together
        through one shared bucket (intake.go), apart from each upload's own
        ``throttle_bps``.

        Pull mode (pull.go): ``pull_supported`` (default true) makes import leases'
        ``capabilities.pullModeSupported`` true and HttpNfcLeasePullFromUrls_Task
        work (false: the capability reads false and the call is refused with
        NotSupported); ``pull_delay_seconds`` (default 0) makes each pull task wait
        that long (wall time; CancelTask or the lease's end interrupts it) before it
        fetches anything.

        ``api_version`` (default empty: vcsim's 6.5) is the about.apiVersion the
        sessions that log in afterwards are told (about.go): pull mode is 6.7's.

        An overloaded vCenter (overload.go): with n SOAP calls in flight (POST
        /sdk, the call itself included; NFC uploads and the harness's own
        requests do not count), each call waits ``overload_ms_per_call`` (default
        40) × max(0, n − ``overload_free_calls``) ms before it is served, and is
        refused with HTTP 503 without being served when n > ``overload_limit``
        (default 0: no hard limit). ``overload_free_calls`` 0 (the default) turns
        the model off, refusals included. A reset or shutdown ends the waits.
        Counters: ``overload_refused``, ``overload_delayed``, ``overload_wait_ms``,
        ``calls_in_flight_peak`` (counted with the model off too).
        """
        changes = {key: value for key, value in (
            ("delete_on_abort", delete_on_abort), ("lease_timeout_seconds", lease_timeout_seconds),
            ("session_cap", session_cap), ("session_idle_seconds", session_idle_seconds),
            ("delete_before_answer", delete_before_answer), ("clone_seconds", clone_seconds),
            ("clone_leaves_vm", clone_leaves_vm), ("nfc_total_mib_s", nfc_total_mib_s),
            ("pull_supported", pull_supported), ("pull_delay_seconds", pull_delay_seconds),
            ("api_version", api_version), ("overload_free_calls", overload_free_calls),
            ("overload_ms_per_call", overload_ms_per_call), ("overload_limit", overload_limit),
        ) if value is not None}
        raw = json.loads(self._request("/_harness/behaviour", method="POST",
                                       body=json.dumps(changes).encode()))
        return Behaviour(**raw)

    def behaviour(self) -> Behaviour:
        return Behaviour(**json.loads(self._request("/_harness/behaviour")))

    def advance_clock(self, seconds: float) -> None:
        """Move the launcher's clock forward: leases and idle sessions due by then end now."""
        self._request("/_harness/clock", method="POST",
                      body=json.dumps({"advance_seconds": seconds}).encode())

    def expire_sessions(self) -> int:
        """Expire every live session: its next call gets NotAuthenticated."""
        answer: dict[str, int] = json.loads(self._request("/_harness/expire_sessions",
                                                          method="POST"))
        return answer["expired"]

    def set_faults(self, *, nfc: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                   soap: Sequence[Mapping[str, Any]] = (),
                   lease: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        """Replace the fault rules (see ``nfcRule`` and ``soapRule`` in the launcher).

        ``nfc``: a rule or a list of rules (the first that applies wins), each
        with ``times`` (uploads affected, 0 = all), ``vm`` (only uploads to the
        lease of the VM of that name), ``probability``, ``status`` +
        ``after_bytes`` (answer e.g. 500 after that many bytes), ``reset``
        (reset the connection after ``after_bytes``), ``stall_seconds``,
        ``throttle_bps``.
        ``soap``: rules with ``method`` ("*" for all), ``vm`` (only calls about
        the VM of that name: FindChild, CreateImportSpec, ImportVApp, and calls
        on its lease), ``fault`` (vim25 type), ``nth``, ``times``,
        ``probability``, ``delay_ms`` (+ ``delay_after_call``: vcsim carries
        the call out at once and the answer comes late), ``drop`` (cut the
        answer; vcsim never sees the call), ``drop_after_call`` (vcsim carries
        the call out, then the answer is cut). ``nth``, ``times`` and ``probability`` count the
        calls that match ``method`` and ``vm``. On CloneVM_Task, ``vm`` is the new
        VM's name (the request's ``name``), ``drop_after_call`` lets the clone and
        its task run while the client never learns the task, and ``task_fault``
        (a vim25 fault type, e.g. "InsufficientResourcesFault"; an unknown type is
        refused) makes the task end in that fault after ``clone_seconds``, the
        clone's VM left or deleted as ``clone_leaves_vm`` says.
        ``lease``: for the next ``times`` leases (0 = all; ``vm``: only that
        VM's; ``probability``: each with that chance): ``initializing_reads``,
        ``error_after_bytes`` (+ ``error_fault``), ``expire_after_seconds`` (no
        progress for that long moves the lease to error, as vCenter does).
        ``seed`` seeds the launcher's generator for ``probability``.
        """
        nfc_rules = [dict(nfc)] if isinstance(nfc, Mapping) else [dict(r) for r in nfc or ()]
        rules = {"nfc": nfc_rules, "soap": [dict(r) for r in soap],
                 "lease": dict(lease) if lease else None, "seed": seed}
        self._request("/_harness/faults", method="POST", body=json.dumps(rules).encode())

    def calls(self, method: str) -> int:
        return self.counters().calls(method)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 10 s; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.log is not None:
            self.log.close()
        return self.process.returncode


def start_vcsim(*, esx: bool = False, extra_args: Sequence[str] = (),
                startup_timeout: float = 30.0) -> Vcsim:
    binary = build_launcher()
    args = [str(binary), *(["-esx"] if esx else []), *extra_args]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the process' lifetime
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                               stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    deadline = time.monotonic() + startup_timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
        if not ready:
            process.kill()
            log.seek(0)
            raise VcsimUnavailable(f"vcsim did not start: {log.read()[-2000:].decode()}")
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            process.wait()
            log.seek(0)
            raise VcsimUnavailable(f"vcsim exited with {process.returncode}: "
                                   f"{log.read()[-2000:].decode()}")
        line += chunk
    info = json.loads(line)
    return Vcsim(url=info["url"], username=info["username"], password=info["password"],
                 ca_file=Path(info["ca_file"]), process=process, log=log)


@contextlib.contextmanager
def running_vcsim(*, esx: bool = False, extra_args: Sequence[str] = ()) -> Iterator[Vcsim]:
    vcsim = start_vcsim(esx=esx, extra_args=extra_args)
    try:
        yield vcsim
    finally:
        vcsim.stop()


__all__ = ["Behaviour", "Counters", "Vcsim", "VcsimUnavailable", "build_launcher", "running_vcsim",
           "start_vcsim"]
