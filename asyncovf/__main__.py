"""``python -m asyncovf`` runs the command line."""

import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    # Loading the tool takes a moment; a signal meanwhile ends it like any
    # interrupt (exit 130, no traceback). Nothing has been started on vCenter.
    print(f"asyncovf: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    raise SystemExit(130)


_previous = {signum: signal.signal(signum, _interrupted_while_starting)
             for signum in (signal.SIGINT, signal.SIGTERM)}

from asyncovf.cli import console  # noqa: E402 - the handlers first, on purpose

for _signum, _handler in _previous.items():
    signal.signal(_signum, _handler)

console()
