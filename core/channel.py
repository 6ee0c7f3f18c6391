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
from ._speedups import Delivery, Properties, PropertiesTooLarge
from .amqp.errors import AMQPError, BrokerError, ConnectionLost, LocalProtocolError
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
from .republish import fit_to_frame_max
from .topology import BindingRecord, ExchangeRecord, QueueRecord

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


class Channel:
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
        # Open on the wire (OpenOk received, not closed since). Settling deliveries of the
        # current generation needs only this, not `is_open`: a restored consumer gets
        # deliveries before the channel is handed back to users (`_mark_ready`), and acks
        # dropped then would leave them unacked for good, the consumer starved at prefetch.
        self._wire_open = False
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._confirm_waiters = ConfirmWaiters()
        self._closed_by_user = False
        self._tags = itertools.count(1)
        self._reopen_task: asyncio.Task[None] | None = None
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

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed" if self._closed_by_user else "recovering"
        return f"<Channel {self.id} {state} gen={self.generation}>"

    async def _open(self) -> None:
        """(Re)open this channel on the wire with its qos and confirm mode.

        Users still wait: the channel is theirs again only after `_mark_ready()`, once its
        consumers are restored, so nothing they send can interleave with the restore.
        """
        self._open_event.clear()
        self._wire_open = False
        fut = self._expect_reply()
        self.connection._amqp_open_channel(self.id)
        await fut
        self._wire_open = True
        self.generation += 1
        self._acks.reset()
        self._acks_pending = False
        if self._qos is not None:
            await self._call(
                commands.Basic.Qos(prefetch_size=self._qos[1], prefetch_count=self._qos[0])
            )
        if self._tracker is not None:
            fut = self._expect_reply()
            self.connection._amqp().enable_confirms(self.id, self._tracker)
            self.connection._schedule_flush()
            await fut

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

    def _mark_ready(self) -> None:
        """The channel is open and restored: user calls and publishes go to the wire."""
        self._open_event.set()

    async def _restore_consumers(self) -> None:
        """Consume again with every recorded consumer (the channel is open on the wire).

        A consumer the broker refuses (its queue is gone, say) is dropped and told through
        on_cancel; the refusal closed the channel and with it the consumers restored before,
        so the channel is reopened and restoring starts over with the rest.
        """
        while True:
            for consumer in list(self._consumers.values()):
                try:
                    await self._call(
                        commands.Basic.Consume(
                            queue=consumer.queue,
                            consumer_tag=consumer.tag,
                            no_ack=consumer.no_ack,
                            exclusive=consumer.exclusive,
                            arguments=consumer.arguments or {},
                        )
                    )
                except BrokerError as exc:
                    log.error(
                        "consumer %s on queue %r could not be restored: %s",
                        consumer.tag,
                        consumer.queue,
                        exc,
                    )
                    self._consumers.pop(consumer.tag, None)
                    if consumer.on_cancel is not None:
                        consumer.on_cancel(consumer.tag)
                    await self._open()
                    break
            else:
                return

    async def _recover(self, republish: bool) -> None:
        """Reopen after the broker closed this channel: one recovery at a time."""
        if self._recovering:
            return
        self._recovering = True
        try:
            await self._open()
            await self._restore_consumers()
            self._mark_ready()
            self._republish_or_fail(republish)
        finally:
            self._recovering = False

    def _republish_or_fail(self, republish: bool) -> None:
        if self._tracker is None:
            return
        if republish:
            pending = self._tracker.restart()
            if pending:
                fitted = self._fit_for_republish(pending)
                if fitted is None:
                    return
                amqp = self.connection._amqp()
                for data in fitted:
                    amqp.send_raw(data)
                self.connection._schedule_flush()
                log.info("channel %d: republished %d unconfirmed message(s)", self.id, len(pending))
        else:
            failed = self._tracker.fail_all()
            if failed:
                reason = ConnectionLost(
                    f"connection to {self.connection.url} lost before the broker confirmed"
                )
                self._record_failures([(seq, reason) for seq, _ in failed])
            # Settled by failing: wake whoever waits for confirms or for room in the window
            # (a publisher blocked on a full window would otherwise wait forever).
            self._wake_confirm_waiters(self._tracker.confirmed_through)
            self._capacity.set()

    def _fit_for_republish(self, pending: list[tuple[int, bytes]]) -> list[bytes] | None:
        """The kept publishes' frames, re-split for this connection's frame_max.

        Returns None when one of them no longer fits at all (its properties exceed the new
        frame_max): then every kept publish is failed, that one with PropertiesTooLarge,
        since skipping one would shift the broker's delivery tags under the others.
        """
        frame_max = self.connection.frame_max
        fitted: list[bytes] = []
        refused: dict[int, Exception] = {}
        for seq, data in pending:
            try:
                fitted.append(fit_to_frame_max(data, frame_max))
            except PropertiesTooLarge as exc:
                refused[seq] = exc
        if not refused:
            return fitted
        failed = self._tracker.fail_all()  # type: ignore[union-attr]
        other = ConnectionLost(
            f"not republished after the reconnect to {self.connection.url}: another "
            f"unconfirmed publish on channel {self.id} no longer fits frame_max {frame_max}"
        )
        log.error(
            "channel %d: %d unconfirmed publish(es) exceed frame_max %d after the reconnect; "
            "failing all %d kept publishes",
            self.id,
            len(refused),
            frame_max,
            len(failed),
        )
        self._record_failures([(seq, refused.get(seq, other)) for seq, _ in failed])
        self._wake_confirm_waiters(self._tracker.confirmed_through)  # type: ignore[union-attr]
        self._capacity.set()
        return None

    # ------------------------------------------------------------------ sync methods

    def _expect_reply(self) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        self._replies.append(fut)
        return fut

    async def _call(self, method: Any) -> Any:
        """Send a synchronous method on an open channel and wait for its reply."""
        amqp = self.connection._amqp()
        waits = amqp.send_method(self.id, method)
        fut = self._expect_reply() if waits else None
        self.connection._schedule_flush()
        if fut is None:
            return None
        return await fut

    async def _rpc(self, method: Any) -> Any:
        """Like _call, but waits for the channel to be (re)opened first."""
        if self._closed_by_user:
            raise LocalProtocolError(f"channel {self.id} is closed")
        while not self.is_open:
            await self._wait_open()
        return await self._call(method)

    async def _wait_open(self) -> None:
        if self.connection.is_closed:
            raise ConnectionLost(f"connection to {self.connection.url} is closed")
        waiter = asyncio.ensure_future(self._open_event.wait())
        closed = self.connection._closed_future
        await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            raise ConnectionLost(f"connection to {self.connection.url} is closed")

    # ------------------------------------------------------------------ topology

    async def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Exchange.Declare(
                exchange=exchange,
                exchange_type=exchange_type,
                passive=passive,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=arguments or {},
            )
        )
        if not passive:
            self.connection.topology.add_exchange(
                ExchangeRecord(exchange, exchange_type, durable, auto_delete, internal, arguments)
            )

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        await self._rpc(commands.Exchange.Delete(exchange=exchange, if_unused=if_unused))
        self.connection.topology.remove_exchange(exchange)

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Exchange.Bind(
                destination=destination,
                source=source,
                routing_key=routing_key,
                arguments=arguments or {},
            )
        )
        self.connection.topology.add_binding(
            BindingRecord("exchange", destination, source, routing_key, arguments)
        )

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Exchange.Unbind(
                destination=destination,
                source=source,
                routing_key=routing_key,
                arguments=arguments or {},
            )
        )
        self.connection.topology.remove_binding(
            BindingRecord("exchange", destination, source, routing_key, arguments)
        )

    async def queue_declare(
        self,
        queue: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> QueueDeclareOk:
        reply = await self._rpc(
            commands.Queue.Declare(
                queue=queue,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments or {},
            )
        )
        if not passive:
            self.connection.topology.add_queue(
                QueueRecord(
                    reply.queue, durable, exclusive, auto_delete, arguments, server_named=not queue
                )
            )
        return QueueDeclareOk(reply.queue, reply.message_count, reply.consumer_count)

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Queue.Bind(
                queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments or {}
            )
        )
        self.connection.topology.add_binding(
            BindingRecord("queue", queue, exchange, routing_key, arguments)
        )

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Queue.Unbind(
                queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments or {}
            )
        )
        self.connection.topology.remove_binding(
            BindingRecord("queue", queue, exchange, routing_key, arguments)
        )

    async def queue_purge(self, queue: str) -> int:
        reply = await self._rpc(commands.Queue.Purge(queue=queue))
        return reply.message_count

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        reply = await self._rpc(
            commands.Queue.Delete(queue=queue, if_unused=if_unused, if_empty=if_empty)
        )
        self.connection.topology.remove_queue(queue)
        return reply.message_count

    async def basic_qos(self, prefetch_count: int, prefetch_size: int = 0) -> None:
        """Per-consumer prefetch.

        Global qos is deprecated in RabbitMQ 4 and refused by quorum queues.
        """
        await self._rpc(
            commands.Basic.Qos(prefetch_size=prefetch_size, prefetch_count=prefetch_count)
        )
        self._qos = (prefetch_count, prefetch_size)

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
            await self._wait_open()
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
        return await self._rpc(commands.Basic.Get(queue=queue, no_ack=no_ack))

    def ack(
        self, delivery_tag: int, multiple: bool = False, *, generation: int | None = None
    ) -> bool:
        """Ack on the wire (coalesced into this tick's write). False if the tag is void.

        A tag from an earlier channel generation is void: the broker requeued that message
        when the old channel died and will deliver it again.
        """
        if not self._valid_tag(generation):
            return False
        if not multiple:
            self._acks.forget(delivery_tag)  # settled: no longer blocks the coalesced prefix
        self.connection._amqp().ack(self.id, delivery_tag, multiple)
        self.connection._schedule_flush()
        return True

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """Ack, coalesced: at the end of this loop tick one ack with multiple=true covers
        the contiguous prefix of settled tags, and tags above a still unsettled one are
        acked singly, so a slow delivery never holds back the acks of later ones.

        Args:
            delivery_tag: the delivery's tag.
            generation: the channel generation it was delivered on.

        Returns:
            False if the tag is void (an earlier generation, or the channel is closed).
        """
        if generation != self.generation or not self._wire_open:
            return False
        self._acks.done(delivery_tag)
        self.acked += 1
        if not self._acks_pending:
            self._acks_pending = True
            self.connection._acks_due(self)
        return True

    def _emit_acks(self) -> None:
        """Called by the connection right before it writes: one multiple-ack for the
        settled prefix, one single ack per tag that finished above a gap."""
        self._acks_pending = False
        if not self._wire_open:
            return
        acks = self._acks
        tag = acks.take()
        amqp = self.connection._amqp()
        if tag:
            amqp.ack(self.id, tag, True)
        for single in acks.take_singles():  # empty unless something settled out of order
            amqp.ack(self.id, single, False)

    def nack(
        self,
        delivery_tag: int,
        multiple: bool = False,
        requeue: bool = True,
        *,
        generation: int | None = None,
    ) -> bool:
        if not self._valid_tag(generation):
            return False
        if not multiple:
            self._acks.forget(delivery_tag)  # settled: no longer blocks the coalesced prefix
        self.nacked += 1
        self.connection._amqp().nack(self.id, delivery_tag, multiple, requeue)
        self.connection._schedule_flush()
        return True

    def reject(
        self, delivery_tag: int, requeue: bool = True, *, generation: int | None = None
    ) -> bool:
        if not self._valid_tag(generation):
            return False
        self._acks.forget(delivery_tag)
        self.nacked += 1
        self.connection._amqp().reject(self.id, delivery_tag, requeue)
        self.connection._schedule_flush()
        return True

    def _valid_tag(self, generation: int | None) -> bool:
        if generation is not None and generation != self.generation:
            return False
        return self._wire_open

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
        if properties is None:
            props = _EMPTY_PROPERTIES
        elif type(properties) is bytes:
            props = properties
        else:
            props = _speedups.encode_properties(properties)
        if self.is_open:
            seq = self.connection._amqp().publish(
                self.id, exchange, routing_key, body, props, mandatory
            )
            self.connection._schedule_flush()
        elif (
            self._tracker is not None and not self._closed_by_user and not self.connection.is_closed
        ):
            frame = _speedups.publish_method_frame(self.id, exchange, routing_key, mandatory)
            data = _speedups.pack_publish(frame, self.id, props, body, self.connection.frame_max)
            seq = self._tracker.add(data)
        else:
            raise ConnectionLost(f"cannot publish on channel {self.id}: it is not open")
        if self._tracker is not None:
            if not seq & CONFIRM_SAMPLE_MASK and self.sample_confirms:
                self._confirm_samples.append((seq, time.perf_counter()))
            if len(self._tracker) >= self.max_unconfirmed:
                self._capacity.clear()
        return seq

    @property
    def writable(self) -> bool:
        """True when publishing may go on without waiting (see `drain`)."""
        return self.connection._flow.is_set() and self._capacity.is_set()

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
            if not conn._flow.is_set():
                await conn._wait_flow()
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

    def _on_reply(self, value: Any) -> None:
        if self._replies:
            fut = self._replies.popleft()
            if not fut.done():
                fut.set_result(value)

    def _on_confirms(self, confirmed_through: int, failed: list[tuple[int, bytes]]) -> None:
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

    def _on_return(self, delivery: Delivery) -> None:
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

    def _on_consumer_cancelled(self, tag: str) -> None:
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

    def _dispatch(self, tag: str, batch: list[Delivery]) -> None:
        consumer = self._consumers.get(tag)
        if consumer is None:
            # Deliveries in flight after a cancel: hand them back to the queue (unless the
            # consumer was no_ack: those are settled already, a nack would be an error).
            if self._wire_open and not batch[0].kind and tag not in self._cancelled_no_ack:
                amqp = self.connection._amqp()
                for d in batch:
                    self._acks.forget(d.delivery_tag)
                    amqp.nack(self.id, d.delivery_tag, False, True)
                self.connection._schedule_flush()
            return
        try:
            consumer.callback(batch)
        except Exception:
            log.exception("consumer callback for %s raised; its messages stay unacked", tag)

    def _on_closed(self, error: BaseException | None, by_broker: bool) -> None:
        """The channel is gone (broker close, or the whole connection was lost)."""
        self._open_event.clear()
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

    def _fail_forever(self, error: BaseException) -> None:
        """The connection is closed for good: fail everything that still waits."""
        self._on_closed(error, by_broker=False)
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
        if self.is_open and self.connection.is_open:
            fut = self._expect_reply()
            if self._acks_pending:  # acks made this tick: nothing may follow Channel.Close
                self._emit_acks()
            self.connection._amqp().close_channel(self.id)
            self.connection._schedule_flush()
            self._open_event.clear()
            self._wire_open = False  # nothing may follow Channel.Close on the wire
            with contextlib.suppress(AMQPError, TimeoutError):
                await asyncio.wait_for(fut, 5.0)
        self._open_event.clear()
        self._wire_open = False
        self.connection._forget_channel(self)
