"""Direct reply-to on the memory:// broker: `amq.rabbitmq.reply-to` as RabbitMQ serves it.

A channel consumes the pseudo queue `amq.rabbitmq.reply-to` (no_ack only, one such
consumer per channel); each such consumer gets a fresh routable name
`amq.rabbitmq.reply-to.<token>`, kept in the broker's `reply_queues` and reached through
the default exchange. A publish from that channel with `reply_to` set to the pseudo name
has it rewritten to the routable one, so the reply finds its way back; replies to a
consumer that is gone go nowhere.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING

from .._speedups import Properties
from ..engine import Consumer
from . import fields
from .errors import BASIC_CONSUME, BASIC_PUBLISH, error
from .queue import Queue, Subscription

if TYPE_CHECKING:
    from .broker import MemoryBroker
    from .channel import MemoryChannel

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."


def subscribe(channel: MemoryChannel, record: Consumer) -> Subscription:
    """The direct reply-to consumer `record` of `channel`, behind a fresh routable name.

    Raises:
        BrokerError: RabbitMQ's 406 for an acking consumer or a second one on the channel.
    """
    if not record.no_ack:
        raise error("PRECONDITION_FAILED", "reply consumer cannot acknowledge", BASIC_CONSUME)
    if channel.reply_consumer is not None:
        raise error("PRECONDITION_FAILED", "reply consumer already set", BASIC_CONSUME)
    broker = channel.connection.broker
    # A fresh routable name per consumer: replies to an older one go nowhere.
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    pseudo = Queue(broker, REPLY_TO_PREFIX + token, pseudo=True)
    sub = Subscription(channel, record, pseudo, 0)
    pseudo.subs.append(sub)
    broker.reply_queues[pseudo.name] = pseudo
    return sub


def unsubscribe(broker: MemoryBroker, sub: Subscription) -> None:
    """The reply consumer went: its routable name routes nowhere from now on."""
    queue = sub.queue
    broker.reply_queues.pop(queue.name, None)
    queue.deleted = True
    queue.subs.clear()


def rewrite(reply: Subscription | None, props: Properties, raw: bytes) -> bytes:
    """The encoded properties of a publish with `reply_to` set to the pseudo name, that
    name rewritten to the routable one of `reply`, the publishing channel's reply
    consumer (as RabbitMQ does; on `props`, the publish's private copy).

    Raises:
        BrokerError: 406 when the channel has no reply consumer.
    """
    if reply is None:
        raise error("PRECONDITION_FAILED", "fast reply consumer does not exist", BASIC_PUBLISH)
    props.reply_to = reply.queue.name
    return fields.with_headers_table(props, fields.headers_table(raw))
