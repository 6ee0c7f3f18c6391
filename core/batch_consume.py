"""Reading batches: the items of a batch reach behaviours one by one and settle one by one.

A batch (core/batch_format.py) is one AMQP message carrying several logical messages. The
agent's consumers (core/consumers.py for behaviour queues, core/inbox.py for the inbox)
hand each item on as a `Message` of its own, over a `Delivery` made for it: the item's
body, content type and headers; the exchange, routing key, redelivered flag and other
properties of the AMQP message; its index in the batch as delivery tag. The item messages
settle through a `BatchSettler`, which stands in for their channel and settles the AMQP
message once every item is settled:

- every item acked: the AMQP message is acked;
- every item requeued (`nack(requeue=True)`, as a stopping behaviour returns its
  mailbox): the AMQP message is requeued whole and the broker delivers the batch again;
- otherwise each requeued item is republished alone to the queue it came from (through
  the default exchange, like a retry without a new retry count) and each rejected item
  (`nack(requeue=False)`) is dead-lettered alone to `munggoggo.dlx`; the AMQP message is
  acked once the broker confirmed every copy. A copy refused or lost requeues the AMQP
  message whole: its other items are then delivered again (at-least-once allows it).
- an item whose copy cannot be sent (its headers are no AMQP field table, or too large
  for a content header frame: a foreign writer's batch): requeued, the AMQP message is
  requeued whole; rejected, it is dead-lettered without its own headers (ours say why,
  and where it came from); only when even that copy cannot be sent is the AMQP message
  rejected whole to the queue's dead-letter exchange.

A failed step hands its item to core/handoff.py like any message: the retry or dead letter
is a copy of that item alone, and the item settles when the broker confirmed the copy. An
item settled after its channel closed or reopened does nothing (the broker redelivers the
batch). A batch whose body is malformed (`BatchFormatError`, any failure to decode it) is
dead-lettered whole, as a body that cannot be decoded is; so is a batch whose items cannot
be read for any other reason: the other deliveries of the consumer callback go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from ._speedups import (
    Delivery,
    FrameError,
    Properties,
    PropertiesTooLarge,
    check_header_fits,
    encode_properties,
)
from .agent_base import AgentBase
from .amqp.errors import AMQPError
from .batch_format import BATCH_CONTENT_TYPE, BATCH_COUNT_HEADER, BatchFormatError, unpack_items
from .header_copy import copy_headers
from .message import Message, copy_properties
from .wire import (
    AGENT_HEADER,
    BEHAVIOUR_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DELAY_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    RETRIES_HEADER,
)

if TYPE_CHECKING:
    from .engine import ChannelProtocol

log = logging.getLogger("munggoggo.agent")

__all__ = ["BatchReader", "BatchSettler"]

# An item's outcome, one byte each in `BatchSettler.outcomes`.
PENDING, ACKED, REQUEUED, REJECTED = 0, 1, 2, 3

REJECTED_REASON = "rejected by its consumer (an item of a batch)"
HEADERS_DROPPED = "; its own headers could not be copied and were left out"
# What copying an item raises when its headers or properties cannot travel on AMQP.
_UNCOPYABLE = (PropertiesTooLarge, ValueError, TypeError, FrameError)


class BatchSettler:
    """Settles the items of one batch: what their `Message`s hold as their channel.

    It implements what a `Message` calls on its channel (`generation`, `is_open`,
    `ack_later`, `nack`) and records each item's outcome; when the last item is settled
    the agent settles the AMQP message (`BatchReader.settle_batch`).

    Args:
        reader: the agent that read the batch.
        channel: the channel that delivered the AMQP message.
        delivery: the AMQP message's delivery.
        items: a delivery per item, in order (delivery tag = index).
        queue: the queue it was consumed from.
        behaviour: the consuming behaviour's short name ("" for the inbox).

    Attributes:
        channel: the channel that delivered the AMQP message.
        delivery: the AMQP message's delivery.
        items: the items' deliveries, in order.
        queue: the queue it was consumed from.
        behaviour: the consuming behaviour's short name ("" for the inbox).
        delivered_generation: the channel's generation when the batch was delivered.
        outcomes: each item's outcome (0 pending, 1 acked, 2 requeued, 3 rejected).
    """

    __slots__ = (
        "_left",
        "_reader",
        "behaviour",
        "channel",
        "delivered_generation",
        "delivery",
        "items",
        "outcomes",
        "queue",
    )

    def __init__(
        self,
        reader: BatchReader,
        channel: ChannelProtocol,
        delivery: Delivery,
        items: list[Delivery],
        queue: str,
        behaviour: str,
    ) -> None:
        self._reader = reader
        self.channel = channel
        self.delivery = delivery
        self.items = items
        self.queue = queue
        self.behaviour = behaviour
        self.delivered_generation = channel.generation
        self.outcomes = bytearray(len(items))
        self._left = len(items)

    @property
    def generation(self) -> int:
        """The real channel's generation: an item from before a reopen is stale."""
        return self.channel.generation

    @property
    def is_open(self) -> bool:
        """Whether the real channel is open."""
        return self.channel.is_open

    @property
    def settled(self) -> bool:
        """Whether every item is settled (the AMQP message is being settled, or is)."""
        return not self._left

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """An item is done with.

        Args:
            delivery_tag: the item's index.
            generation: the channel generation the item was delivered on.

        Returns:
            False if the channel reopened since, or the item was settled already.
        """
        return self._settle(delivery_tag, generation, ACKED)

    def nack(
        self,
        delivery_tag: int,
        multiple: bool = False,
        requeue: bool = True,
        *,
        generation: int | None = None,
    ) -> bool:
        """An item is refused: requeued (alone, or with the whole batch) or dead-lettered
        alone.

        Args:
            delivery_tag: the item's index.
            multiple: ignored (items are settled one at a time).
            requeue: back to its queue (True) or to the dead-letter exchange (False).
            generation: the channel generation it was delivered on (None: the current).

        Returns:
            False if the channel reopened since, or the item was settled already.
        """
        return self._settle(delivery_tag, generation, REQUEUED if requeue else REJECTED)

    def reject(
        self, delivery_tag: int, requeue: bool = True, *, generation: int | None = None
    ) -> bool:
        """As `nack`, for one item.

        Args:
            delivery_tag: the item's index.
            requeue: back to its queue (True) or to the dead-letter exchange (False).
            generation: the channel generation it was delivered on (None: the current).

        Returns:
            False if the channel reopened since, or the item was settled already.
        """
        return self._settle(delivery_tag, generation, REQUEUED if requeue else REJECTED)

    def _settle(self, index: int, generation: int | None, outcome: int) -> bool:
        channel = self.channel
        if generation is not None and generation != self.delivered_generation:
            return False
        # Reopened or closed: the broker requeued the batch and delivers it again.
        if self.delivered_generation != channel.generation or not channel.is_open:
            return False
        outcomes = self.outcomes
        if outcomes[index] != PENDING:
            return False
        outcomes[index] = outcome
        self._left -= 1
        if not self._left:
            self._reader.settle_batch(self)
        return True

    def __repr__(self) -> str:
        return (
            f"<BatchSettler tag={self.delivery.delivery_tag} items={len(self.items)} "
            f"left={self._left}>"
        )


