"""Upload limits: the bandwidth token bucket and its parser."""

from __future__ import annotations

import pytest

from asyncovf.engine import limits
from asyncovf.engine.limits import TokenBucket, parse_bandwidth

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def current_time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_token_bucket_starts_empty_so_the_first_second_is_no_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(limits.anyio, "current_time", clock.current_time)
    monkeypatch.setattr(limits.anyio, "sleep", clock.sleep)
    bucket = TokenBucket(1000)
    # A full bucket would send these at once and a second's more by t=1: twice the rate.
    await bucket.consume(1000)
    assert clock.slept == [1.0]
    await bucket.consume(500)
    await bucket.consume(500)
    assert clock.slept == [1.0, 0.5, 0.5]
    clock.now += 10  # a quiet period refills at most one second's worth
    await bucket.consume(1500)
    assert clock.slept[-1] == pytest.approx(0.5)


@pytest.mark.parametrize(("text", "rate"), [("100M", 100 * 2**20), ("1.5G", 1.5 * 2**30),
                                            ("800k", 800 * 1024), ("4096", 4096.0),
                                            ("10MB/s", 10 * 2**20)])
def test_parse_bandwidth(text: str, rate: float) -> None:
    assert parse_bandwidth(text) == rate


@pytest.mark.parametrize("text", ["fast", "-1M", "0"])
def test_parse_bandwidth_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="bandwidth"):
        parse_bandwidth(text)
