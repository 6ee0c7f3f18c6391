"""Waiting on publisher confirms: the waiters on a channel's confirm watermark and the
failed publishes they report, shared by the real channel (core/channel.py) and the
memory:// one (core/memory.py).

One Future per waiter, never one per message: waiters sit in a heap by the sequence number
they wait for and are woken when the watermark passes it. A publish that failed (nacked, or
lost with its connection) is kept until one `wait` covering it takes it and raises
PublishError with it, so each failure is reported to one waiter only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger("munggoggo.channel")

Failures = list[tuple[int, Exception]]


class ConfirmWaiters:
    __slots__ = ("_failures", "_heap", "_ids")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()  # ties in the heap never compare Futures
        self._failures: Failures = []

    async def wait(
        self,
        loop: asyncio.AbstractEventLoop,
        upto: int,
        confirmed_through: int,
        timeout: float | None,
    ) -> None:
        """Until the watermark reaches `upto`; then PublishError with the failures up to it."""
        if confirmed_through < upto:
            fut: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._heap, (upto, next(self._ids), fut))
            if timeout is None:
                await fut
            else:
                await asyncio.wait_for(fut, timeout)
        failures = self._failures
        if failures and failures[0][0] <= upto:
            from .channel import PublishError  # channel.py imports this module

            mine = [f for f in failures if f[0] <= upto]
            self._failures = [f for f in failures if f[0] > upto]
            raise PublishError(mine)

    def wake(self, confirmed_through: int) -> None:
        """Wake every waiter whose publishes are all settled now."""
        heap = self._heap
        while heap and heap[0][0] <= confirmed_through:
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_result(None)

    def add(self, failures: Failures) -> None:
        """Keep failures for the waiters (the callback is `report`'s business)."""
        self._failures.extend(failures)
        self._failures.sort(key=lambda f: f[0])

    def record(self, failures: Failures, callback: Callable[[Failures], None] | None) -> None:
        """Keep failures for the waiters and tell the publisher's callback now."""
        self.add(failures)
        report(failures, callback)


def report(failures: Failures, callback: Callable[[Failures], None] | None) -> None:
    """Call a publisher's `on_publish_failure`; its own exception is logged, not raised."""
    if failures and callback is not None:
        try:
            callback(failures)
        except Exception:
            log.exception("on_publish_failure callback failed")
