"""A load test's concurrency schedule (``--ramp``): the steps of workers it runs at.

A load test looks for the concurrency where vCenter's latency bends, so each
step must add load; the last step is the peak the pool is sized for.
"""

from __future__ import annotations


def parse_ramp(text: str) -> tuple[int, ...]:
    """A concurrency schedule from ``--ramp``: ``4:64`` doubles (4, 8, 16, 32, 64),
    ``4:64:12`` adds 12 a step (4, 16, 28, 40, 52, 64), ``2,4,8,24`` is taken as given.

    Steps go up: a load test looks for the concurrency where vCenter's latency
    bends, so each step must add load. The last step is always the peak.
    """
    try:
        if "," in text:
            steps = tuple(int(part) for part in text.split(","))
        else:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            first, last = parts[0], parts[1]
            if first < 1 or last < first or (len(parts) == 3 and parts[2] < 1):
                raise ValueError
            steps_list = [first]
            while steps_list[-1] < last:
                grown = (steps_list[-1] + parts[2] if len(parts) == 3
                         else steps_list[-1] * 2)
                steps_list.append(min(grown, last))
            steps = tuple(steps_list)
    except ValueError:
        raise ValueError(f"{text!r}: expected FROM:TO (doubling), FROM:TO:STEP, or a list "
                         "like 4,8,16,32") from None
    try:
        check_ramp(steps)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return steps


def check_ramp(steps: tuple[int, ...]) -> None:
    """A ramp's steps: at least one, the first at least 1, each above the one before."""
    if not steps or steps[0] < 1 or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("each step must be at least 1 and above the one before")


__all__ = ["check_ramp", "parse_ramp"]
