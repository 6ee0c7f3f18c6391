"""Settling deliveries whose properties could not be decoded: one bad message each.

The frame reader does not fail the connection over one message's content: a delivery whose
properties it cannot decode (headers nested deeper than `MAX_TABLE_DEPTH`, an unknown field
type) arrives with `Delivery.properties_error` set and empty properties. The agent runtime
cannot hand such a message to a behaviour (its kind, sender and headers are unknown) and
cannot dead-letter a copy with a reason header (its headers cannot be re-encoded), so it
rejects it without requeue: the queue's dead-letter exchange (`munggoggo.dlx` on every agent
queue) takes the message as it is, RabbitMQ's `x-death` says `rejected`, and the reason is
logged here, once per message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._speedups import Delivery
from .engine import ChannelProtocol

log = logging.getLogger("munggoggo.agent")

__all__ = ["reject_undecodable"]


def reject_undecodable(
    batch: list[Delivery],
    channel: ChannelProtocol,
    queue: str,
    on_rejected: Callable[[], None] | None = None,
) -> list[Delivery]:
    """Reject (without requeue) the deliveries of `batch` whose properties are undecodable.

    Args:
        batch: deliveries of one consumer callback, all from `channel`'s current generation.
        channel: the channel (engine or memory://) they came from.
        queue: the queue they were consumed from, for the log line.
        on_rejected: called once per rejected delivery (to count it).

    Returns:
        `batch` itself when every delivery is fine (the usual case: nothing is copied),
        otherwise a new list of the fine ones, in order.
    """
    for delivery in batch:
        if delivery.properties_error is not None:
            break
    else:
        return batch
    fine = []
    for delivery in batch:
        reason = delivery.properties_error
        if reason is None:
            fine.append(delivery)
            continue
        log.warning(
            "queue %r: rejecting message %d (exchange %r, routing key %r) to the dead-letter "
            "exchange: its properties cannot be decoded: %s",
            queue,
            delivery.delivery_tag,
            delivery.exchange,
            delivery.routing_key,
            reason,
        )
        channel.reject(delivery.delivery_tag, requeue=False)
        if on_rejected is not None:
            on_rejected()
    return fine
