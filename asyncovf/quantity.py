"""A count with its noun, in the singular or the plural as the count asks: "1 VM", "2 VMs".

Every line that counts something says it the same way; a count is never "1 VMs".
"""

from __future__ import annotations


def quantity(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``: the noun as given for exactly one, else ``plural``
    (default: the noun with an ``s``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


__all__ = ["quantity"]
