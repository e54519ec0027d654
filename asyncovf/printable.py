"""Untrusted text made safe to show: control characters escaped.

VM names, hrefs, property values, vCenter's fault messages and CSV cells come
from whoever wrote the package, the batch file or the inventory. Printed raw,
a newline in one forges a line of our output ("web-01: imported"), and an ESC
or OSC sequence drives the operator's terminal (colours, titles, hyperlinks,
even the clipboard). :func:`printable` escapes every such character the way
Python writes it in a string literal (``\\n``, ``\\x1b``, ``\\u202e``), so
what is shown is one line and says exactly which bytes were there.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Final

#: Unicode categories that move the cursor, control the terminal or reorder text:
#: controls (C0, DEL, C1), format characters (bidi overrides, zero-width joiners),
#: line and paragraph separators, and unassigned or surrogate code points.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` as one line that shows what it holds: unsafe characters escaped.

    A backslash is left as it is: the point is what a terminal does with the
    text, not a reversible encoding (the JSON report keeps the exact value).
    """
    value = str(text)
    if value.isprintable():  # the common case: nothing to do
        return value
    return "".join(
        _escape(char) if unicodedata.category(char) in _UNSAFE_CATEGORIES else char
        for char in value
    )


def printable_json(text: str) -> str:
    """JSON text with the unsafe characters ``json.dumps(ensure_ascii=False)`` leaves raw
    (C1 controls, bidi overrides, separators) written as ``\\uXXXX`` escapes: still
    the same JSON, and safe on a terminal. Its own newlines (indentation) stay."""
    out = []
    for char in text:
        if char != "\n" and unicodedata.category(char) in _UNSAFE_CATEGORIES:
            code = ord(char)
            if code > 0xFFFF:  # a surrogate pair, as JSON writes one
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def counted(lines: Iterable[str]) -> list[str]:
    """Each distinct line once, in the order first said; one said N > 1 times ends in
    `` (×N)``. A hostile package can repeat a warning thousands of times."""
    counts = Counter(lines)
    return [line if n == 1 else f"{line} (×{n})" for line, n in counts.items()]


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines are always one line each: the message, its
    arguments and any traceback text escaped (a traceback keeps its own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record))


__all__ = ["PrintableFormatter", "counted", "printable", "printable_json"]
