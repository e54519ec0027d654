"""``--concurrency auto``'s limit: how it moves on what the calls report (no clock raced:
each tick is given its moment)."""

from __future__ import annotations

import pytest

from asyncovf.engine.adaptive import (
    CUT_HOLD,
    HOLD,
    SLOW_DECREASE,
    START,
    TICK,
    AdaptiveLimit,
    parse_concurrency,
)
from asyncovf.vsphere.calls import CallRecord

BASE = 0.010  # 10 ms: the answers of an idle vCenter


def fed(limit: AdaptiveLimit, seconds: float, *, calls: int = 5, overloads: int = 0) -> None:
    for _ in range(calls):
        limit.observe(CallRecord("RetrievePropertiesEx", 0.0, seconds, None))
    for _ in range(overloads):
        limit.observe(CallRecord("ImportVApp", 0.0, 0.0, "HTTP 503"))


def test_it_starts_low_and_grows_every_tick_while_answers_stay_near_the_baseline() -> None:
    limit = AdaptiveLimit(64, changed=0.0)
    assert limit.limit == START == 4
    now = 0.0
    for expected in (5, 6, 7, 8):
        now += TICK
        fed(limit, BASE)
        assert limit.tick(now) == expected


def test_an_overload_signal_halves_it_then_it_climbs_by_one_after_a_longer_hold() -> None:
    limit = AdaptiveLimit(64, limit=16, changed=0.0)
    fed(limit, BASE)
    assert limit.tick(TICK) == 17  # no cut yet: a tick is enough
    fed(limit, BASE, overloads=1)  # a 503, a timeout, TaskInProgress
    assert limit.tick(TICK * 2) == 8 and not limit.slow_start
    fed(limit, BASE, overloads=3)  # the old limit's workers, still finishing
    assert limit.tick(TICK * 2 + CUT_HOLD / 2) == 8
    fed(limit, BASE)
    assert limit.tick(TICK * 2 + CUT_HOLD) == 9
    fed(limit, BASE)
    assert limit.tick(TICK * 3 + CUT_HOLD) == 9  # a tick is no longer enough
    assert limit.tick(TICK * 2 + CUT_HOLD + HOLD) == 9  # nothing answered since
    fed(limit, BASE)
    assert limit.tick(TICK * 2 + CUT_HOLD + HOLD) == 10
    assert limit.overloads == 4


def test_slow_answers_cut_it_gently_middling_ones_hold_it() -> None:
    limit = AdaptiveLimit(64, limit=10, changed=0.0, slow_start=False)
    fed(limit, BASE)
    assert limit.tick(HOLD) == 11
    fed(limit, BASE * 1.8)  # past near, short of slow: more workers would only queue
    assert limit.tick(HOLD * 2) == 11
    fed(limit, BASE * 3 + 0.03)  # queueing: slower by more than 2x and 20 ms
    assert limit.tick(HOLD * 3) == int(11 * SLOW_DECREASE) == 8
    # vCenter still served every call: the next change waits a hold, not a cut's.
    fed(limit, BASE)
    assert limit.tick(HOLD * 4) == 9


def test_a_slow_tail_on_a_small_limit_still_takes_one_worker_off() -> None:
    limit = AdaptiveLimit(64, limit=4, changed=0.0, slow_start=False)
    fed(limit, BASE)
    limit.tick(HOLD)
    fed(limit, BASE * 3 + 0.03)
    assert limit.tick(HOLD * 2) == 4  # int(5 * 0.8) == 4: one off
    fed(limit, BASE * 3 + 0.03)
    assert limit.tick(HOLD * 3) == 3


def test_a_millisecond_of_noise_on_a_fast_baseline_is_not_overload() -> None:
    limit = AdaptiveLimit(64, limit=8, changed=0.0, slow_start=False)
    fed(limit, 0.001)
    assert limit.tick(HOLD) == 9
    fed(limit, 0.003)  # three times the baseline, yet 2 ms more: the client's own CPU
    assert limit.tick(HOLD * 2) == 10  # near (within the 2 ms floor), not cut


def test_it_stays_within_one_and_its_maximum_and_holds_without_evidence() -> None:
    limit = AdaptiveLimit(3, changed=0.0)
    assert limit.limit == 3
    fed(limit, BASE)
    assert limit.tick(HOLD) == 3
    assert limit.tick(HOLD * 2) == 3  # nothing answered since
    low = AdaptiveLimit(64, limit=1, changed=0.0)
    fed(low, BASE, overloads=1)
    assert low.tick(HOLD) == 1


@pytest.mark.parametrize(("text", "parsed"), [
    ("8", (8, None)), ("auto", (64, 64)), ("auto:16", (16, 16))])
def test_concurrency_is_a_number_or_auto(text: str, parsed: tuple[int, int | None]) -> None:
    assert parse_concurrency(text) == parsed


@pytest.mark.parametrize(("text", "message"), [
    ("0", "0: must be a whole number of at least 1, or auto[:MAX]"),
    ("auto:0", "auto:0: auto:MAX needs a whole number MAX of at least 1"),
    ("auto:x", "auto:x: auto:MAX needs a whole number MAX of at least 1"),
    ("lots", "lots: must be a whole number of at least 1, or auto[:MAX]"),
])
def test_a_concurrency_that_is_neither_is_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_concurrency(text)


@pytest.mark.parametrize(("fault", "overloaded"), [
    (None, False), ("DuplicateName", False), ("HTTP 503", True), ("no answer in 120 s", True),
    ("NotAllowedInCurrentState", True), ("TaskInProgress", True), ("connection", False)])
def test_a_call_is_an_overload_signal_for_503_a_timeout_or_a_busy_fault(
        fault: str | None, overloaded: bool) -> None:
    assert CallRecord("ImportVApp", 0.0, 0.1, fault).overloaded is overloaded


def test_a_call_that_got_no_answer_is_no_latency_sample() -> None:
    limit = AdaptiveLimit(64, changed=0.0)
    limit.observe(CallRecord("ImportVApp", 0.0, 30.0, "connection"))
    limit.observe(CallRecord("ImportVApp", 0.0, 30.0, "cancelled"))
    assert limit.baseline is None
    limit.tick(TICK)
    assert limit.baseline is None and limit.overloads == 0
