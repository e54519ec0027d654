"""One SOAP call as the ones who listen hear of it, and what counts as vCenter overloaded.

:class:`~asyncovf.vsphere.soap.SoapClient` makes a :class:`CallRecord` for each
call once it has ended and hands it to its observers: ``--concurrency auto``
(``engine/adaptive.py``), the metrics and the traces (``asyncovf/telemetry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: vCenter's faults that say "too busy for this now": overload signals, like HTTP 503.
OVERLOAD_FAULTS: Final = frozenset({"NotAllowedInCurrentState", "TaskInProgress"})


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One SOAP call, as :attr:`~asyncovf.vsphere.soap.SoapClient.observers` hear of it
    when it ends.

    ``started`` is on the monotonic clock; ``fault`` is None for an answer,
    else the fault's type (``DuplicateName``), ``HTTP 503``, ``no answer in N s``,
    ``connection``, ``cancelled`` or ``unreadable answer``.
    """

    method: str
    started: float
    seconds: float
    fault: str | None

    @property
    def overloaded(self) -> bool:
        """An overload signal: HTTP 503, no answer in time, or one of
        :data:`OVERLOAD_FAULTS` (vCenter too busy for it now)."""
        fault = self.fault
        return fault is not None and (fault == "HTTP 503" or fault.startswith("no answer")
                                      or fault in OVERLOAD_FAULTS)


__all__ = ["OVERLOAD_FAULTS", "CallRecord"]
