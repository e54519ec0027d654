"""Every command's exit status.

0 success; 1 an import (or a removal) failed; 2 usage error or input rejected
before anything was created on vCenter; 3 a load-test threshold failed; 4 the
circuit breaker stopped the run; 130 interrupted (SIGINT or SIGTERM, alike);
141 the reader of our output went away (a broken pipe: ``asyncovf spec X | head``).
"""

from __future__ import annotations

from typing import Final

from asyncovf.errors import InputError, InvalidLoginError, TLSVerificationError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_THRESHOLD: Final = 3  # a load-test threshold failed
EXIT_BREAKER: Final = 4  # the circuit breaker stopped the run
EXIT_INTERRUPTED: Final = 130
#: 128 + SIGPIPE: what a shell reports for a Unix tool that SIGPIPE ended (``yes | head``),
#: so a script reads "its output was cut short" from us as it does from them.
EXIT_BROKEN_PIPE: Final = 141


def exit_status(*, interrupted: bool = False, rejected: bool = False, breaker: bool = False,
                threshold: bool = False, failed: bool = False) -> int:
    """Every command's exit status: the first that applies, in the order 130, 2, 4, 3, 1.

    An interrupt says most about the run (the rest may not have had its
    chance), then input we rejected before creating anything (fix it and run
    again), then the run-level verdicts of a load test, then failed jobs.
    """
    for applies, code in ((interrupted, EXIT_INTERRUPTED), (rejected, EXIT_USAGE),
                          (breaker, EXIT_BREAKER), (threshold, EXIT_THRESHOLD),
                          (failed, EXIT_FAILED)):
        if applies:
            return code
    return EXIT_OK


def exit_code_for(error: BaseException, *, touched_vcenter: bool = False) -> int:
    """2 when our input was wrong and nothing was created on vCenter, else 1."""
    if touched_vcenter:
        return EXIT_FAILED
    if isinstance(error, InputError | InvalidLoginError | TLSVerificationError):
        return EXIT_USAGE
    return EXIT_FAILED


__all__ = ["EXIT_BREAKER", "EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK",
           "EXIT_THRESHOLD", "EXIT_USAGE", "exit_code_for", "exit_status"]