class BatchReader(AgentBase):
    """The agent's batch role: unpacks batches, settles them once their items are."""

    def _unbatch(
        self, channel: ChannelProtocol, queue: str, behaviour: str, batch: list[Delivery]
    ) -> list[Message]:
        """The messages of a consumer callback's deliveries, batches unpacked into items.

        Args:
            channel: the channel that delivered them.
            queue: the queue they were consumed from.
            behaviour: the consuming behaviour's short name.
            batch: the deliveries (at least one is a batch).

        Returns:
            A message per plain delivery and per item, in order; a malformed batch gives
            none (it is dead-lettered).
        """
        messages = []
        redelivered = 0
        for d in batch:
            if d.properties.content_type != BATCH_CONTENT_TYPE:
                messages.append(Message(d, channel, queue))
                continue
            settler = self.read_batch_guarded(d, channel, queue, behaviour)
            if settler is None:
                continue
            messages.extend([Message(item, settler, queue) for item in settler.items])
            if d.redelivered:  # the caller counts the AMQP message, this the other items
                redelivered += len(settler.items) - 1
        if redelivered:
            self.stats.count(self.stats.redelivered, behaviour, redelivered)
        return messages

    def read_batch_guarded(
        self, delivery: Delivery, channel: ChannelProtocol, queue: str, behaviour: str
    ) -> BatchSettler | None:
        """Unpack one batch (as `_read_batch`); a batch that cannot be read for any reason
        is dead-lettered whole, so it never costs the other deliveries of its callback.

        Args:
            delivery: the batch's delivery.
            channel: the channel that delivered it.
            queue: the queue it was consumed from.
            behaviour: the consuming behaviour's short name ("" for the inbox).

        Returns:
            Its settler, None when it was dead-lettered.
        """
        try:
            return self._read_batch(delivery, channel, queue, behaviour)
        except Exception as exc:  # a bug or a body no check foresaw: that batch's alone
            log.exception("agent %s: cannot read a batch from %r", self.identity, queue)
            msg = Message(delivery, channel, queue)
            self._dead_letter(msg, f"{type(exc).__name__}: {exc}", behaviour or None)
            return None

    def _read_batch(
        self, delivery: Delivery, channel: ChannelProtocol, queue: str, behaviour: str
    ) -> BatchSettler | None:
        """Unpack one batch: its settler, holding a delivery per item; None when the body
        is malformed (it is dead-lettered whole, and counted).
        """
        self.stats.count(self.stats.batches_received, behaviour)
        p = delivery.properties
        try:
            items = unpack_items(delivery.body, (p.headers or {}).get(BATCH_COUNT_HEADER))
        except BatchFormatError as exc:
            # A body that can never be read, as a DecodeError in a step: dead-lettered
            # with the reason, once the broker confirmed the copy.
            msg = Message(delivery, channel, queue)
            self._dead_letter(msg, f"BatchFormatError: {exc}", behaviour or None)
            return None
        deliveries = []
        for index, item in enumerate(items):
            d = Delivery(delivery.channel, delivery.kind)
            d.consumer_tag = delivery.consumer_tag
            d.delivery_tag = index
            d.redelivered = delivery.redelivered
            d.exchange = delivery.exchange
            d.routing_key = delivery.routing_key
            d.body = item.body
            # The item's content type and headers; every other property is the batch's.
            d.properties = Properties(
                content_type=item.content_type,
                content_encoding=p.content_encoding,
                headers=item.headers,
                delivery_mode=p.delivery_mode,
                priority=p.priority,
                correlation_id=p.correlation_id,
                reply_to=p.reply_to,
                expiration=p.expiration,
                message_id=p.message_id,
                timestamp=p.timestamp,
                type=p.type,
                user_id=p.user_id,
                app_id=p.app_id,
                cluster_id=p.cluster_id,
            )
            deliveries.append(d)
        return BatchSettler(self, channel, delivery, deliveries, queue, behaviour)

    def settle_batch(self, settler: BatchSettler) -> None:
        """Every item of a batch is settled: settle the AMQP message (see the module
        docstring for how).

        Args:
            settler: the batch's settler.
        """
        channel, gen = settler.channel, settler.delivered_generation
        tag = settler.delivery.delivery_tag
        outcomes = settler.outcomes
        if outcomes.count(ACKED) == len(outcomes):
            channel.ack_later(tag, gen)
            return
        if outcomes.count(REQUEUED) == len(outcomes):
            channel.nack(tag, requeue=True, generation=gen)  # the broker redelivers it whole
            return
        # Every copy is built (and its properties encoded and sized) before any is sent:
        # a copy found impossible half-way would otherwise requeue the whole batch after
        # some of its items went out alone, delivering those twice.
        copies: list[tuple[bytes, str, str, bytes]] = []
        try:
            for index, outcome in enumerate(outcomes):
                if outcome == ACKED:
                    continue
                dead = outcome == REJECTED
                try:
                    copies.append(self._item_copy(settler, index, dead))
                except _UNCOPYABLE as exc:
                    if not dead:
                        # It cannot go back alone: the whole batch goes back (its other
                        # items are delivered again, at-least-once allows it).
                        self._log_uncopyable(settler, exc, "requeueing the batch")
                        channel.nack(tag, requeue=True, generation=gen)
                        return
                    self._log_uncopyable(settler, exc, "dead-lettering it without its headers")
                    copies.append(self._item_copy(settler, index, dead, own_headers=False))
        except _UNCOPYABLE as exc:
            # Not even a copy without its headers can be sent: nothing else is left than
            # the queue's dead-letter exchange taking the batch as it came.
            self._log_uncopyable(settler, exc, "rejecting the batch instead")
            channel.nack(tag, requeue=False, generation=gen)
            return
        except Exception as exc:  # a bug: the batch goes back rather than stay unsettled
            log.exception("agent %s: settling a batch failed: %s", self.identity, exc)
            channel.nack(tag, requeue=True, generation=gen)
            return
        seqs = []
        try:
            publish = self._pub.publish
            for body, exchange, routing_key, props in copies:
                seqs.append(publish(body, exchange, routing_key, props))
        except AMQPError as exc:  # the connection is down: the broker requeues it anyway
            log.warning("agent %s: cannot send a batch item's copy (%s)", self.identity, exc)
            channel.nack(tag, requeue=True, generation=gen)
            return
        except Exception as exc:  # a bug, or stopped: the batch goes back, never pending
            log.exception("agent %s: sending a batch item's copy failed: %s", self.identity, exc)
            channel.nack(tag, requeue=True, generation=gen)
            return
        task = self.loop.create_task(self._finish_batch(settler, seqs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log_uncopyable(self, settler: BatchSettler, exc: Exception, instead: str) -> None:
        log.error(
            "agent %s: cannot send a copy of an item of a batch from %r (%s: %s); %s",
            self.identity,
            settler.delivery.properties.app_id,
            type(exc).__name__,
            exc,
            instead,
        )

    def _item_copy(
        self, settler: BatchSettler, index: int, dead: bool, *, own_headers: bool = True
    ) -> tuple[bytes, str, str, bytes]:
        """A copy of one item, ready to publish: (body, exchange, routing key, encoded
        properties), back to its queue or dead-lettered. Without `own_headers` the copy
        carries only the headers we set. Raises what a publish of it would raise for its
        properties (PropertiesTooLarge, ValueError, TypeError), before anything is sent.
        """
        item = settler.items[index]
        origin = {
            ORIGINAL_EXCHANGE_HEADER: item.exchange,
            ORIGINAL_ROUTING_KEY_HEADER: item.routing_key,
        }
        queue = settler.queue
        changes: dict[str, Any] = {}
        exchange, routing_key = "", queue
        if dead:
            retries = (item.properties.headers or {}).get(RETRIES_HEADER)
            valid = isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0
            changes = {
                REASON_HEADER: REJECTED_REASON
                if own_headers
                else REJECTED_REASON + HEADERS_DROPPED,
                DEAD_LETTER_ID_HEADER: uuid.uuid4().hex[:16],
                DEAD_LETTERED_AT_HEADER: int(time.time()),
                AGENT_HEADER: self.identity,
                QUEUE_HEADER: queue,
                RETRIES_HEADER: retries if valid else 0,
            }
            if settler.behaviour:
                changes[BEHAVIOUR_HEADER] = settler.behaviour
            exchange, routing_key = DEAD_LETTER_EXCHANGE, queue or item.routing_key
        if own_headers:
            headers = copy_headers(item, changes, defaults=origin, drop=(DELAY_HEADER,))
        else:
            headers = {**origin, **changes}
        props = encode_properties(copy_properties(item, headers, delivery_mode=self._delivery_mode))
        check_header_fits(len(props), self._pub.connection.frame_max)
        return item.body, exchange, routing_key, props

    async def _finish_batch(self, settler: BatchSettler, seqs: list[int]) -> None:
        channel, gen = settler.channel, settler.delivered_generation
        tag = settler.delivery.delivery_tag
        try:
            for seq in seqs:
                await self._pub.wait_confirm_of(seq)
        except asyncio.CancelledError:
            channel.nack(tag, requeue=True, generation=gen)  # stopping: the batch goes back
            raise
        except Exception as exc:  # refused, connection lost: never left pending
            log.error(
                "agent %s: a batch item's copy was not confirmed, the batch goes back to "
                "its queue: %s: %s",
                self.identity,
                type(exc).__name__,
                exc,
            )
            channel.nack(tag, requeue=True, generation=gen)
            return
        channel.ack_later(tag, gen)
