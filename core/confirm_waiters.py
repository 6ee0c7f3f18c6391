"""Waiting on publisher confirms: the waiters on a channel's confirm watermark and the
failed publishes they report, shared by the real channel (core/channel.py) and the
memory:// one (core/memory/publishing.py). Each hands in the error class its waiters raise
(`engine.PublishError`), so this module imports neither engine.

One Future per waiter, never one per message: waiters sit in a heap by the sequence number
they wait for and are woken when the watermark passes it. Two kinds of waiter:

- a waiter for one publish (`wait_one`, behind `wait_confirm_of`) gets that publish's
  failure and no other: an unrelated earlier nack never fails it;
- a waiter for a range (`wait`, behind `wait_confirms`) gets every failure up to its bound
  that neither the publish's own waiter nor another range waiter got first.

A failure is handed at once to the waiters already waiting for it; the others are kept for
waiters still to come, at most `keep` of them (the oldest go first). Every failure was
reported to the publisher's `on_publish_failure` when it happened, so dropping an old one
nobody asked for loses no news.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger("munggoggo.channel")

Failures = list[tuple[int, Exception]]
ErrorFactory = Callable[[Failures], Exception]

KEEP_FAILURES = 1024
"""Failures kept for waiters still to come, per channel (see docs/decisions.md)."""

# A waiter: (seq it waits for, tie-breaker, future, failures handed to it, for one publish?)
_Waiter = tuple[int, int, "asyncio.Future[None]", Failures, bool]


class ConfirmWaiters:
    """The confirm waiters of one channel and the failures kept for them.

    Args:
        error: what a waiter raises, built from the failures it reports
            (`channel.PublishError`).
        keep: how many failures nobody waited for yet are kept for later waiters.
    """

    __slots__ = ("_error", "_heap", "_ids", "_kept", "_owners", "_unranged", "keep")

    def __init__(self, error: ErrorFactory, keep: int = KEEP_FAILURES) -> None:
        self._error = error
        self.keep = keep
        self._heap: list[_Waiter] = []
        self._ids = itertools.count()  # ties in the heap never compare Futures
        self._owners: dict[int, list[_Waiter]] = {}  # seq -> waiters for that one publish
        self._kept: dict[int, Exception] = {}  # seq -> failure, oldest first
        self._unranged: set[int] = set()  # kept failures no range waiter got yet

    @property
    def kept(self) -> int:
        """How many failures are kept for waiters still to come."""
        return len(self._kept)

    async def wait(
        self,
        loop: asyncio.AbstractEventLoop,
        upto: int,
        confirmed_through: int,
        timeout: float | None,
    ) -> None:
        """Wait until the watermark reaches `upto`.

        Args:
            loop: the channel's event loop.
            upto: the highest sequence number waited for.
            confirmed_through: the channel's watermark now.
            timeout: seconds, or None to wait as long as it takes.

        Raises:
            PublishError: with the failures up to `upto` that no other waiter got.
            TimeoutError: the watermark did not reach `upto` in time.
        """
        given: Failures = []
        if confirmed_through < upto:
            fut: asyncio.Future[None] = loop.create_future()
            waiter = (upto, next(self._ids), fut, given, False)
            heapq.heappush(self._heap, waiter)
            try:
                await _until(fut, timeout)
            except BaseException:
                self._unreport(given)
                raise
        unranged = self._unranged
        if unranged:
            mine = sorted(seq for seq in unranged if seq <= upto)
            if mine:
                unranged.difference_update(mine)
                kept = self._kept
                given.extend((seq, kept[seq]) for seq in mine)
        if given:
            given.sort(key=_seq)
            raise self._error(given)

    async def wait_one(
        self,
        loop: asyncio.AbstractEventLoop,
        seq: int,
        confirmed_through: int,
        timeout: float | None,
    ) -> None:
        """Wait until publish `seq` is settled.

        Args:
            loop: the channel's event loop.
            seq: the publish's sequence number.
            confirmed_through: the channel's watermark now.
            timeout: seconds, or None to wait as long as it takes.

        Raises:
            PublishError: with this publish's failure, the only one it reports.
            TimeoutError: the publish was not settled in time.
        """
        given: Failures = []
        if confirmed_through < seq:
            fut: asyncio.Future[None] = loop.create_future()
            waiter = (seq, next(self._ids), fut, given, True)
            heapq.heappush(self._heap, waiter)
            owners = self._owners.setdefault(seq, [])
            owners.append(waiter)
            try:
                await _until(fut, timeout)
            except BaseException:
                self._keep_for_later(given)
                raise
            finally:
                owners.remove(waiter)
                if not owners:
                    del self._owners[seq]
        if not given:
            error = self._kept.pop(seq, None)
            if error is None:
                return
            self._unranged.discard(seq)
            given.append((seq, error))
        raise self._error(given)

    def wake(self, confirmed_through: int) -> None:
        """Wake every waiter whose publishes are all settled now."""
        heap = self._heap
        while heap and heap[0][0] <= confirmed_through:
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_result(None)

    def add(self, failures: Failures) -> None:
        """Hand failures to the waiters waiting for them, keep the rest (the callback is
        `report`'s business)."""
        if len(failures) > 1:
            failures = sorted(failures, key=_seq)
        ranged: list[_Waiter] | None = None
        first = 0  # in `ranged`: the first waiter whose bound covers the failure
        for failure in failures:
            seq = failure[0]
            owners = self._owners.get(seq)
            if owners:
                for waiter in owners:
                    waiter[3].append(failure)
                    if not waiter[2].done():
                        waiter[2].set_result(None)  # a failed publish is settled
                continue
            if ranged is None:
                # The range waiters still waiting, lowest bound first: the first to wake.
                ranged = sorted(w for w in self._heap if not w[4] and not w[2].cancelled())
            while first < len(ranged) and ranged[first][0] < seq:
                first += 1
            self._kept[seq] = failure[1]  # kept for this publish's own waiter, still to come
            if first < len(ranged):
                ranged[first][3].append(failure)
            else:
                self._unranged.add(seq)
        self._trim()

    def record(self, failures: Failures, callback: Callable[[Failures], None] | None) -> None:
        """Keep failures for the waiters and tell the publisher's callback now."""
        self.add(failures)
        report(failures, callback)

    def _trim(self) -> None:
        """Drop the oldest kept failures beyond `keep` (reported to the callback already)."""
        kept = self._kept
        excess = len(kept) - self.keep
        if excess > 0:
            for seq in list(itertools.islice(kept, excess)):
                del kept[seq]
                self._unranged.discard(seq)

    def _unreport(self, given: Failures) -> None:
        """A range waiter gave up: what it was handed goes to the next range waiter."""
        for seq, _error in given:
            if seq in self._kept:
                self._unranged.add(seq)

    def _keep_for_later(self, given: Failures) -> None:
        """A waiter for one publish gave up after its failure came: keep it for the next."""
        for seq, error in given:
            self._kept[seq] = error
            self._unranged.add(seq)
        self._trim()


async def _until(fut: asyncio.Future[None], timeout: float | None) -> None:
    if timeout is None:
        await fut
    else:
        await asyncio.wait_for(fut, timeout)


def _seq(failure: tuple[int, Exception]) -> int:
    return failure[0]


def report(failures: Failures, callback: Callable[[Failures], None] | None) -> None:
    """Call a publisher's `on_publish_failure`; its own exception is logged, not raised."""
    if failures and callback is not None:
        try:
            callback(failures)
        except Exception:
            log.exception("on_publish_failure callback failed")
