"""`MemoryChannel`: one channel of a `MemoryConnection`, with `channel.Channel`'s API.

Behaves like the real client's channel, including where that is asynchronous: deliveries,
returns and cancel notifications come from `loop.call_soon`, never from inside publish or
ack, and a consumer gets one batch per loop tick. A method the broker refuses raises its
`BrokerError` and closes the channel; a publish or ack it refuses returns normally and
closes the channel a tick later (as the broker's Channel.Close would arrive), failing the
publishes it discarded. A channel closed by an error reopens by itself with `generation`
+ 1 and its consumers restored, as the real client reopens it. The broker side of the
topology methods is topology.py (`TopologyMethods`, mixed in), publishing and confirms
publishing.py (`PublishMethods`, mixed in), unsettled deliveries unacked.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._speedups import DELIVER, GET_OK, Delivery
from ..amqp.errors import BrokerError, ConnectionLost, LocalProtocolError
from ..engine import Consumer, DeliveryCallback
from ..metrics import FastHistogram
from . import errors as methods
from . import replyto
from .content import Entry
from .errors import check_name, error, rs
from .publishing import PublishLedger, PublishMethods
from .queue import Queue, Subscription
from .topology import ChannelTopology, TopologyMethods
from .unacked import Outstanding, Unacked

if TYPE_CHECKING:
    from .connection import MemoryConnection

log = logging.getLogger("munggoggo.memory")


class MemoryChannel(TopologyMethods, PublishMethods):
    """One channel of a `MemoryConnection`, with `channel.Channel`'s API and semantics.

    Made (and opened) by `MemoryConnection.channel()`.

    Args:
        connection: its connection.
        channel_id: its channel number.
        confirms: publisher confirms on (they are immediate here).
        max_unconfirmed: accepted for parity with the real channel.
    """

    def __init__(
        self,
        connection: MemoryConnection,
        channel_id: int,
        *,
        confirms: bool = True,
        max_unconfirmed: int = 1024,
    ) -> None:
        self.connection = connection
        self.id = channel_id
        self.generation = 0  # bumps on every (re)open; delivery tags of older ones are void
        self.confirms = confirms
        self.max_unconfirmed = max_unconfirmed  # accepted for parity; confirms are instant
        self.on_return: Callable[[Delivery], None] | None = None
        self.on_publish_failure: Callable[[list[tuple[int, Exception]]], None] | None = None
        # The direct reply-to consumer (replyto.py), read by the broker on publish.
        self.reply_consumer: Subscription | None = None
        self._loop = connection.loop
        self._broker = connection.broker
        self._topology = ChannelTopology(connection.broker, connection)
        self._consumers: dict[str, Consumer] = {}  # what the application asked for
        self._subs: dict[str, Subscription] = {}  # what the broker has on this channel now
        self._unacked = Unacked(connection.broker)
        self._next_tag = 1
        self._qos: tuple[int, int] | None = None
        self._tags = itertools.count(1)
        self._open_event = asyncio.Event()
        self._live = False  # the broker side of the channel is open
        self._closed_by_user = False
        # Between a refused publish/ack and the moment the client "receives" the close:
        self._closing_error: BrokerError | None = None
        self._landing: asyncio.Future[None] | None = None
        self._reopen_handle: asyncio.Handle | None = None
        self._ledger = PublishLedger(self)
        self._later: list[int] = []  # ack_later tags, acked at the end of the tick
        self._unyielded = 0  # publishes since the last drain()
        self.acked = 0  # messages acked with ack_later / nacked or rejected (counters)
        self.nacked = 0
        # Same metric as the real channel; confirms are immediate here, so samples are 0.
        self.sample_confirms = True
        self.confirm_seconds = FastHistogram()
        self._open()

    # ------------------------------------------------------------------ state

    @property
    def is_open(self) -> bool:
        """As `ChannelProtocol.is_open`: open and usable now (not reopening, not closed)."""
        return self._open_event.is_set()

    def is_consuming(self, consumer_tag: str) -> bool:
        """Whether the consumer `consumer_tag` is consuming on this channel (as
        `Channel.is_consuming`).
        """
        return consumer_tag in self._consumers

    @property
    def unconfirmed(self) -> int:
        """As `ChannelProtocol.unconfirmed`: publishes awaiting their confirm."""
        return self._ledger.unconfirmed

    @property
    def confirmed_through(self) -> int:
        """As `ChannelProtocol.confirmed_through`: every publish up to this sequence
        number is settled.
        """
        return self._ledger.confirmed_through()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed" if self._closed_by_user else "recovering"
        return f"<MemoryChannel {self.id} {state} gen={self.generation}>"

    def _open(self) -> None:
        self._live = True
        self._next_tag = 1
        self.generation += 1
        self._open_event.set()

    async def _enter(self) -> None:
        """What the real channel's _rpc does before a method: wait until it is open.

        A method sent while the broker is already closing the channel is answered by that
        close, so it raises the error that closed the channel.
        """
        if self._closed_by_user:
            raise LocalProtocolError(f"channel {self.id} is closed")
        await self._raise_if_closing()
        await asyncio.sleep(0)  # a round trip's worth: let due deliveries run first
        while True:
            if self._closed_by_user:
                raise LocalProtocolError(f"channel {self.id} is closed")
            await self._raise_if_closing()
            if self.is_open:
                return
            await self._wait_open()

    async def _raise_if_closing(self) -> None:
        error = self._closing_error
        if error is not None:
            assert self._landing is not None
            await asyncio.shield(self._landing)
            raise error

    async def _wait_open(self) -> None:
        conn = self.connection
        if conn.is_closed:
            raise ConnectionLost(f"connection to {conn.url} is closed")
        waiter = asyncio.ensure_future(self._open_event.wait())
        closed: asyncio.Future[Any] = conn.closed_future
        await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            raise ConnectionLost(f"connection to {conn.url} is closed")

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a synchronous broker method; a refusal closes the channel like RabbitMQ's."""
        await self._enter()
        try:
            return method(*args)
        except BrokerError as exc:
            if self._live:
                self._detach()
            self._client_closed(exc)
            raise

    # ------------------------------------------------------------------ closing and reopening

    def _detach(self) -> None:
        """The broker side of the channel closes: its consumers are removed and its unacked
        deliveries requeued, marked redelivered.
        """
        self._live = False
        # Consumers go first so requeued messages cannot be handed straight back to this
        # channel; an auto-delete queue losing its last consumer takes them with it, as in
        # RabbitMQ.
        for sub in list(self._subs.values()):
            self._unsubscribe(sub)
        self._unacked.requeue_all()

    def _close_async(self, error: BrokerError) -> None:
        """The broker refused a publish or ack: it closes the channel now, and the client
        learns about it one tick later (the call that caused it has already returned).
        """
        if not self._live:
            return
        self._detach()
        self._closing_error = error
        self._landing = self._loop.create_future()
        self._loop.call_soon(self._land)

    def _land(self) -> None:
        error = self._closing_error
        self._closing_error = None
        if error is not None and not self._closed_by_user and not self.connection.is_closed:
            self._client_closed(error)
        if self._landing is not None and not self._landing.done():
            self._landing.set_result(None)

    def _client_closed(self, error: BrokerError) -> None:
        """The client sees the broker's Channel.Close: fail what the broker discarded,
        then reopen (generation + 1) as the real client does.
        """
        self._open_event.clear()
        log.warning("channel %d: %s", self.id, error)
        doomed = self._ledger.take_doomed()
        if doomed:
            self._ledger.record([(seq, error) for seq in doomed])
        self._ledger.wake()
        if self.connection.is_open and not self._closed_by_user:
            self._reopen_handle = self._loop.call_soon(self._reopen)

    def _reopen(self) -> None:
        self._reopen_handle = None
        if self._closed_by_user or not self.connection.is_open:
            return
        self._open()
        for record in list(self._consumers.values()):
            try:
                self._subscribe(record)
            except BrokerError as exc:
                # The real client would see the channel close again here; we just drop
                # the consumer that cannot come back and keep the others.
                log.error(
                    "consumer %s on queue %r could not be restored: %s",
                    record.tag,
                    record.queue,
                    exc,
                )
                self._consumers.pop(record.tag, None)
                if record.on_cancel is not None:
                    record.on_cancel(record.tag)
        for item in self._ledger.take_buffered():
            self._publish_now(*item)
        self._ledger.wake()

    def connection_closing(self) -> None:
        """Its connection closes (called by it first): the acks of this tick reach the
        broker before the close, as on the wire; then the broker side goes.
        """
        self._ack_later_now()
        if self._live:
            self._detach()

    def connection_closed(self, error: BaseException) -> None:
        """The connection is closed for good: fail everything that still waits.

        Args:
            error: what the waiting calls and unconfirmed publishes fail with.
        """
        self._live = False
        self._open_event.clear()
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        lost = self._ledger.take_lost()
        if lost and self.confirms:
            self._ledger.record([(seq, error) for seq in lost])  # type: ignore[misc]
        self._ledger.wake()
        if self._closing_error is not None:
            self._land()

    async def close(self) -> None:
        """As `ChannelProtocol.close`: close for good; what can never be confirmed fails now."""
        if self._closed_by_user:
            return
        self._closed_by_user = True
        self._ack_later_now()  # before Channel.Close, as the real channel sends them
        if self._live:
            self._detach()
        self._open_event.clear()
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        # Unlike the real client (whose waiters would hang), settle what can never be
        # confirmed now.
        lost = self._ledger.take_lost()
        if lost and self.confirms:
            reason = self._closing_error or ConnectionLost(f"channel {self.id} closed")
            self._ledger.record([(seq, reason) for seq in lost])
        self._ledger.wake()
        self.connection.forget_channel(self)
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ consuming

    async def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str | None = None,
        arguments: dict[str, Any] | None = None,
        on_cancel: Callable[[str], None] | None = None,
    ) -> str:
        """Start a consumer; `callback(deliveries)` gets each batch, in order.

        `on_cancel(tag)` runs when the broker cancels the consumer (queue deleted).
        """
        check_name("queue", queue)
        tag = consumer_tag or f"mg.{self.id}.{next(self._tags)}"
        record = Consumer(tag, queue, callback, no_ack, exclusive, arguments, on_cancel)
        await self._call(self._subscribe, record)
        self._consumers[tag] = record
        return tag

    def _subscribe(self, record: Consumer) -> None:
        method = methods.BASIC_CONSUME
        tag = record.tag
        if tag in self._subs:
            raise error("NOT_ALLOWED", f"attempt to reuse consumer tag '{tag}'", method)
        if record.queue == replyto.REPLY_TO:
            self.reply_consumer = self._subs[tag] = replyto.subscribe(self, record)
            return
        name = self._topology.shortcut(record.queue, method)
        queue = self._topology.queue(name, method)
        if queue.exclusive_sub is not None or (record.exclusive and queue.subs):
            raise error("ACCESS_REFUSED", f"{rs('queue', name)} in exclusive use", method)
        prefetch = self._qos[0] if self._qos is not None else 0
        sub = Subscription(self, record, queue, prefetch)
        self._subs[tag] = sub
        queue.add_sub(sub, record.exclusive)

    def _unsubscribe(self, sub: Subscription) -> None:
        sub.active = False
        self._subs.pop(sub.tag, None)
        if sub.queue.pseudo:
            replyto.unsubscribe(self._broker, sub)
            self.reply_consumer = None
        else:
            sub.queue.remove_sub(sub)

    async def cancel(self, consumer_tag: str) -> None:
        """As `ChannelProtocol.cancel`: stop a consumer."""
        if consumer_tag not in self._consumers:
            return
        try:
            if self.is_open:
                await self._raise_if_closing()
                await asyncio.sleep(0)
                sub = self._subs.get(consumer_tag)
                if sub is not None:
                    self._unsubscribe(sub)
        finally:
            self._consumers.pop(consumer_tag, None)

    def cancelled_by_broker(self, sub: Subscription) -> None:
        """The queue was deleted: like consumer_cancel_notify, tell the client next tick.

        Args:
            sub: the cancelled consumer's subscription.
        """
        sub.active = False
        self._subs.pop(sub.tag, None)
        self._loop.call_soon(self._on_consumer_cancelled, sub.tag)

    def _on_consumer_cancelled(self, tag: str) -> None:
        record = self._consumers.pop(tag, None)
        log.warning(
            "broker cancelled consumer %s on queue %r", tag, record.queue if record else "?"
        )
        if record is not None and record.on_cancel is not None:
            record.on_cancel(tag)

    async def get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """Basic.Get: one message or None when the queue is empty."""
        check_name("queue", queue)
        got: Delivery | None = await self._call(self._get, queue, no_ack)
        return got

    def _get(self, name: str, no_ack: bool) -> Delivery | None:
        method = methods.BASIC_GET
        queue = self._topology.queue(self._topology.shortcut(name, method), method)
        queue.touch()
        entry = queue.take()
        if entry is None:
            return None
        tag = self._next_tag
        self._next_tag = tag + 1
        d = entry.content.delivery(self.id, GET_OK)
        d.redelivered = entry.redelivered
        d.delivery_tag = tag
        d.message_count = len(queue.ready)
        if not no_ack:
            self._unacked[tag] = (entry, queue, None)
        return d

    def deliver(self, sub: Subscription, entry: Entry, queue: Queue) -> Delivery:
        """Broker side of Basic.Deliver to `sub` (one of this channel's consumers): take
        a delivery tag and track the message until it is settled.

        Args:
            sub: the consumer's subscription.
            entry: the message, taken from its queue.
            queue: the queue it comes from.

        Returns:
            The delivery, for the consumer's next batch.
        """
        tag = self._next_tag
        self._next_tag = tag + 1
        d = entry.content.delivery(self.id, DELIVER)
        d.redelivered = entry.redelivered
        d.consumer_tag = sub.tag
        d.delivery_tag = tag
        if not sub.no_ack:
            self._unacked[tag] = (entry, queue, sub)
            sub.unacked += 1
        return d

    def dispatch(self, sub: Subscription, batch: list[Delivery]) -> None:
        """Client side: hand one batch (from the broker's dispatch) to its consumer's
        callback.

        A batch for a consumer cancelled meanwhile is requeued; one from before a reopen
        is dropped (the broker requeued it already).

        Args:
            sub: the consumer's subscription.
            batch: the deliveries, in order.
        """
        if not self._live or sub.generation != self.generation:
            return  # the channel closed meanwhile and requeued these; their tags are void
        record = sub.record
        if self._consumers.get(sub.tag) is not record:
            # Cancelled while these were on their way: hand them back, like the client.
            if not sub.no_ack:
                self._unacked.settle([d.delivery_tag for d in batch], requeue=True)
            return
        try:
            record.callback(batch)
        except Exception:
            log.exception("consumer callback for %s raised; its messages stay unacked", sub.tag)

    # ------------------------------------------------------------------ acknowledgements

    def ack(
        self, delivery_tag: int, multiple: bool = False, *, generation: int | None = None
    ) -> bool:
        """Settle deliveries; False if the tag is void (channel reopened since)."""
        if not self._valid_tag(generation):
            return False
        if self._live:  # after the broker closed the channel it ignores acks
            taken = self._take(delivery_tag, multiple, methods.BASIC_ACK)
            if taken:
                self._unacked.settle_taken(taken, None)
        return True

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """Ack at the end of this loop tick, like the real channel's coalesced ack (which
        never acks a tag settled another way meanwhile). False if the tag is void.
        """
        if generation != self.generation or not self.is_open:
            return False
        self.acked += 1
        if not self._later:
            self._loop.call_soon(self._ack_later_due, self.generation)
        self._later.append(delivery_tag)
        return True

    def _ack_later_now(self) -> None:
        """Settle the ack_later tags of this tick now (a close must not drop them)."""
        if self._later:
            self._ack_later_due(self.generation)

    def _ack_later_due(self, generation: int) -> None:
        tags, self._later = self._later, []
        if generation != self.generation or not self._live:
            return  # the channel reopened: the broker requeued these already
        self._unacked.settle(sorted(tags), requeue=None)

    def nack(
        self,
        delivery_tag: int,
        multiple: bool = False,
        requeue: bool = True,
        *,
        generation: int | None = None,
    ) -> bool:
        """As `ChannelProtocol.nack`: refuse deliveries (an unknown tag closes the channel)."""
        if not self._valid_tag(generation):
            return False
        self.nacked += 1
        if self._live:
            taken = self._take(delivery_tag, multiple, methods.BASIC_NACK)
            if taken:
                self._unacked.settle_taken(taken, requeue)
        return True

    def reject(
        self, delivery_tag: int, requeue: bool = True, *, generation: int | None = None
    ) -> bool:
        """As `ChannelProtocol.reject`: refuse one delivery (an unknown tag closes the channel)."""
        if not self._valid_tag(generation):
            return False
        self.nacked += 1
        if self._live:
            taken = self._take(delivery_tag, False, methods.BASIC_REJECT)
            if taken:
                self._unacked.settle_taken(taken, requeue)
        return True

    def _valid_tag(self, generation: int | None) -> bool:
        if generation is not None and generation != self.generation:
            return False
        return self.is_open

    def _take(self, tag: int, multiple: bool, method: tuple[int, int]) -> list[Outstanding]:
        """The unacked deliveries an ack/nack/reject covers; an unknown tag closes the
        channel (a tick later, as RabbitMQ's Channel.Close would arrive).
        """
        taken = self._unacked.take(tag, multiple)
        if taken is None:
            self._close_async(error("PRECONDITION_FAILED", f"unknown delivery tag {tag}", method))
            return []
        return taken
