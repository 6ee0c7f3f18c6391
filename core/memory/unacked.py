"""The deliveries a memory:// channel handed out that are not settled yet, and settling them.

Keyed by delivery tag in delivery order, each with the queue it came from and the
consumer it went to (None for Basic.Get). An ack drops it; a nack or reject with requeue
puts it back in its queue where it was (marked redelivered); without requeue it is
dead-lettered (or dropped). A settle frees room under its consumer's prefetch. When the
channel closes, everything still unacked goes back to its queue, as RabbitMQ does.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from .content import Entry
from .queue import Queue, Subscription

if TYPE_CHECKING:
    from .broker import MemoryBroker

Outstanding = tuple[Entry, Queue, Subscription | None]


class Unacked(OrderedDict[int, Outstanding]):
    """One channel's unsettled deliveries by tag (an OrderedDict: adding one is a store)."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__()
        self.broker = broker

    def take(self, tag: int, multiple: bool) -> list[Outstanding] | None:
        """The deliveries an ack/nack/reject of `tag` covers, removed (RabbitMQ's
        collect_acks); None for a tag that is not unacked (RabbitMQ closes the channel)."""
        if multiple and tag == 0:
            taken = list(self.values())
            self.clear()
            return taken
        if tag not in self:
            return None
        if not multiple:
            return [self.pop(tag)]
        taken = []
        while self:
            first = next(iter(self))
            if first > tag:
                break
            taken.append(self.popitem(last=False)[1])
        return taken

    def settle(self, tags: list[int], requeue: bool | None) -> None:
        """Settle the given tags (those still unacked) like `settle_taken`."""
        taken = [self.pop(t) for t in tags if t in self]
        if taken:
            self.settle_taken(taken, requeue)

    def settle_taken(self, taken: list[Outstanding], requeue: bool | None) -> None:
        """requeue None: acked; True: back to the queue; False: dead-lettered or dropped."""
        broker = self.broker
        back: dict[Queue, list[Entry]] = {}
        for entry, queue, sub in taken:
            if sub is not None:
                sub.unacked -= 1
                if sub.active:
                    broker.mark(queue)
            if requeue is None or queue.deleted:
                continue
            if requeue:
                entry.redelivered = True
                back.setdefault(queue, []).append(entry)
            else:
                broker.dead_letter(queue, entry, "rejected")
        for queue, entries in back.items():
            queue.requeue(entries)

    def requeue_all(self) -> None:
        """The channel closed: every unacked delivery goes back to its queue, marked
        redelivered (its consumer is gone already, so nothing is handed straight back)."""
        if not self:
            return
        by_queue: dict[Queue, list[Entry]] = {}
        for entry, queue, _sub in self.values():
            entry.redelivered = True
            by_queue.setdefault(queue, []).append(entry)
        self.clear()
        for queue, entries in by_queue.items():
            if not queue.deleted:
                queue.requeue(entries)
