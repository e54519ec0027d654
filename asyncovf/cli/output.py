"""What every command says on stderr: an error in one line, the first signal's message.

Errors are one line; ``--debug`` adds the traceback. Passwords are never
printed (no error of ours carries one).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable

from asyncovf.errors import AsyncOvfError
from asyncovf.vsphere.cleanup import INTERRUPT_BUDGET

log = logging.getLogger(__name__)


def report_error(error: BaseException, debug: bool) -> None:
    """``asyncovf: error: …``: our errors as they say, anything else with its type."""
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    message = str(error) if isinstance(error, AsyncOvfError) else f"{type(error).__name__}: {error}"
    print(f"asyncovf: error: {message}", file=sys.stderr)


def announce_interrupt(what: str) -> Callable[[str], None]:
    """The first signal's message: what is stopped, and the bound on cleaning up."""
    def announce(name: str) -> None:
        log.warning("%s: %s; every lease is aborted and every session logged out "
                    "within %g s", name, what, INTERRUPT_BUDGET)
    return announce


__all__ = ["announce_interrupt", "report_error"]
