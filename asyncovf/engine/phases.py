"""A job's phases, sans-IO: the Phase enum, its one transition table, and JobState.

Everything that decides which phase may follow which lives here, so a bug in
the orchestration shows up as an :class:`~asyncovf.errors.IllegalTransition` rather than as a
report that lies. Each phase's duration and start time are recorded for the
report's timeline.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Final

from asyncovf.errors import IllegalTransition
from asyncovf.telemetry.watch import JobWatch


class Phase(enum.Enum):
    PENDING = "pending"
    # strategy: clone: waiting for (or importing) the group's seed VM, then CloneVM_Task.
    SEED = "seed"
    CLONE = "clone"
    SPEC = "spec"
    IMPORT = "import"
    LEASE_WAIT = "lease_wait"
    UPLOAD = "upload"
    COMPLETE = "complete"
    # The post-import steps, in the order they run (POST_IMPORT_STEPS).
    EXTRA_CONFIG = "extra_config"
    INJECT_OVF_ENV = "inject_ovf_env"
    UPGRADE_HARDWARE = "upgrade_hardware"
    MARK_AS_TEMPLATE = "mark_as_template"
    POWER_ON = "power_on"
    WAIT_FOR_IP = "wait_for_ip"
    ABORT = "abort"
    IMPORTED = "imported"
    FAILED = "failed"
    ABORTED = "aborted"


#: After HttpNfcLeaseComplete, in this order; each runs only when asked for.
POST_IMPORT_STEPS: Final = (Phase.EXTRA_CONFIG, Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE,
                            Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.WAIT_FOR_IP)


_TRANSITIONS: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.PENDING: frozenset({Phase.SPEC, Phase.SEED, Phase.FAILED, Phase.ABORTED}),
    Phase.SEED: frozenset({Phase.CLONE, Phase.FAILED, Phase.ABORTED}),
    Phase.SPEC: frozenset({Phase.IMPORT, Phase.FAILED, Phase.ABORTED}),
    Phase.IMPORT: frozenset({Phase.LEASE_WAIT, Phase.FAILED, Phase.ABORTED}),
    Phase.LEASE_WAIT: frozenset({Phase.UPLOAD, Phase.ABORT}),
    Phase.UPLOAD: frozenset({Phase.COMPLETE, Phase.ABORT}),
    # After Complete the lease is gone: a failed or cancelled post-import step
    # removes the VM itself (ABORT), then the job ends failed or aborted. Each
    # step may be followed by any later one, except that a template is never
    # powered on, and only a powered-on VM is waited for.
    Phase.COMPLETE: frozenset({Phase.EXTRA_CONFIG, Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE,
                               Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.IMPORTED,
                               Phase.ABORT}),
    # A clone ends as an import's upload does: what follows is the same.
    Phase.CLONE: frozenset({Phase.EXTRA_CONFIG, Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE,
                            Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.IMPORTED,
                            Phase.ABORT}),
    Phase.EXTRA_CONFIG: frozenset({Phase.INJECT_OVF_ENV, Phase.UPGRADE_HARDWARE,
                                   Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.IMPORTED,
                                   Phase.ABORT}),
    Phase.INJECT_OVF_ENV: frozenset({Phase.UPGRADE_HARDWARE, Phase.MARK_AS_TEMPLATE,
                                     Phase.POWER_ON, Phase.IMPORTED, Phase.ABORT}),
    Phase.UPGRADE_HARDWARE: frozenset({Phase.MARK_AS_TEMPLATE, Phase.POWER_ON, Phase.IMPORTED,
                                       Phase.ABORT}),
    Phase.MARK_AS_TEMPLATE: frozenset({Phase.IMPORTED, Phase.ABORT}),
    Phase.POWER_ON: frozenset({Phase.WAIT_FOR_IP, Phase.IMPORTED, Phase.ABORT}),
    Phase.WAIT_FOR_IP: frozenset({Phase.IMPORTED, Phase.ABORT}),
    Phase.ABORT: frozenset({Phase.FAILED, Phase.ABORTED}),
    Phase.IMPORTED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.ABORTED: frozenset(),
}
TERMINAL: Final = frozenset({Phase.IMPORTED, Phase.FAILED, Phase.ABORTED})


@dataclass
class JobState:
    """Mutable record of one import's progress; the report is built from it."""

    name: str
    phase: Phase = Phase.PENDING
    vm: str | None = None
    bytes_total: int = 0
    bytes_done: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    #: Upload attempts that failed and were retried.
    upload_retries: int = 0
    #: True once ImportVApp was sent: from then on a failure is not "input rejected".
    touched_vcenter: bool = False
    #: ImportVApp was sent and its answer lost (connection dropped, call timed
    #: out): a lease may exist that nobody can name. See BatchRunner.
    import_unanswered: bool = False
    cleanup_errors: list[str] = field(default_factory=list)
    #: (phase, monotonic start time) for every phase entered: the report's timeline.
    history: list[tuple[str, float]] = field(default_factory=list)
    #: The guest's IP address, when the job waited for it (``wait_for_ip``).
    ip_address: str | None = None
    #: The host fetched the files itself (pull mode): nobody checked their digests.
    pulled: bool = False
    #: The type of the error the job failed with (a vCenter fault's, or the exception's).
    fault: str | None = None
    #: Told of every phase entered and every byte sent: the run's metrics and traces.
    watch: JobWatch | None = field(default=None, repr=False)
    _phase_started: float = field(default_factory=time.monotonic, repr=False)

    def __repr__(self) -> str:
        return f"<JobState {self.name!r} {self.phase.value} {self.bytes_done}/{self.bytes_total}>"

    def advance(self, to: Phase) -> None:
        if to not in _TRANSITIONS[self.phase]:
            raise IllegalTransition(f"{self.name}: {self.phase.value} → {to.value}")
        now = time.monotonic()
        if self.phase not in TERMINAL and self.phase is not Phase.PENDING:
            key = self.phase.value
            self.timings[key] = self.timings.get(key, 0.0) + (now - self._phase_started)
        before, self.phase = self.phase, to
        self._phase_started = now
        self.history.append((to.value, now))
        if self.watch is not None:
            self.watch.phase(before.value, to.value, error=self.error, fault=self.fault)

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL



__all__ = ["JobState", "POST_IMPORT_STEPS", "Phase", "TERMINAL"]
