"""The one shielded, time-bounded cleanup idiom: Abort, removal, Logout, closing.

Cleanup that must reach vCenter runs while the work around it is being
cancelled (Ctrl-C, a job timeout, a failed sibling), so it is shielded from
that cancellation — and, shielded, nothing but its own bound can stop it. Every
such piece goes through :func:`bounded_cleanup`::

    with bounded_cleanup(f"abort of lease {lease}", errors, timeout=CLEANUP_TIMEOUT):
        await session.invoke(lease, "Abort")

A failure or a timeout is recorded as one line in ``errors`` (and logged),
never raised over the error that caused the cleanup; a cancellation of the body
(its own bound) ends it quietly.

After a signal every cleanup also shares one deadline (:class:`CleanupBudget`):
the bulk engine promises that every lease is aborted and every session logged
out within :data:`INTERRUPT_BUDGET` seconds of the signal, even when vCenter
stops answering, so a cleanup that would have had its own 10 s is cut to what is
left of the budget. The budget is shared out by :class:`Stage`: lease cleanup
(Abort, removal) must end first, so that the Logouts after it still get their
turn, and closing connections comes last.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

import anyio

log = logging.getLogger(__name__)

#: Upper bound for one piece of cleanup (an Abort, a removal, a Logout).
CLEANUP_TIMEOUT: Final = 10.0
#: After a signal, everything is aborted and logged out within this many seconds.
INTERRUPT_BUDGET: Final = 10.0


class Stage(enum.Enum):
    """Which part of the interrupt budget a cleanup may use: the seconds it must
    leave for the stages after it (the value)."""

    LEASE = 3.0  # Abort, VM removal, ImportVApp's shield, a login under way
    LOGOUT = 1.0  # Logout (and the re-login that ends an unknown lease)
    CLOSE = 0.0  # closing the connections


@dataclass
class CleanupBudget:
    """The deadline all cleanup shares once the work is interrupted.

    Live shielded scopes register here; :meth:`interrupt` pulls each one's
    deadline in to the budget (shielded scopes cannot be cancelled from outside:
    their deadline is the only lever), and scopes entered afterwards start with it.
    """

    deadline: float = math.inf
    _scopes: dict[anyio.CancelScope, Stage] = field(default_factory=dict)

    def interrupt(self, within: float = INTERRUPT_BUDGET) -> None:
        """Start the budget now (idempotent: a second signal does not extend it)."""
        self.deadline = min(self.deadline, anyio.current_time() + within)
        for scope, stage in self._scopes.items():
            scope.deadline = min(scope.deadline, self.limit(stage))

    def limit(self, stage: Stage = Stage.LEASE) -> float:
        """The latest deadline a cleanup of this stage may have now."""
        return self.deadline - stage.value

    @property
    def interrupted(self) -> bool:
        return self.deadline != math.inf

    @contextmanager
    def track(self, scope: anyio.CancelScope, stage: Stage) -> Iterator[None]:
        scope.deadline = min(scope.deadline, self.limit(stage))
        self._scopes[scope] = stage
        try:
            yield
        finally:
            self._scopes.pop(scope, None)


#: The budget of the work under way: set by whoever watches the signals
#: (:func:`asyncovf.interrupt.run_until_signal`); tasks inherit it when they start.
current_budget: contextvars.ContextVar[CleanupBudget | None] = contextvars.ContextVar(
    "asyncovf_cleanup_budget", default=None)


@dataclass
class CleanupOutcome:
    """What one bounded cleanup came to: ``error`` is None when it finished."""

    what: str
    error: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@contextmanager
def bounded_cleanup(what: str, errors: list[str] | None = None, *,
                    timeout: float = CLEANUP_TIMEOUT,
                    stage: Stage = Stage.LEASE) -> Iterator[CleanupOutcome]:
    """Run the body shielded from cancellation, for at most ``timeout`` seconds.

    ``what`` names the cleanup in the one line recorded on failure
    (``"<what> failed: <error>"`` or ``"<what> timed out after N s"``), appended
    to ``errors`` when given. An exception from the body is recorded, not raised:
    a failed cleanup must never mask the error that made it necessary. After an
    interrupt the bound is also the shared budget's (see :class:`CleanupBudget`).
    """
    outcome = CleanupOutcome(what)
    budget = current_budget.get()
    with anyio.move_on_after(timeout, shield=True) as scope:
        tracked = budget.track(scope, stage) if budget is not None else None
        try:
            if tracked is not None:
                with tracked:
                    yield outcome
            else:
                yield outcome
        except Exception as exc:
            outcome.error = f"{what} failed: {exc or type(exc).__name__}"
    if scope.cancelled_caught and outcome.error is None:
        outcome.timed_out = True
        spent = "the interrupt's time was up" if budget is not None and budget.interrupted \
            and scope.deadline <= budget.deadline else f"after {timeout:g} s"
        outcome.error = f"{what} timed out ({spent})"
    if outcome.error is not None:
        log.warning("%s", outcome.error)
        if errors is not None:
            errors.append(outcome.error)


@contextmanager
def shielded(timeout: float = math.inf, *,
             stage: Stage = Stage.LEASE) -> Iterator[anyio.CancelScope]:
    """A shielded scope for work that must not be cut half-way by the caller's
    cancellation (ImportVApp, Login), bounded by ``timeout`` and, after an
    interrupt, by the shared budget. Errors propagate; the caller reads
    ``scope.cancelled_caught`` to learn that the bound cut the work.
    """
    budget = current_budget.get()
    with anyio.move_on_after(timeout, shield=True) as scope:
        if budget is None:
            yield scope
        else:
            with budget.track(scope, stage):
                yield scope


__all__ = ["CLEANUP_TIMEOUT", "CleanupBudget", "CleanupOutcome", "INTERRUPT_BUDGET", "Stage",
           "bounded_cleanup", "current_budget", "shielded"]
