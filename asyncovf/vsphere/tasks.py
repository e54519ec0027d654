"""Ending a task we started and no longer want: CancelTask, then wait for its end.

A job that gives up on a server-side task (a clone, a host's pull of a
package) must not leave it running: a clone would create its VM after the
removal that follows, a pull would go on writing into a lease being aborted.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from asyncovf.errors import TaskError, VCenterError
from asyncovf.vsphere.cleanup import bounded_cleanup
from asyncovf.vsphere.session import VCenterSession

log = logging.getLogger(__name__)

#: CancelTask's faults for a task that ended already or cannot be cancelled.
_NOTHING_TO_CANCEL: Final = frozenset({"InvalidState", "NotSupported"})


async def cancel_task_bounded(session: VCenterSession, task: Any, errors: list[str], *,
                              what: str) -> None:
    """CancelTask, then wait for the task to end: shielded and bounded, never raising.

    Waited for, because a task still running would go on acting after the
    cleanup that follows. A task that ended already (InvalidState) or cannot be
    cancelled (NotSupported) is waited for all the same.
    """
    with bounded_cleanup(what, errors):
        try:
            await session.invoke(task, "Cancel")
        except VCenterError as exc:
            if exc.fault_type not in _NOTHING_TO_CANCEL:
                raise
        try:
            await session.wait_for_task(task)
        except TaskError:
            pass  # cancelled, or failed: either way it ended
        log.info("%s: done", what)


__all__ = ["cancel_task_bounded"]
