"""What every command says on stderr: an error in one line, the first signal's message.

Errors are one line; ``--debug`` adds the traceback. Passwords are never
printed (no error of ours carries one). A warning said many times is said
once, with its count; a progress line whose reader went away is dropped.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from asyncovf.engine.batch_errors import BatchErrors
from asyncovf.errors import AsyncOvfError
from asyncovf.loadreport.thresholds import Threshold, evaluate
from asyncovf.printable import printable
from asyncovf.vsphere.cleanup import INTERRUPT_BUDGET

log = logging.getLogger(__name__)

T = TypeVar("T")


def report_error(error: BaseException, debug: bool) -> None:
    """``asyncovf: error: …``: our errors as they say, anything else with its type."""
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, BatchErrors):  # a batch file's problems: each on its own line
        messages = error.lines()
    elif isinstance(error, AsyncOvfError):
        messages = [str(error)]
    else:
        messages = [f"{type(error).__name__}: {error}"]
    for message in messages:
        print(f"asyncovf: error: {printable(message)}", file=sys.stderr)


def announce_interrupt(what: str) -> Callable[[str], None]:
    """The first signal's message: what is stopped, and the bound on cleaning up."""
    def announce(name: str) -> None:
        log.warning("%s: %s; every lease is aborted and every session logged out "
                    "within %g s", name, what, INTERRUPT_BUDGET)
    return announce


def unless_unread(callback: Callable[[T], None]) -> Callable[[T], None]:
    """``callback`` (a progress printer the engine calls) that stops printing once its
    reader has gone (a broken pipe), rather than failing the job it reports on: the
    run goes on, cleans up and writes its report; a later print to that stream ends
    the command quietly (exit 141)."""
    gone = False

    def guarded(value: T) -> None:
        nonlocal gone
        if gone:
            return
        try:
            callback(value)
        except BrokenPipeError:
            gone = True  # nothing to tell: the one who would read it has gone

    return guarded


def report_missed_thresholds(report: Mapping[str, Any], thresholds: Sequence[Threshold]) -> bool:
    """Judge ``thresholds`` on a run report; print each that failed, one line on stderr.
    True when one failed (exit 3)."""
    missed = [verdict for verdict in evaluate(report, thresholds) if not verdict.passed]
    for verdict in missed:
        print(f"asyncovf: {printable(verdict.describe())}", file=sys.stderr)
    return bool(missed)


__all__ = ["announce_interrupt", "report_error", "report_missed_thresholds", "unless_unread"]
