"""Shared limits on uploads: per-host and per-datastore caps, and a global bandwidth.

Pure bookkeeping plus anyio primitives; no vCenter knowledge. All state lives
in the instance the engine creates for one run: nothing module-level.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Final

import anyio


class KeyedLimiter:
    """At most ``limit`` holders per key (e.g. per ESXi host or per datastore)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    def slot(self, key: str) -> AbstractAsyncContextManager[object]:
        if self.limit is None:
            return _no_limit()
        limiter = self._limiters.get(key)
        if limiter is None:  # no await between the check and the insert: no race
            limiter = self._limiters[key] = anyio.CapacityLimiter(self.limit)
        return limiter


@asynccontextmanager
async def _no_limit() -> AsyncIterator[object]:
    yield None


@asynccontextmanager
async def both(*slots: AbstractAsyncContextManager[object]) -> AsyncIterator[None]:
    """Hold several slots at once, released in reverse order."""
    async with AsyncExitStack() as stack:
        for slot in slots:
            await stack.enter_async_context(slot)
        yield


class TokenBucket:
    """A global bandwidth limit shared by every upload: ``rate`` bytes per second.

    ``consume(n)`` waits until ``n`` bytes may be sent. The bucket holds at most
    one second of tokens, so a quiet period does not allow a later burst far
    above the limit. It starts empty: a full bucket would let the first second
    of the run send twice the rate (its tokens, then the refill), which a load
    test's throughput chart shows as a spike at t=0 the operator never asked for.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("bandwidth must be positive")
        self.rate = rate
        self._tokens = 0.0
        self._updated = anyio.current_time()
        self._lock = anyio.Lock()

    async def consume(self, amount: int) -> None:
        async with self._lock:  # one waiter at a time keeps the order fair
            now = anyio.current_time()
            self._tokens = min(self.rate, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= amount
            if self._tokens < 0:
                await anyio.sleep(-self._tokens / self.rate)
                self._updated = anyio.current_time()
                self._tokens = 0.0


#: Upload buffers for the whole run aim to stay near this many bytes of chunks.
UPLOAD_BUFFER_BUDGET: Final = 16 * 2**20
MAX_CHUNK: Final = 2**20
MIN_CHUNK: Final = 128 * 2**10


def chunk_size_for(concurrency: int) -> int:
    """The upload chunk size for ``concurrency`` workers.

    Each upload in flight holds a few chunks (one being read, one queued, one
    being sent, the transport's copy), so memory grows with workers x chunk
    size. Up to 16 workers a 1 MiB chunk costs little; beyond, chunks shrink so
    the total stays near :data:`UPLOAD_BUFFER_BUDGET` — at 64 workers each
    upload's share of the link is small anyway, and 256 KiB chunks keep up.
    """
    size = UPLOAD_BUFFER_BUDGET // max(1, concurrency)
    size = max(MIN_CHUNK, min(MAX_CHUNK, size))
    return size - size % (64 * 2**10)


def parse_size(text: str, what: str = "size") -> int:
    """``256K``, ``1M`` (binary multiples) or plain bytes."""
    value = text.strip().upper().removesuffix("B")
    factors = {"K": 2**10, "M": 2**20, "G": 2**30}
    factor = factors.get(value[-1:], 1)
    number = value[:-1] if value[-1:] in factors else value
    try:
        size = int(float(number) * factor)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected e.g. 256K or 1M") from None
    if size <= 0:
        raise ValueError(f"{what} {text!r} must be positive")
    return size


def parse_bandwidth(text: str) -> float:
    """``100M``, ``1.5G``, ``800k`` (bytes per second, binary multiples) or plain bytes."""
    value = text.strip().upper().removesuffix("/S").removesuffix("B")
    factors = {"K": 2**10, "M": 2**20, "G": 2**30}
    factor = factors.get(value[-1:], 1)
    number = value[:-1] if value[-1:] in factors else value
    try:
        rate = float(number) * factor
    except ValueError:
        raise ValueError(f"bandwidth {text!r}: expected e.g. 100M (bytes per second)") from None
    if rate <= 0:
        raise ValueError(f"bandwidth {text!r} must be positive")
    return rate


__all__ = ["KeyedLimiter", "TokenBucket", "both", "chunk_size_for", "parse_bandwidth",
           "parse_size"]
