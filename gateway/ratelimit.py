"""A token bucket per client, one worker at a time (`settings.rate_limit`, `rate_burst`).

Each client (its credential when it authenticated, else its address) has a bucket of
`burst` requests that refills at `rate` per second; a request takes one, and a client with
an empty bucket is told how long until the next one (HTTP 429 with Retry-After).

Cheap on the hot path: a dict lookup, a few float operations and an in-place update of the
client's bucket; an object is allocated only for a client not seen recently.

Memory is bounded: a bucket idle long enough to have refilled completely is the same as no
bucket, so it can be dropped without changing any answer. Such buckets are swept once a
minute, and whenever `max_clients` are tracked. If that many clients are all active (an
attack from many addresses), the oldest quarter is dropped: those clients get a fresh burst,
which is the price of a bounded table.

Each granian worker keeps its own buckets, so with N workers a client may get up to N times
the rate (connections are spread over workers); the README says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from itertools import islice

SWEEP_SECONDS = 60.0


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """`take(key)` answers 0.0 when the request may go on, else the seconds to wait."""

    def __init__(
        self,
        rate: float,
        burst: int = 0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"the rate limit must be a positive number of requests/s: {rate}")
        if burst < 0:
            raise ValueError(f"the burst must be at least 1 (0: twice the rate): {burst}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1: {max_clients}")
        self.rate = float(rate)
        self.burst = burst or max(1, math.ceil(2 * rate))
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}
        # A bucket idle this long is full again: forgetting it changes nothing.
        self._full_after = self.burst / self.rate
        self._next_sweep = clock() + SWEEP_SECONDS

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable) -> float:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients or now >= self._next_sweep:
                self._sweep(now)
            self._buckets[key] = _Bucket(self.burst - 1.0, now)
            return 0.0
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.stamp = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return 0.0
        bucket.tokens = tokens
        return (1.0 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_SECONDS
        full_after = self._full_after
        buckets = self._buckets
        idle = [key for key, b in buckets.items() if now - b.stamp >= full_after]
        for key in idle:
            del buckets[key]
        if len(buckets) >= self.max_clients:
            # Every tracked client is active: drop the oldest (insertion order) quarter.
            for key in list(islice(buckets, max(1, len(buckets) // 4))):
                del buckets[key]


def retry_after_header(wait: float) -> bytes:
    """Retry-After is whole seconds: round up, so a client that obeys it is let in."""
    return b"%d" % max(1, math.ceil(wait))
