"""A classic queue of the memory:// broker, and its consumers as the broker sees them.

A `Queue` keeps its ready messages in order (one FIFO, or the per-priority FIFOs of an
`x-max-priority` queue, priority.py) and hands them round-robin to the `Subscription`s
with room under their prefetch (only the oldest one with `x-single-active-consumer`).
It applies RabbitMQ's classic-queue rules: a message meeting an idle consumer never
waits; message TTL (the queue's or the message's, the lower) is checked at the head only;
`x-max-length` / `x-max-length-bytes` drop the head (or refuse the publish, with
`x-overflow: reject-publish[-dlx]`); `x-expires` deletes a queue unused for that long;
an auto-delete queue goes with its last consumer. Dead-lettering, deletion and the
per-tick dispatch are the broker's (broker.py), which the queue calls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..engine import Consumer, QueueDeclareOk
from . import priority
from .content import Content, Entry

if TYPE_CHECKING:
    from .broker import MemoryBroker
    from .channel import MemoryChannel
    from .connection import MemoryConnection

# Message TTLs count on the monotonic clock read fresh, never the loop's time (uvloop's
# is cached per loop iteration and kept in whole milliseconds): a message never expires
# before its TTL has passed, so a delay queue never delivers early (core/delays.py). The
# TTL timer is armed this much after the due time, as loop timers may fire up to the
# loop clock's resolution early; one that still fires early is armed again.
_EXPIRY_SLACK = 0.001
_clock = time.monotonic


class Subscription:
    """A consumer as the broker sees it: where it reads and how much it may hold."""

    __slots__ = (
        "active",
        "channel",
        "generation",
        "no_ack",
        "prefetch",
        "queue",
        "record",
        "tag",
        "unacked",
    )

    def __init__(
        self, channel: MemoryChannel, record: Consumer, queue: Queue, prefetch: int
    ) -> None:
        self.channel = channel
        self.record = record  # the application's consumer this serves
        self.tag = record.tag
        self.queue = queue
        self.no_ack = record.no_ack
        self.prefetch = prefetch
        self.generation = channel.generation
        self.unacked = 0
        self.active = True

    def has_capacity(self) -> bool:
        """Whether it may take one more message (no_ack, no prefetch, or room under it)."""
        return self.no_ack or not self.prefetch or self.unacked < self.prefetch


class Queue:
    """A classic queue: ready messages in order, round-robin consumers, TTL, DLX, limits."""

    def __init__(
        self,
        broker: MemoryBroker,
        name: str,
        *,
        durable: bool = False,
        owner: MemoryConnection | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        pseudo: bool = False,
    ) -> None:
        self.broker = broker
        self.name = name
        self.durable = durable
        self.owner = owner  # the connection of an exclusive queue
        self.auto_delete = auto_delete
        self.arguments = dict(arguments or {})
        self.pseudo = pseudo  # a direct reply-to target, not in broker.queues
        args = self.arguments
        self.ttl: int | None = args.get("x-message-ttl")
        self.dlx: str | None = args.get("x-dead-letter-exchange")
        self.dlrk: str | None = args.get("x-dead-letter-routing-key")
        self.max_length: int | None = args.get("x-max-length")
        self.max_bytes: int | None = args.get("x-max-length-bytes")
        self.overflow: str = args.get("x-overflow", "drop-head")
        self.expires: int | None = args.get("x-expires")
        # Only the oldest consumer gets messages; the next takes over when it goes.
        self.single_active = args.get("x-single-active-consumer") is True
        # A deque, or the per-priority FIFOs of an x-max-priority queue (same operations).
        self.ready: deque[Entry] | priority.PriorityReady = priority.ready_queue(args)
        self.bytes = 0  # body bytes of ready messages, for x-max-length-bytes
        self.subs: deque[Subscription] = deque()  # rotated: the head gets the next message
        self.exclusive_sub: Subscription | None = None
        self.had_consumers = False
        self.deleted = False
        self._ttl_timer: asyncio.TimerHandle | None = None
        self._ttl_timer_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<queue {self.name!r} ready={len(self.ready)} consumers={len(self.subs)}>"

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.subs)

    def declare_ok(self) -> QueueDeclareOk:
        """The answer to a declare of this queue (after expiring what is due)."""
        self.expire_head(self.broker.loop.time())
        return QueueDeclareOk(self.name, len(self.ready), len(self.subs))

    def push(self, content: Content) -> bool:
        """Enqueue (or hand straight to a consumer); False if x-overflow refused it."""
        broker = self.broker
        entry = Entry(content, next(broker.sequence))
        # Like RabbitMQ, a message meeting an idle consumer never waits in the queue:
        # it neither counts towards x-max-length nor can it expire.
        if self.subs and not self.ready and self._assign(entry):
            return True
        ttl = self.ttl
        if content.ttl is not None and (ttl is None or content.ttl < ttl):
            ttl = content.ttl
        if ttl is not None:
            if ttl == 0:  # "deliver now or never"
                broker.dead_letter(self, entry, "expired")
                return True
            entry.expires_at = _clock() + ttl / 1000
        size = len(content.body)
        if self.max_length is not None or self.max_bytes is not None:
            if self.overflow != "drop-head" and self._full(size):
                if self.overflow == "reject-publish-dlx":
                    broker.dead_letter(self, entry, "maxlen")
                return False
            self.ready.append(entry)
            self.bytes += size
            while self._over():
                self._drop_head("maxlen")
        else:
            self.ready.append(entry)
            self.bytes += size
        self._arm_ttl_timer()  # the head may be new (first message, or maxlen dropped one)
        if self.subs:
            broker.mark(self)
        return True

    def _full(self, size: int) -> bool:
        return (self.max_length is not None and len(self.ready) >= self.max_length) or (
            self.max_bytes is not None and self.bytes + size > self.max_bytes
        )

    def _over(self) -> bool:
        return (self.max_length is not None and len(self.ready) > self.max_length) or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        )

    def _drop_head(self, reason: str) -> None:
        entry = self.ready.popleft()
        self.bytes -= len(entry.content.body)
        self.broker.dead_letter(self, entry, reason)

    def _assign(self, entry: Entry) -> bool:
        """Give a message to the next consumer (round-robin) with room under its prefetch."""
        subs = self.subs
        if self.single_active:
            sub = subs[0]
            if not sub.has_capacity():
                return False
            self.broker.hand_over(sub, sub.channel.deliver(sub, entry, self))
            return True
        for _ in range(len(subs)):
            sub = subs[0]
            subs.rotate(-1)
            if sub.has_capacity():
                self.broker.hand_over(sub, sub.channel.deliver(sub, entry, self))
                return True
        return False

    def deliver(self, now: float) -> None:
        """Hand ready messages to consumers while any has room; expire what is due."""
        ready = self.ready
        while ready and self.subs:
            entry = ready[0]
            if entry.expires_at is not None and _clock() >= entry.expires_at:
                self._drop_head("expired")
                continue
            if not self._assign(entry):
                break
            ready.popleft()
            self.bytes -= len(entry.content.body)
        self.expire_head(now)

    def expire_head(self, now: float) -> None:
        """Dead-letter the expired messages at the head (classic-queue semantics: only
        messages at the head expire). `now` is the loop's time; expiry reads the
        monotonic clock itself (see _EXPIRY_SLACK)."""
        ready = self.ready
        while ready:
            due = ready[0].expires_at
            if due is None or _clock() < due:
                break
            self._drop_head("expired")
        self._arm_ttl_timer()

    def _arm_ttl_timer(self) -> None:
        if not self.ready or self.deleted:
            return
        due = self.ready[0].expires_at
        if due is None or (self._ttl_timer is not None and self._ttl_timer_at <= due):
            return
        if self._ttl_timer is not None:
            self._ttl_timer.cancel()
        self._ttl_timer_at = due
        loop = self.broker.loop
        when = loop.time() + max(0.0, due - _clock()) + _EXPIRY_SLACK
        self._ttl_timer = loop.call_at(when, self._ttl_timer_fired)

    def _ttl_timer_fired(self) -> None:
        self._ttl_timer = None
        if not self.deleted:
            self.broker.mark(self)

    def take(self) -> Entry | None:
        """Basic.Get: the head message, after expiring what is due."""
        self.expire_head(self.broker.loop.time())
        if not self.ready:
            return None
        entry = self.ready.popleft()
        self.bytes -= len(entry.content.body)
        self._arm_ttl_timer()
        return entry

    def requeue(self, entries: list[Entry]) -> None:
        """Put messages back where they were (by publish order), ahead of newer ones."""
        priority.requeue(self.ready, entries)
        self.bytes += sum(len(e.content.body) for e in entries)
        if self._ttl_timer is not None:
            self._ttl_timer.cancel()
            self._ttl_timer = None
        # RabbitMQ hands a requeued message to a consumer with room at once, so
        # redeliveries follow the order of the nacks, not of the original publishes.
        self.deliver(self.broker.loop.time())

    def purge(self) -> int:
        """Drop every ready message; returns how many there were."""
        count = len(self.ready)
        self.ready.clear()
        self.bytes = 0
        return count

    def add_sub(self, sub: Subscription, exclusive: bool) -> None:
        """A consumer starts reading this queue."""
        self.subs.append(sub)
        self.had_consumers = True
        if exclusive:
            self.exclusive_sub = sub
        self.broker.mark(self)

    def remove_sub(self, sub: Subscription) -> None:
        """A consumer goes; an auto-delete queue goes with its last one."""
        with contextlib.suppress(ValueError):
            self.subs.remove(sub)
        if self.exclusive_sub is sub:
            self.exclusive_sub = None
        if not self.subs:
            if self.auto_delete and self.had_consumers:
                self.broker.delete_queue(self)
            else:
                self.touch()

    def touch(self) -> None:
        """The queue was used: restart its x-expires countdown."""
        if self.expires is None or self.deleted:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.broker.loop.call_later(self.expires / 1000, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self.subs and not self.deleted:
            self.broker.delete_queue(self)

    def stop_timers(self) -> None:
        """The queue is deleted: its TTL and x-expires timers must not fire."""
        for timer in (self._ttl_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._ttl_timer = self._idle_timer = None
