"""`AgentConfig.max_concurrent_calls`: at most N exposed calls of an agent run at once.

A request that finds every slot taken waits, unacked, in arrival order: the broker counts it
against the inbox prefetch, so beyond that many the rest wait in the inbox queue itself, and
nothing is dropped. When a call ends (its reply sent, or handed back by a stop) its slot
goes to the oldest waiting request, which is then served like a new one (its deadline
checked first: one that expired while waiting is never started).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["CallSlots"]


class CallSlots:
    """The slots of one agent's exposed calls, and the requests waiting for one.

    Args:
        limit: calls that may run at once; None: no limit (nothing is counted).
        start: serves a waiting request once a slot is taken for it; it must give the
            slot back (`release`) when the call ends, however it ends.

    Attributes:
        limit: calls that may run at once, or None.
        running: calls running now (counted only with a limit).
        peak: the most calls that ran at once so far.
    """

    __slots__ = ("_draining", "_start", "_waiting", "limit", "peak", "running")

    def __init__(self, limit: int | None, start: Callable[[Any], None]) -> None:
        self.limit = limit
        self.running = 0
        self.peak = 0
        self._start = start
        self._waiting: deque[Any] = deque()
        self._draining = False

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    def admit(self, request: Any) -> bool:
        """Take a slot for a new request, or queue it.

        Args:
            request: the request (an unacked inbox message).

        Returns:
            True when it may run now (a slot is taken for it, or there is no limit);
            False when it waits (it is started later through `start`).
        """
        if self.limit is None:
            return True
        if self.running < self.limit and not self._waiting:
            self._take()
            return True
        self._waiting.append(request)
        return False

    def _take(self) -> None:
        self.running += 1
        if self.running > self.peak:
            self.peak = self.running

    def release(self) -> None:
        """A call ended: its slot goes to the oldest waiting requests, as many as fit.

        A loop, not recursion: a waiting call that ends at once (a plain method) releases
        its slot inside `start`, and the loop here goes on with the next one.
        """
        if self.limit is None:
            return
        self.running -= 1
        if self._draining:
            return
        self._draining = True
        try:
            while self._waiting and self.running < self.limit:
                request = self._waiting.popleft()
                self._take()
                self._start(request)
        finally:
            self._draining = False

    def hand_back(self) -> int:
        """The agent stops: every waiting request goes back to its queue, unstarted, for a
        successor (before the inbox is released: a queue holding only unacked messages
        counts as empty, and deleting it would lose them).

        Returns:
            How many went back.
        """
        returned = 0
        while self._waiting:
            self._waiting.popleft().nack(requeue=True)
            returned += 1
        return returned
