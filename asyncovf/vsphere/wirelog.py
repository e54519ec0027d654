"""The SOAP wire log: every request and answer of a session, redacted, in a file of its own.

``--wire-log DIR`` (``ConnectionSettings(wire_log=DIR)``) is govc's ``-debug``
for asyncovf: what went over the wire when a run went wrong. Each session
(each worker's, the placement check's) writes ``DIR/<time>-<pid>-<n>.log``,
mode 0600, one record per call: the method, the request's headers and body,
the status, the answer's headers and body, and how long it took.

Secrets never reach the file: passwords, SAML tokens and WS-Security headers,
the session cookie (request and answer), the session key Login answers with,
service tickets, and the values of the HTTP headers a pull passes to a source
server (its credentials) are replaced by ``(redacted)`` before anything is
written. Each body is then cut to :data:`MAX_BODY` characters, so a run's
inventory pages cannot fill a disk.

The writing happens on a thread of the log's own, fed by a queue: a call
never waits for the disk, and a record is queued without an await, so an
interrupted call still leaves its request in the log.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

#: The most characters of one body kept in the log.
MAX_BODY: Final = 64 * 1024
REDACTED: Final = "(redacted)"
#: Replacements that keep a match's first group (and last), the rest redacted.
_KEEP_FIRST: Final = rf"\1{REDACTED}"
_KEEP_BOTH: Final = rf"\1{REDACTED}\2"

_numbers = itertools.count(1)

#: Elements whose whole text is a secret: Login's password (and any element of
#: that name), LoginByToken's WS-Security header and SAML assertion.
_SECRET_ELEMENTS: Final = tuple(
    re.compile(rf"(<(?:\w+:)?{name}\b[^>]*>).*?(</(?:\w+:)?{name}>)", re.S)
    for name in ("password", "Security", "Assertion"))
#: A pull's httpHeaders (the keys stay, the values, credentials, go).
_HTTP_HEADERS: Final = re.compile(r"<httpHeaders\b[^>]*>.*?</httpHeaders>", re.S)
_VALUE: Final = re.compile(r"(<value\b[^>]*>).*?(</value>)", re.S)
#: Login's answer (its session key) and a ticket's answer (the ticket).
_SESSION_ANSWER: Final = re.compile(
    r"<(Login\w*Response|Acquire\w*TicketResponse)\b.*?</\1>", re.S)
_KEY: Final = re.compile(r"(<key>).*?(</key>)", re.S)
_TICKET: Final = re.compile(r"(<returnval\b[^>]*>)[^<]*(</returnval>)")
_COOKIE: Final = re.compile(r"(vmware_soap_session=)(\"[^\"]*\"|[^;,\s]*)")


def redact(body: str) -> str:
    """``body`` with every secret the module docstring names replaced by ``(redacted)``."""
    for element in _SECRET_ELEMENTS:
        body = element.sub(_KEEP_BOTH, body)
    body = _HTTP_HEADERS.sub(lambda m: _VALUE.sub(_KEEP_BOTH, m.group(0)), body)
    body = _SESSION_ANSWER.sub(
        lambda m: _TICKET.sub(_KEEP_BOTH, _KEY.sub(_KEEP_BOTH, m.group(0))), body)
    return _COOKIE.sub(_KEEP_FIRST, body)


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[str]:
    """Header lines, the session cookie's value (Cookie, Set-Cookie) redacted."""
    return [f"{name}: {_COOKIE.sub(_KEEP_FIRST, value)}" for name, value in headers]


def capped(body: str, limit: int = MAX_BODY) -> str:
    if len(body) <= limit:
        return body
    return f"{body[:limit]}\n… ({len(body) - limit} more characters not logged)"


class WireLog:
    """One session's log file; :meth:`record` queues, a thread writes."""

    def __init__(self, directory: str | os.PathLike[str], *, max_body: int = MAX_BODY) -> None:
        self.directory = Path(directory)
        self.max_body = max_body
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.path = self.directory / f"{stamp}-{os.getpid()}-{next(_numbers)}.log"
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._calls = 0
        self._broken = False  # the file could not be written: records are dropped

    def record(self, method: str, url: str, request_headers: Mapping[str, str],
               request: bytes, *, status: int | None, answer_headers: Iterable[tuple[str, str]],
               answer: bytes | None, seconds: float, error: str | None = None) -> None:
        """Queue one call's record (never blocks, never raises on a full disk)."""
        self._calls += 1
        when = datetime.now(UTC).isoformat(timespec="milliseconds")
        outcome = (f"HTTP {status}" if status is not None else f"no answer: {error}")
        lines = [f"=== {when} #{self._calls} {method} POST {url}",
                 *redact_headers(request_headers.items()),
                 "", capped(redact(request.decode("utf-8", "replace")), self.max_body),
                 f"--- {outcome} after {seconds * 1000:.1f} ms",
                 *redact_headers(answer_headers)]
        if answer is not None:
            lines += ["", capped(redact(answer.decode("utf-8", "replace")), self.max_body)]
        self._put("\n".join(lines) + "\n\n")

    def _put(self, text: str) -> None:
        if self._broken:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._write, name=f"wire log {self.path.name}",
                                            daemon=True)
            self._thread.start()
        self._queue.put(text)

    def close(self) -> None:
        """Let the writer finish what is queued (blocking: call it in a worker thread)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10.0)
            self._thread = None

    def _write(self) -> None:
        handle: TextIO | None = None
        try:
            while (text := self._queue.get()) is not None:
                if handle is None:
                    self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                         0o600)
                    handle = open(descriptor, "a", encoding="utf-8")  # noqa: SIM115
                handle.write(text)
                handle.flush()
        except OSError:
            self._broken = True  # a log that cannot be written must not fail the run
        finally:
            if handle is not None:
                handle.close()


__all__ = ["MAX_BODY", "REDACTED", "WireLog", "capped", "redact", "redact_headers"]
