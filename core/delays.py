"""Delayed delivery: messages that wait in the broker, not in our memory, before they
reach their queue (`publish(..., delay=s)`, `send(..., delay=s)`, `AgentConfig.retry_delays`).

No plugin is needed (the delayed-message exchange is not installed everywhere): a delayed
message is published to the headers exchange `munggoggo.delay` with the routing key it
will finally travel with and the header `x-munggoggo-delay` naming its delay queue,
`munggoggo.delay.<ms>.<target>`. That queue (durable, shared by every agent of the mesh)
has `x-message-ttl = <ms>` and its target exchange as `x-dead-letter-exchange`, and no
dead-letter routing key: when the message expires, RabbitMQ dead-letters it to the target
exchange with its own routing key, so it arrives where an undelayed publish would have,
at the earliest `<ms>` later. Targets: `direct` (the default exchange: an agent's inbox, or
the queue a retry goes back to), `topic` (`munggoggo.topic`) and `fanout`
(`munggoggo.fanout`). One queue per (delay, target): every message in it waits equally
long, so the one at its head always expires first (a queue TTL never blocks behind a
longer one, as per-message `expiration` in one queue would).

A delayed message is in the broker once the publish is confirmed: it survives the
sending and the receiving agent's restarts. It does not survive its target going away (a
queue deleted, an agent whose inbox expired meanwhile): RabbitMQ drops what it cannot
route when dead-lettering. Rare path (a declare per new delay and connection): no
hot-path constraints.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable
from typing import Any

from .amqp.errors import PreconditionFailed
from .durable import QUORUM, QUORUM_ARGUMENTS, TRANSIENT, normalize_queue_type
from .engine import ChannelProtocol, ConnectionProtocol
from .wire import DELAY_EXCHANGE, DELAY_HEADER, DELAY_QUEUE_PREFIX, DELAY_TARGETS, MAX_TTL_MS

__all__ = [
    "MAX_DELAY_MS",
    "DelayQueues",
    "delay_binding",
    "delay_ms",
    "delay_queue_arguments",
    "delay_queue_name",
    "retry_delays",
]

log = logging.getLogger("munggoggo.delays")

MAX_DELAY_MS = MAX_TTL_MS  # a delay queue's x-message-ttl: RabbitMQ's TTL ceiling


def delay_ms(seconds: float) -> int:
    """A delay in whole milliseconds, rounded up (delivered no earlier than asked).

    Args:
        seconds: the delay; 0 means none.

    Returns:
        The delay in milliseconds (0: deliver at once).

    Raises:
        TypeError: not a number (a bool is no delay).
        ValueError: negative, not finite, or over ten years (RabbitMQ's TTL ceiling).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"a delay is a number of seconds, got {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a delay is a finite number of seconds >= 0, got {seconds!r}")
    # Rounded to the microsecond first: 0.7 * 1000 is 700.0000000000001, meant as 700.
    ms = math.ceil(round(seconds * 1000, 3))
    if ms > MAX_DELAY_MS:
        raise ValueError(f"a delay is at most ten years ({MAX_DELAY_MS} ms), got {seconds!r}")
    return ms


def retry_delays(delays: Iterable[float] | None) -> tuple[float, ...]:
    """`AgentConfig.retry_delays` checked: a tuple of delays in seconds.

    Args:
        delays: the delays given (any iterable of numbers; None: none).

    Returns:
        The delays as a tuple of floats.

    Raises:
        TypeError: not an iterable of numbers.
        ValueError: a delay that `delay_ms` refuses.
    """
    if delays is None:
        return ()
    if isinstance(delays, str | bytes) or not isinstance(delays, Iterable):
        raise TypeError(
            f"retry_delays is a sequence of seconds, such as (0.5, 2.0), got {delays!r}"
        )
    out = tuple(delays)
    for seconds in out:
        delay_ms(seconds)
    return tuple(float(s) for s in out)


def delay_queue_name(ms: int, exchange: str) -> str:
    """The delay queue for messages that wait `ms` and then go to `exchange`.

    Args:
        ms: the delay in milliseconds.
        exchange: the target exchange: "" (the default exchange), `munggoggo.topic` or
            `munggoggo.fanout`.

    Returns:
        `munggoggo.delay.<ms>.<target>`, target being `direct`, `topic` or `fanout`.

    Raises:
        ValueError: an exchange messages cannot be delayed to.
    """
    target = DELAY_TARGETS.get(exchange)
    if target is None:
        raise ValueError(
            f"messages cannot be delayed to exchange {exchange!r}: only to "
            + ", ".join(repr(e) for e in DELAY_TARGETS)
        )
    return f"{DELAY_QUEUE_PREFIX}{ms}.{target}"


def delay_queue_arguments(ms: int, exchange: str, queue_type: str) -> dict[str, Any]:
    """The declare arguments of a delay queue.

    Args:
        ms: its delay in milliseconds (its `x-message-ttl`).
        exchange: the target exchange (its `x-dead-letter-exchange`).
        queue_type: "transient" (a durable classic queue) or "quorum".

    Returns:
        The arguments. No `x-dead-letter-routing-key`: an expired message keeps its own.
    """
    arguments: dict[str, Any] = {"x-message-ttl": ms, "x-dead-letter-exchange": exchange}
    if queue_type == QUORUM:
        arguments.update(QUORUM_ARGUMENTS)
    return arguments


def delay_binding(queue: str) -> dict[str, Any]:
    """The binding arguments of a delay queue on `munggoggo.delay`.

    `all-with-x`: plain `all` skips header names starting with `x-` and would match
    every message.

    Args:
        queue: the delay queue's name.

    Returns:
        The arguments: a message whose `x-munggoggo-delay` header is `queue` gets there.
    """
    return {"x-match": "all-with-x", DELAY_HEADER: queue}


class DelayQueues:
    """The delay queues one agent publishes through, each declared once per connection.

    Declarations go out on a channel of their own: a refusal (a queue of the other type)
    closes that channel, never one that publishes or consumes. The client records them
    and declares them again after a reconnect.

    Args:
        connection: the agent's connection.
        queue_type: the agent's mode, as `AgentConfig.queue_type` takes it (None is
            transient): delay queues it creates are of this type; one that exists with
            the other type is used as it is (the mesh shares them).
    """

    def __init__(self, connection: ConnectionProtocol, queue_type: str | None) -> None:
        self._connection = connection
        self._queue_type = normalize_queue_type(queue_type)
        self._channel: ChannelProtocol | None = None
        self._declared: dict[tuple[int, str], str] = {}
        self._lock = asyncio.Lock()

    def ready(self, ms: int, exchange: str) -> str | None:
        """The delay queue for (`ms`, `exchange`) if it was declared, else None.

        Args:
            ms: the delay in milliseconds.
            exchange: the target exchange.

        Returns:
            The queue's name, or None.
        """
        return self._declared.get((ms, exchange))

    async def ensure(self, ms: int, exchange: str) -> str:
        """Declare the delay exchange, and the delay queue for (`ms`, `exchange`) with its
        binding, unless done already on this connection.

        Args:
            ms: the delay in milliseconds (> 0).
            exchange: the target exchange.

        Returns:
            The delay queue's name: what the `x-munggoggo-delay` header names.

        Raises:
            ValueError: an exchange messages cannot be delayed to.
            AMQPError: the broker refused a declaration, or the connection is down.
        """
        queue = self._declared.get((ms, exchange))
        if queue is not None:
            return queue
        queue = delay_queue_name(ms, exchange)
        async with self._lock:  # concurrent first uses of a delay declare it once
            if (ms, exchange) in self._declared:
                return queue
            ch = self._channel
            if ch is None or not ch.is_open:
                ch = self._channel = await self._connection.channel(confirms=False)
            if not self._declared:
                await ch.exchange_declare(DELAY_EXCHANGE, "headers", durable=True)
            await self._declare_queue(ch, queue, ms, exchange)
            await ch.queue_bind(queue, DELAY_EXCHANGE, "", arguments=delay_binding(queue))
            self._declared[(ms, exchange)] = queue
        return queue

    async def _declare_queue(self, ch: ChannelProtocol, queue: str, ms: int, exchange: str) -> None:
        """The agent's type first, then the other one: the queue is the mesh's, and the
        first agent to use a delay chose its type (as with `munggoggo.dead-letters`).
        """
        other = TRANSIENT if self._queue_type == QUORUM else QUORUM
        for attempt in (self._queue_type, other):
            arguments = delay_queue_arguments(ms, exchange, attempt)
            try:
                await ch.queue_declare(queue, durable=True, arguments=arguments)
                return
            except PreconditionFailed as exc:
                # The refusal closed the channel; the client reopens it.
                if attempt == other or "x-queue-type" not in exc.reply_text:
                    raise
                log.info("delay queue %r exists as a %s queue: used as it is", queue, other)
