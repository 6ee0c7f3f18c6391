"""An AMQP channel for asyncio code: declare, bind, consume, publish with confirms, ack.

Publishing is synchronous and buffered (`publish()` returns a confirm sequence number);
`drain()` is where a publisher waits for flow control, and `wait_confirms()` waits for the
confirm watermark, with one Future per waiter, never one per message. Consumers receive
batches: one call per consumer per received buffer.

Channels survive reconnects: the client reopens them with the same id, restores qos,
confirm mode and consumers, then republishes what the broker never confirmed (or fails it
to the caller when republishing is off). A channel the broker closed with an error is
reopened the same way; its unconfirmed publishes are failed, since their fate is unknown
and a blind republish could repeat the error.

`Channel` is assembled from parts, one concept per module: declaring and binding
(`channel_topology`), settling deliveries (`channel_acks`) and reopening
(`channel_recovery`); this module holds the channel's state, consuming, publishing and
confirms, and the handlers its connection's event dispatch calls (`handle_*`).

The connection <-> channel interface (no other names cross it):

- a channel uses its connection's `protocol` (the sans-IO AMQP connection, and its
  `channel_publisher(id)` while the channel is open), `schedule_flush()` / `flush_scheduled`,
  `acks_due(channel)`, `acks_held(channel)`, `flow` and `wait_until(event)`,
  `forget_channel(channel)`, and its plain attributes (`loop`, `url`, `frame_max`,
  `topology`, `is_open`, `is_closed`, `state`);
- the connection calls a channel's `handle_*` methods, `emit_acks()` and `fail_forever()`
  from its dispatch (which reads `awaiting_reply`, `closed_by_user` and `recovering`, and
  keeps a channel's background reopen in `reopen_task`), and `open_on_wire()`,
  `restore_consumers()`, `mark_ready()`, `republish_or_fail()`, `recover()` and
  `rename_queue()` from its recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from . import _speedups
from ._speedups import Delivery, Properties
from .amqp.errors import AMQPError, ConnectionLost, LocalProtocolError
from .channel_acks import ChannelAcks
from .channel_recovery import ChannelRecovery
from .channel_topology import ChannelTopology
from .confirm_waiters import ConfirmWaiters
from .engine import (
    Consumer,
    DeliveryCallback,
    DrainTimeout,
    PublishError,
    PublishNacked,
    QueueDeclareOk,
)
from .metrics import CONFIRM_SAMPLE_MASK, FastHistogram

if TYPE_CHECKING:
    from .client import Connection

# The shared errors and records live in engine.py; they are re-exported here, where they
# were first defined (`from munggoggo.channel import PublishError` keeps working).
__all__ = [
    "Channel",
    "Consumer",
    "DeliveryCallback",
    "DrainTimeout",
    "PublishError",
    "PublishNacked",
    "QueueDeclareOk",
]

log = logging.getLogger("munggoggo.channel")

_EMPTY_PROPERTIES = _speedups.encode_properties(None)


class FlagEvent(asyncio.Event):
    """An asyncio.Event whose state is also the plain attribute `value`: what is read on
    every publish (`Channel.writable`) costs an attribute, not two method calls."""

    def __init__(self) -> None:
        super().__init__()
        self.value = False

    def set(self) -> None:
        """Set the flag and wake its waiters."""
        self.value = True
        super().set()

    def clear(self) -> None:
        """Clear the flag."""
        self.value = False
        super().clear()


class Channel(ChannelTopology, ChannelAcks, ChannelRecovery):
    """One AMQP channel of a `Connection`. Create it with `await connection.channel()`."""

    def __init__(
        self,
        connection: Connection,
        channel_id: int,
        *,
        confirms: bool = True,
        max_unconfirmed: int = 1024,
    ) -> None:
        self.connection = connection
        self.id = channel_id
        self.generation = 0  # bumps on every reopen; delivery tags of older ones are void
        self.confirms = confirms
        self.max_unconfirmed = max_unconfirmed
        # Publishers blocked on a full window wake at 3/4 of it, not on every confirm frame.
        self._low_water = max(1, max_unconfirmed * 3 // 4)
        self.on_return: Callable[[Delivery], None] | None = None
        self.on_publish_failure: Callable[[list[tuple[int, Exception]]], None] | None = None
        self._loop = connection.loop
        self._tracker = _speedups.ConfirmTracker() if confirms else None
        self._replies: deque[asyncio.Future[Any]] = deque()
        self._consumers: dict[str, Consumer] = {}
        self._qos: tuple[int, int] | None = None
        self._open_event = asyncio.Event()
        # The protocol's publish path for this channel while `is_open` (else None): set by
        # `mark_ready`, dropped wherever the channel stops being open.
        self._wire: _speedups.ChannelPublisher | None = None
        # Open on the wire (OpenOk received, not closed since). Settling deliveries of the
        # current generation needs only this, not `is_open`: a restored consumer gets
        # deliveries before the channel is handed back to users (`mark_ready`), and acks
        # dropped then would leave them unacked for good, the consumer starved at prefetch.
        self._wire_open = False
        # Its state is also the plain attribute `value`: `writable` is read per publish.
        self._capacity = FlagEvent()
        self._capacity.set()
        self._confirm_waiters = ConfirmWaiters(PublishError)
        self._closed_by_user = False
        self._tags = itertools.count(1)
        # The connection's background reopen of this channel after a channel error.
        self.reopen_task: asyncio.Task[None] | None = None
        self._recovering = False  # a reopen after a channel error is under way
        # no_ack consumers cancelled lately: their in-flight deliveries need no settling.
        self._cancelled_no_ack: deque[str] = deque(maxlen=64)
        self._acks = _speedups.AckTracker()  # coalesced acks of this generation
        self._acks_pending = False
        self.acked = 0  # messages acked / nacked or rejected (Prometheus counters)
        self.nacked = 0
        # Confirm latency, sampled: one publish in 32 remembers when it was sent.
        self.sample_confirms = True
        self.confirm_seconds = FastHistogram()
        self._confirm_samples: deque[tuple[int, float]] = deque()

    # ------------------------------------------------------------------ state

    @property
    def is_open(self) -> bool:
        return self._open_event.is_set()

    @property
    def unconfirmed(self) -> int:
        return len(self._tracker) if self._tracker is not None else 0

    @property
    def confirmed_through(self) -> int:
        """Every publish with a sequence number up to this one is settled (acked, nacked or
        failed), whatever order the broker confirmed them in; 0 without confirms.
        """
        return self._tracker.confirmed_through if self._tracker is not None else 0

    @property
    def closed_by_user(self) -> bool:
        """Whether `close()` was called: the channel is never reopened after that."""
        return self._closed_by_user

    @property
    def awaiting_reply(self) -> bool:
        """Whether a synchronous method sent on this channel still waits for its reply."""
        return bool(self._replies)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed" if self._closed_by_user else "recovering"
        return f"<Channel {self.id} {state} gen={self.generation}>"

    def is_consuming(self, consumer_tag: str) -> bool:
        """Whether the consumer `consumer_tag` is consuming on this channel: started, and
        neither cancelled by us nor by the broker.

        Args:
            consumer_tag: a tag `consume` returned.

        Returns:
            True while it consumes.
        """
        return consumer_tag in self._consumers

    @property
    def has_consumers(self) -> bool:
        """Whether consumers were started on this channel (and not cancelled)."""
        return bool(self._consumers)

    # ------------------------------------------------------------------ sync methods

    def _expect_reply(self) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        self._replies.append(fut)
        return fut

    async def _call(self, method: Any) -> Any:
        """Send a synchronous method on an open channel and wait for its reply."""
        conn = self.connection
        if self._acks_pending:
            # Held acks go out before the method: a method the broker refuses closes the
            # channel, and whatever follows it on the wire is dropped (redelivered).
            self.emit_acks()
        waits = conn.protocol.send_method(self.id, method)
        fut = self._expect_reply() if waits else None
        conn.schedule_flush()
        if fut is None:
            return None
        return await fut

    async def _rpc(self, method: Any) -> Any:
        """Like _call, but waits for the channel to be (re)opened first."""
        if self._closed_by_user:
            raise LocalProtocolError(f"channel {self.id} is closed")
        while not self.is_open:
            await self.connection.wait_until(self._open_event)
        return await self._call(method)

    # ------------------------------------------------------------------ consuming

    async def basic_qos(self, prefetch_count: int, prefetch_size: int = 0) -> None:
        """Per-consumer prefetch.

        Global qos is deprecated in RabbitMQ 4 and refused by quorum queues.
        """
        await self._rpc(
            commands.Basic.Qos(prefetch_size=prefetch_size, prefetch_count=prefetch_count)
        )
        self._qos = (prefetch_count, prefetch_size)

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
        """Start a consumer; `callback(deliveries)` gets each received batch, in order.

        `on_cancel(tag)` runs when the broker cancels the consumer (queue deleted).
        A delivery whose properties could not be decoded (headers nested deeper than
        `_speedups.MAX_TABLE_DEPTH`, say) still arrives, with `properties_error` set to the
        reason and empty `properties`: settle it like any other (`reject(tag,
        requeue=False)` hands it to the queue's dead-letter exchange). The connection
        stays up.
        """
        tag = consumer_tag or f"mg.{self.id}.{next(self._tags)}"
        consumer = Consumer(tag, queue, callback, no_ack, exclusive, arguments, on_cancel)
        if self._closed_by_user:
            raise LocalProtocolError(f"channel {self.id} is closed")
        while not self.is_open:
            await self.connection.wait_until(self._open_event)
        # Registered only now (a reopen in between would have consumed with it already),
        # and before the reply: deliveries may follow ConsumeOk in the same buffer.
        self._consumers[tag] = consumer
        try:
            await self._call(
                commands.Basic.Consume(
                    queue=queue,
                    consumer_tag=tag,
                    no_ack=no_ack,
                    exclusive=exclusive,
                    arguments=arguments or {},
                )
            )
        except BaseException:
            self._consumers.pop(tag, None)
            raise
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        consumer = self._consumers.get(consumer_tag)
        if consumer is None:
            return
        try:
            if self.is_open:
                await self._call(commands.Basic.Cancel(consumer_tag=consumer_tag))
        finally:
            self._consumers.pop(consumer_tag, None)
            if consumer.no_ack:
                self._cancelled_no_ack.append(consumer_tag)

    async def get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """Basic.Get: one message or None when the queue is empty."""
        delivery: Delivery | None = await self._rpc(commands.Basic.Get(queue=queue, no_ack=no_ack))
        return delivery

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | bytes | None = None,
        *,
        mandatory: bool = False,
    ) -> int:
        """Queue a publish for this tick's write; returns its confirm sequence number.

        Never blocks: call `await drain()` to respect flow control and the unconfirmed
        window. While the connection is recovering, publishes on a confirm channel are kept
        and sent after recovery; without confirms they raise ConnectionLost.

        Raises:
            PropertiesTooLarge: the encoded properties (headers included) do not fit one
                content header frame of the negotiated frame_max; nothing is sent and no
                sequence number is taken (the broker would close the whole connection).
            ValueError: a property the wire cannot carry.
            ConnectionLost: the channel is not open and cannot keep the publish.
        """
        if isinstance(properties, bytes):
            props = properties
        elif properties is None:
            props = _EMPTY_PROPERTIES
        else:
            props = _speedups.encode_properties(properties)
        wire = self._wire
        if wire is not None:
            seq = wire.publish(exchange, routing_key, props, body, mandatory)
            if seq < 0:  # closed by the broker in this very tick, not handled yet
                raise LocalProtocolError(f"cannot publish: channel {self.id} is not open")
            conn = self.connection
            if not conn.flush_scheduled:
                conn.schedule_flush()
        elif (
            self._tracker is not None and not self._closed_by_user and not self.connection.is_closed
        ):
            frame = _speedups.publish_method_frame(self.id, exchange, routing_key, mandatory)
            data = _speedups.pack_publish(frame, self.id, props, body, self.connection.frame_max)
            seq = self._tracker.add(data)
        else:
            raise ConnectionLost(f"cannot publish on channel {self.id}: it is not open")
        tracker = self._tracker
        if tracker is not None:
            if not seq & CONFIRM_SAMPLE_MASK and self.sample_confirms:
                self._confirm_samples.append((seq, time.perf_counter()))
            if len(tracker) >= self.max_unconfirmed:
                self._capacity.clear()
        return seq

    @property
    def writable(self) -> bool:
        """True when publishing may go on without waiting (see `drain`)."""
        return self.connection.flow.value and self._capacity.value

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until publishing may go on: socket writable, broker not blocking us,
        connection up, and fewer than `max_unconfirmed` publishes awaiting confirms.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes (through a
                whole reconnect). What was published before stays queued either way.

        Raises:
            DrainTimeout: publishing could not go on within `timeout`.
            ConnectionLost: the connection closed for good.
        """
        if timeout is None:
            await self._drain()
        elif not self.writable:
            try:
                await asyncio.wait_for(self._drain(), timeout)
            except TimeoutError:
                raise DrainTimeout(
                    f"channel {self.id}: publishing could not go on within {timeout:g}s "
                    f"(connection {self.connection.state}, {self.unconfirmed} unconfirmed)"
                ) from None

    async def _drain(self) -> None:
        conn = self.connection
        while True:
            if not conn.flow.is_set():
                await conn.wait_until(conn.flow)
            elif not self._capacity.is_set():
                await self._capacity.wait()
            else:
                return

    async def wait_confirms(self, upto: int | None = None, timeout: float | None = None) -> None:
        """Wait until every publish with seq <= `upto` (default: all so far) is settled.

        Raises PublishError listing those that were nacked or lost (each failure is reported
        to one such waiter only: the first whose range covers it; a failure that a
        `wait_confirm_of` waiting for that very publish got is not reported here).
        """
        tracker = self._tracker
        if tracker is None:
            raise LocalProtocolError(f"channel {self.id} has publisher confirms off")
        if upto is None:
            upto = tracker.last_seq
        await self._confirm_waiters.wait(self._loop, upto, tracker.confirmed_through, timeout)

    async def wait_confirm_of(self, seq: int, timeout: float | None = None) -> None:
        """Wait until the publish with sequence number `seq` is settled.

        Args:
            seq: what `publish()` returned.
            timeout: seconds, or None to wait as long as it takes.

        Raises:
            PublishError: that publish was nacked or lost (its failure only: another
                publish's failure never fails this wait).
            TimeoutError: not settled within `timeout`.
            LocalProtocolError: the channel has publisher confirms off.
        """
        tracker = self._tracker
        if tracker is None:
            raise LocalProtocolError(f"channel {self.id} has publisher confirms off")
        await self._confirm_waiters.wait_one(self._loop, seq, tracker.confirmed_through, timeout)

    # ------------------------------------------------------------------ events (from Connection)
    # The connection's dispatch calls these, in the order the broker's frames arrived.

    def handle_reply(self, value: Any) -> None:
        """The reply to the oldest synchronous method still waiting (None for replies
        that carry nothing: GetEmpty, CloseOk)."""
        if self._replies:
            fut = self._replies.popleft()
            if not fut.done():
                fut.set_result(value)

    def handle_confirms(self, confirmed_through: int, failed: list[tuple[int, bytes]]) -> None:
        """The broker's acks and nacks of this tick: every publish up to
        `confirmed_through` is settled, those in `failed` (seq, frames) were nacked."""
        samples = self._confirm_samples
        if samples and samples[0][0] <= confirmed_through:
            now = time.perf_counter()
            while samples and samples[0][0] <= confirmed_through:
                self.confirm_seconds.observe(now - samples.popleft()[1])
        if failed:
            reason = PublishNacked(f"broker nacked publish on channel {self.id}")
            self._record_failures([(seq, reason) for seq, _ in failed])
        self._wake_confirm_waiters(confirmed_through)
        if not self._capacity.is_set() and len(self._tracker) <= self._low_water:  # type: ignore[arg-type]
            self._capacity.set()

    def _wake_confirm_waiters(self, confirmed_through: int) -> None:
        self._confirm_waiters.wake(confirmed_through)

    def _record_failures(self, failures: list[tuple[int, Exception]]) -> None:
        self._confirm_waiters.record(failures, self.on_publish_failure)

    def handle_return(self, delivery: Delivery) -> None:
        """A mandatory publish the broker could not route (Basic.Return)."""
        if self.on_return is not None:
            self.on_return(delivery)
        else:
            log.warning(
                "message returned by broker: %d %s (exchange %r, routing key %r)",
                delivery.reply_code,
                delivery.reply_text,
                delivery.exchange,
                delivery.routing_key,
            )

    def handle_consumer_cancelled(self, tag: str) -> None:
        """The broker cancelled consumer `tag` (its queue was deleted, say)."""
        consumer = self._consumers.pop(tag, None)
        # Its owner says what it does about it (one line); unowned, it is ours to say.
        level = logging.INFO if consumer is not None and consumer.on_cancel else logging.WARNING
        log.log(
            level,
            "broker cancelled consumer %s on queue %r",
            tag,
            consumer.queue if consumer else "?",
        )
        if consumer is not None and consumer.on_cancel is not None:
            consumer.on_cancel(tag)

    def handle_deliveries(self, tag: str, batch: list[Delivery]) -> None:
        """Deliveries for consumer `tag` from one received buffer, in order."""
        consumer = self._consumers.get(tag)
        if consumer is None:
            # Deliveries in flight after a cancel: hand them back to the queue (unless the
            # consumer was no_ack: those are settled already, a nack would be an error).
            if self._wire_open and not batch[0].kind and tag not in self._cancelled_no_ack:
                amqp = self.connection.protocol
                for d in batch:
                    self._acks.forget(d.delivery_tag)
                    amqp.nack(self.id, d.delivery_tag, False, True)
                self.connection.schedule_flush()
            return
        try:
            consumer.callback(batch)
        except Exception:
            log.exception("consumer callback for %s raised; its messages stay unacked", tag)

    def handle_closed(self, error: BaseException | None, by_broker: bool) -> None:
        """The channel is gone (broker close, or the whole connection was lost).

        Args:
            error: why (None: closed at our request); the replies still awaited fail with it.
            by_broker: the broker closed the channel with an error: its unconfirmed
                publishes are failed, their fate is unknown.
        """
        self._open_event.clear()
        self._wire = None
        self._wire_open = False
        exc = error or ConnectionLost(f"channel {self.id} closed")
        while self._replies:
            fut = self._replies.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: a waiter may have been cancelled meanwhile
        if by_broker and self._tracker is not None:
            failed = self._tracker.fail_all()
            if failed:
                self._record_failures([(seq, exc) for seq, _ in failed])  # type: ignore[misc]
                self._wake_confirm_waiters(self._tracker.confirmed_through)
                self._capacity.set()

    def rename_queue(self, old: str, new: str) -> None:
        """A recovery redeclared the server-named queue `old` as `new`: this channel's
        consumers of it consume from `new` from now on."""
        for consumer in self._consumers.values():
            if consumer.queue == old:
                consumer.queue = new

    def fail_forever(self, error: BaseException) -> None:
        """The connection is closed for good: stop any reopen, fail everything that still
        waits (replies, confirms, publishers waiting for room in the window)."""
        if self.reopen_task is not None:
            self.reopen_task.cancel()
        self.handle_closed(error, by_broker=False)
        if self._tracker is not None:
            failed = self._tracker.fail_all()
            if failed:
                self._record_failures([(seq, error) for seq, _ in failed])  # type: ignore[misc]
            self._wake_confirm_waiters(self._tracker.confirmed_through)
        self._capacity.set()

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        if self._closed_by_user:
            return
        self._closed_by_user = True
        conn = self.connection
        if self.is_open and conn.is_open:
            fut = self._expect_reply()
            if self._acks_pending:  # acks made this tick: nothing may follow Channel.Close
                self.emit_acks()
            conn.protocol.close_channel(self.id)
            conn.schedule_flush()
            self._open_event.clear()
            self._wire = None
            self._wire_open = False  # nothing may follow Channel.Close on the wire
            with contextlib.suppress(AMQPError, TimeoutError):
                await asyncio.wait_for(fut, 5.0)
        self._open_event.clear()
        self._wire = None
        self._wire_open = False
        conn.forget_channel(self)
