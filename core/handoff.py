"""Retry, dead-letter and the copies they travel as: what happens to a message whose
handling failed.

A behaviour step that raised with a message unsettled retries it: a copy with the retry
count in `x-munggoggo-retries` goes back to the queue it came from, until it failed
`max_redeliveries` times (or can never be decoded); then a copy goes to `munggoggo.dlx`
with the reason and its origin in headers (core/wire.py). With `AgentConfig.retry_delays`
the n-th retry waits the n-th delay first, in a delay queue of the broker
(core/delays.py), and the number of delays replaces `max_redeliveries`. Either way the
original is acked only once the broker confirmed the copy (a "handoff"): until then it
stays unsettled, and a copy that is refused or lost sends the original back to its queue
instead. A message that cannot be copied at all is rejected without requeue (the queue's
own dead-letter exchange takes it as it came): it costs that message, never the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from . import envelope
from ._speedups import FrameError, PropertiesTooLarge
from .agent_base import AgentBase
from .amqp.errors import AMQPError
from .delays import delay_ms
from .header_copy import copy_headers
from .message import Message, copy_properties
from .wire import (
    AGENT_HEADER,
    BEHAVIOUR_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DELAY_EXCHANGE,
    DELAY_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    RETRIES_HEADER,
)

log = logging.getLogger("munggoggo.agent")


class Handoff(AgentBase):
    """The agent's failure role: retries, dead letters, rejecting what cannot be handled."""

    def retry_or_dead_letter(self, msg: Message, exc: BaseException, behaviour: str) -> None:
        """A step failed with `msg` unsettled: requeue a copy with a retry count (after
        the retry's delay, with `AgentConfig.retry_delays`), or dead-letter it once it
        failed `max_redeliveries` times, or once per delay (or can never be decoded).

        Args:
            msg: the unsettled message.
            exc: what the step raised.
            behaviour: the behaviour's short name (labels the metrics, names the dead
                letter's behaviour).

        Raises:
            RuntimeError: the retry's delay queue was not declared on connect (the
                caller rejects the message to its queue's dead-letter exchange).
        """
        retries = _retry_count(msg.headers.get(RETRIES_HEADER)) + 1
        delays = self.config.retry_delays
        limit = len(delays) if delays else self.config.max_redeliveries
        if retries > limit or isinstance(exc, envelope.DecodeError):
            reason = f"{type(exc).__name__}: {exc}"
            self._dead_letter(msg, reason, behaviour, retries)
            return
        # A retry is a redelivery by our own hand (the broker's flag stays unset on the copy).
        self.stats.count(self.stats.redelivered, behaviour)
        # The copy travels through the default exchange: remember where the first try came
        # from, so a dead letter still names the original exchange and routing key.
        origin = {
            ORIGINAL_EXCHANGE_HEADER: msg.exchange,
            ORIGINAL_ROUTING_KEY_HEADER: msg.routing_key,
        }
        # The copy carries the count back to the queue it came from; the inbox too (an
        # exclusive queue still takes publishes from anyone): a plain requeue there would
        # lose the count and retry a poison message forever.
        changes: dict[str, Any] = {RETRIES_HEADER: retries}
        queue = msg.queue or self.identity
        ms = delay_ms(delays[retries - 1]) if delays else 0
        if not ms:
            self._handoff(msg, "", queue, changes, origin, behaviour, drop=(DELAY_HEADER,))
            return
        # The copy waits in the delay queue, then RabbitMQ dead-letters it to the default
        # exchange with its routing key: the queue it came from. The retry delays' queues
        # were declared on connect, so the copy goes out now, like an immediate retry.
        delay_queue = self._delays.ready(ms, "")
        if delay_queue is None:
            raise RuntimeError(f"the delay queue for a {ms} ms retry was not declared")
        changes[DELAY_HEADER] = delay_queue
        if queue == self.identity:  # stopping must not delete the inbox it comes back to
            due = self.loop.time() + ms / 1000
            self._inbox_retries_due = max(self._inbox_retries_due, due)
        self._handoff(msg, DELAY_EXCHANGE, queue, changes, origin, behaviour)

    def reject_failed(self, msg: Message, exc: BaseException, behaviour: str = "") -> None:
        """Settle a message whose handling failed where no retry can follow (a delivery
        callback, a copy that could not be made): logged, counted as dead-lettered, and
        rejected without requeue, so the queue's dead-letter exchange takes it as it is.
        A message already settled (or handed off) is left alone.

        Args:
            msg: the message.
            exc: what went wrong.
            behaviour: the behaviour it was for ("" for the inbox).
        """
        log.error(
            "agent %s: handling a message from %r failed, rejecting it: %s: %s",
            self.identity,
            msg.sender,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        if not msg.settled:
            self.stats.count(self.stats.dead_lettered, behaviour)
            msg.nack(requeue=False)

    def _dead_letter(
        self, msg: Message, reason: str, behaviour: str | None, retries: int = 0
    ) -> None:
        self.stats.count(self.stats.dead_lettered, behaviour or "")
        log.warning(
            "agent %s: dead-lettering message from %r (%s)", self.identity, msg.sender, reason
        )
        changes: dict[str, Any] = {
            REASON_HEADER: reason[:1000],
            DEAD_LETTER_ID_HEADER: uuid.uuid4().hex[:16],
            DEAD_LETTERED_AT_HEADER: int(time.time()),
            AGENT_HEADER: self.identity,
            QUEUE_HEADER: msg.queue,
            RETRIES_HEADER: retries,
        }
        if behaviour:
            changes[BEHAVIOUR_HEADER] = behaviour
        origin = {  # unless a retry kept them
            ORIGINAL_EXCHANGE_HEADER: msg.exchange,
            ORIGINAL_ROUTING_KEY_HEADER: msg.routing_key,
        }
        self._handoff(
            msg,
            DEAD_LETTER_EXCHANGE,
            msg.queue or msg.routing_key,
            changes,
            origin,
            drop=(DELAY_HEADER,),  # its last delay is over: the header routes nothing now
        )

    def _handoff(
        self,
        msg: Message,
        exchange: str,
        routing_key: str,
        changes: dict[str, Any],
        defaults: dict[str, Any],
        behaviour: str | None = None,
        drop: tuple[str, ...] = (),
    ) -> None:
        """Publish a copy, ack the original once the broker confirmed the copy.

        The copy carries the original's headers byte for byte, with `changes` set,
        `defaults` where the original lacks them and `drop` left out. When no copy can be
        sent, the original is rejected without requeue (the queue's dead-letter exchange
        takes it as it is): a message that cannot be copied costs that message, never the
        consumer.
        """
        try:
            headers = copy_headers(msg.delivery, changes, defaults=defaults, drop=drop)
            # In durable mode a retry or dead letter is persistent even if the original was
            # not (a transient agent's publish reaching our quorum queue): it may land in a
            # durable classic queue (the dead-letter queue on a broker where it is classic).
            props = copy_properties(msg.delivery, headers, delivery_mode=self._delivery_mode)
            seq = self._pub.publish(msg.body, exchange, routing_key, props)
        except AMQPError as exc:  # the connection is down: the broker requeues it anyway
            log.warning("agent %s: cannot send a copy (%s); requeueing", self.identity, exc)
            msg.nack(requeue=True)
            return
        except (PropertiesTooLarge, ValueError, FrameError) as exc:
            # Our headers made the copy too large to send, or the original's cannot be
            # carried on: reject rather than leave it unsettled; the queue's dead-letter
            # exchange takes it as it came (the reason is in this log line).
            log.warning(
                "agent %s: cannot send a copy of a message from %r (%s: %s); "
                "rejecting the original instead",
                self.identity,
                msg.sender,
                type(exc).__name__,
                exc,
            )
            if exchange != DEAD_LETTER_EXCHANGE:  # a dead letter was counted already
                self.stats.count(self.stats.dead_lettered, behaviour or "")
            msg.nack(requeue=False)
            return
        msg.begin_handoff()
        task = self.loop.create_task(self._finish_handoff(msg, seq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_handoff(self, msg: Message, seq: int) -> None:
        try:
            await self._pub.wait_confirm_of(seq)  # this copy's fate, not an earlier one's
        except asyncio.CancelledError:
            msg.end_handoff(ack=False)  # stopping: the original goes back, as it came
            raise
        except Exception as exc:  # refused, connection lost, or a bug: never left pending
            log.error(
                "agent %s: copy not confirmed, original goes back to the queue: %s: %s",
                self.identity,
                type(exc).__name__,
                exc,
            )
            msg.end_handoff(ack=False)
            return
        msg.end_handoff(ack=True)


def _retry_count(value: Any) -> int:
    """The retry header as any client may have set it: a count that is not a non-negative
    int counts as none (int() of a string or list would raise inside the failure path and
    take the behaviour down).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0
