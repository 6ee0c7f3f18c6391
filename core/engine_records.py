"""The records, errors and callback types of the engine contract (`munggoggo.engine`).

Both engines (RabbitMQ and memory://) return these records and raise these errors, so
they live below both, in a module of their own that imports neither engine.
`munggoggo.engine` re-exports every name here: import them from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._speedups import Delivery
from .amqp.errors import AMQPError

__all__ = [
    "Consumer",
    "DeliveryCallback",
    "DrainTimeout",
    "PublishError",
    "PublishFailureCallback",
    "PublishNacked",
    "QueueDeclareOk",
    "ReturnCallback",
]

DeliveryCallback = Callable[[list[Delivery]], None]
"""A consumer's callback: one call per batch of deliveries, in order."""
ReturnCallback = Callable[[Delivery], None]
"""Called with a mandatory publish the broker could not route (reply code 312)."""
PublishFailureCallback = Callable[[list[tuple[int, Exception]]], None]
"""Called with [(sequence number, error)] for publishes the broker will never confirm."""


# --------------------------------------------------------------------------- errors


class PublishError(AMQPError):
    """Publishes the broker did not accept: nacked, or lost with their connection.

    Args:
        failures: (sequence number, error) of each publish, at least one.

    Attributes:
        failures: (sequence number, error) of each publish.
    """

    def __init__(self, failures: list[tuple[int, Exception]]) -> None:
        self.failures = failures
        first = failures[0][1]
        super().__init__(
            f"{len(failures)} publish(es) not confirmed (seq {failures[0][0]}"
            f"{'...' if len(failures) > 1 else ''}): {first}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles its message alone; rebuild from the failures instead.
        return (type(self), (self.failures,))


class PublishNacked(AMQPError):
    """The broker nacked a publish (an internal error on its side, e.g. a full disk)."""


class DrainTimeout(AMQPError, TimeoutError):
    """`drain(timeout)` ran out: the channel could not take more publishes in time."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class QueueDeclareOk:
    """The broker's answer to a queue declare.

    Attributes:
        queue: the queue's name (the broker's choice when the declare named none).
        message_count: messages ready in it.
        consumer_count: consumers on it.
    """

    queue: str
    message_count: int
    consumer_count: int


@dataclass(slots=True)
class Consumer:
    """A consumer as the application asked for it; an engine restores it after a reopen.

    Attributes:
        tag: the consumer tag.
        queue: the queue consumed.
        callback: called with each batch of deliveries.
        no_ack: whether the broker counts a message as acked once sent.
        exclusive: whether it is the queue's only consumer.
        arguments: the consume arguments (`x-priority`, ...), or None.
        on_cancel: called with the tag when the broker cancels it, or None.
    """

    tag: str
    queue: str
    callback: DeliveryCallback
    no_ack: bool
    exclusive: bool
    arguments: dict[str, Any] | None
    on_cancel: Callable[[str], None] | None
