"""Ready messages of a memory:// queue, in the order RabbitMQ delivers them.

A classic queue is one FIFO (a deque). A queue declared with `x-max-priority` is a stack
of FIFOs, one per priority from the maximum down to 0, as in RabbitMQ's
rabbit_priority_queue: a message goes to min(its priority, the maximum), one without a
priority to 0; the head is the oldest message of the highest non-empty priority. That
head is what a consumer or Basic.Get gets next, what x-max-length drops first (drop-head)
and the only message whose TTL is checked, so expiry, overflow and delivery need nothing
of their own. A requeued message goes back to its own priority, ahead of newer ones.
RabbitMQ 4.x takes a maximum of 0 as 1 (3.10 as 0, one FIFO); memory:// follows 4.x.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol


class _Entry(Protocol):
    seq: int  # publish order
    content: Any  # has peek() -> Properties


def _seq(entry: _Entry) -> int:
    return entry.seq


def put_back(ready: deque[Any], entries: list[Any]) -> None:
    """Requeue `entries` into the FIFO `ready` where they were: merged by publish order
    with the ready messages older than the newest of them, ahead of everything newer."""
    entries.sort(key=_seq)
    last = entries[-1].seq
    older: list[Any] = []
    while ready and ready[0].seq < last:
        older.append(ready.popleft())
    ready.extendleft(reversed(list(heapq.merge(older, entries, key=_seq))))


class PriorityReady:
    """The ready messages of a priority queue, with the deque operations the queue uses
    (len, truth, [0], append, popleft, clear) and `requeue`."""

    __slots__ = ("_len", "_levels", "_top", "maximum")

    def __init__(self, maximum: int) -> None:
        # RabbitMQ 4.x: max(1, min(x-max-priority, 255)); declare checks keep it <= 255.
        self.maximum = max(1, min(maximum, 255))
        self._levels: list[deque[Any]] = [deque() for _ in range(self.maximum + 1)]
        self._top = -1  # the highest non-empty level, -1 when empty
        self._len = 0

    def level(self, entry: _Entry) -> int:
        """The priority `entry` is queued at: its own, capped at the maximum; 0 if none."""
        priority = entry.content.peek().priority
        if priority is None:
            return 0
        return priority if priority < self.maximum else self.maximum

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __getitem__(self, index: int) -> Any:
        if index != 0 or not self._len:
            raise IndexError("only the head of a priority queue is readable")
        return self._levels[self._top][0]

    def __iter__(self) -> Iterator[Any]:
        """Every ready message, in delivery order."""
        for level in reversed(self._levels):
            yield from level

    def append(self, entry: _Entry) -> None:
        level = self.level(entry)
        self._levels[level].append(entry)
        self._len += 1
        if level > self._top:
            self._top = level

    def popleft(self) -> Any:
        if not self._len:
            raise IndexError("pop from an empty priority queue")
        levels = self._levels
        entry = levels[self._top].popleft()
        self._len -= 1
        top = self._top
        while top >= 0 and not levels[top]:
            top -= 1
        self._top = top
        return entry

    def clear(self) -> None:
        for level in self._levels:
            level.clear()
        self._len = 0
        self._top = -1

    def requeue(self, entries: list[Any]) -> None:
        """Put messages back at their priorities where they were (see `put_back`)."""
        by_level: dict[int, list[Any]] = {}
        for entry in entries:
            by_level.setdefault(self.level(entry), []).append(entry)
        for level, group in by_level.items():
            put_back(self._levels[level], group)
            self._len += len(group)
            if level > self._top:
                self._top = level


def ready_queue(arguments: dict[str, Any]) -> deque[Any] | PriorityReady:
    """The ready store for a queue declared with `arguments`."""
    maximum = arguments.get("x-max-priority")
    if isinstance(maximum, int) and not isinstance(maximum, bool):
        return PriorityReady(maximum)
    return deque()


def requeue(ready: deque[Any] | PriorityReady, entries: list[Any]) -> None:
    """Put requeued messages back into either kind of ready store."""
    if type(ready) is PriorityReady:
        ready.requeue(entries)
    else:
        put_back(ready, entries)  # type: ignore[arg-type]
