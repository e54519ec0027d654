"""Counts and sizes said one way everywhere: "1 VM", "2 VMs"; "812.0 MiB", "1.21 GiB".

Every line that counts something says it the same way; a count is never "1 VMs",
and a size is always in binary units (MiB, never MB or a bare byte count in the
thousands), as the progress display, the summaries and the load report show it.
"""

from __future__ import annotations


def quantity(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``: the noun as given for exactly one, else ``plural``
    (default: the noun with an ``s``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def size(count: float) -> str:
    """Bytes in the largest binary unit they fill: ``1.21 GiB``, ``812.0 MiB``, ``3.0 KiB``,
    ``512 B`` (3-4 significant digits)."""
    for unit, factor, digits in (("TiB", 2**40, 2), ("GiB", 2**30, 2), ("MiB", 2**20, 1),
                                 ("KiB", 2**10, 1)):
        if count >= factor:
            return f"{count / factor:.{digits}f} {unit}"
    return f"{int(count)} B"


__all__ = ["quantity", "size"]
