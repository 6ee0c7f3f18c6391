"""The engine contract: what the runtime needs of a broker connection and of a channel.

Two engines implement it: RabbitMQ (`client.Connection`, `channel.Channel`) and the
in-process broker (`memory.MemoryConnection`, `memory.MemoryChannel`). The runtime (agents,
behaviours, dead letters, the gateway) holds a `ConnectionProtocol` / `ChannelProtocol` and
never asks which engine it has. The errors and records both engines raise and return live
here too, so neither engine imports the other. mypy checks in CI that both engines satisfy
the protocols (tests/test_engine.py).

Delivery tags are only meaningful with the channel `generation` they came from: an engine
reopens a channel (after a reconnect, or after the broker closed it with an error) with
`generation` + 1, and settling a tag of an older generation is a no-op that returns False.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._speedups import Delivery, Properties
from .amqp.errors import AMQPError

if TYPE_CHECKING:
    from .metrics import FastHistogram
    from .url import BrokerURL

__all__ = [
    "ChannelProtocol",
    "ConnectionProtocol",
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
    """Publishes the broker did not accept: nacked, or lost with their connection."""

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
    """The broker's answer to a queue declare."""

    queue: str
    message_count: int
    consumer_count: int


@dataclass(slots=True)
class Consumer:
    """A consumer as the application asked for it; an engine restores it after a reopen."""

    tag: str
    queue: str
    callback: DeliveryCallback
    no_ack: bool
    exclusive: bool
    arguments: dict[str, Any] | None
    on_cancel: Callable[[str], None] | None


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class ChannelProtocol(Protocol):
    """One channel of a connection: topology, consuming, settling, publishing with confirms.

    Every async method waits until the channel is open (through a reopen); a method the
    broker refuses raises its `BrokerError` and the channel reopens by itself.
    """

    # Set by the runtime; None means "log it".
    on_return: ReturnCallback | None
    on_publish_failure: PublishFailureCallback | None
    sample_confirms: bool  # whether `confirm_seconds` samples confirm latency

    @property
    def connection(self) -> ConnectionProtocol:
        """The connection this channel belongs to."""
        ...

    @property
    def id(self) -> int:
        """The channel number."""
        ...

    @property
    def generation(self) -> int:
        """Bumps on every (re)open; delivery tags of older generations are void."""
        ...

    @property
    def confirms(self) -> bool:
        """Whether publisher confirms are on."""
        ...

    @property
    def is_open(self) -> bool:
        """Open and usable now (not recovering, not closed)."""
        ...

    @property
    def unconfirmed(self) -> int:
        """Publishes awaiting the broker's confirm."""
        ...

    @property
    def writable(self) -> bool:
        """True when publishing may go on without waiting (see `drain`)."""
        ...

    @property
    def acked(self) -> int:
        """Messages acked with `ack_later` (a counter for metrics)."""
        ...

    @property
    def nacked(self) -> int:
        """Messages nacked or rejected (a counter for metrics)."""
        ...

    @property
    def confirm_seconds(self) -> FastHistogram:
        """Sampled confirm latency."""
        ...

    # ------------------------------------------------------------------ topology

    async def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = ...,
        *,
        passive: bool = ...,
        durable: bool = ...,
        auto_delete: bool = ...,
        internal: bool = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None: ...

    async def exchange_delete(self, exchange: str, *, if_unused: bool = ...) -> None: ...

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None: ...

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None: ...

    async def queue_declare(
        self,
        queue: str = ...,
        *,
        passive: bool = ...,
        durable: bool = ...,
        exclusive: bool = ...,
        auto_delete: bool = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> QueueDeclareOk: ...

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None: ...

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None: ...

    async def queue_purge(self, queue: str) -> int:
        """Returns: the number of messages purged."""
        ...

    async def queue_delete(self, queue: str, *, if_unused: bool = ..., if_empty: bool = ...) -> int:
        """Returns: the number of messages deleted with the queue."""
        ...

    async def basic_qos(self, prefetch_count: int, prefetch_size: int = ...) -> None:
        """Per-consumer prefetch for consumers started after this call."""
        ...

    # ------------------------------------------------------------------ consuming

    async def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        no_ack: bool = ...,
        exclusive: bool = ...,
        consumer_tag: str | None = ...,
        arguments: dict[str, Any] | None = ...,
        on_cancel: Callable[[str], None] | None = ...,
    ) -> str:
        """Start a consumer; `on_cancel(tag)` runs if the broker cancels it.

        Returns: the consumer tag.
        """
        ...

    async def cancel(self, consumer_tag: str) -> None: ...

    def is_consuming(self, consumer_tag: str) -> bool:
        """Whether that consumer consumes here: started, and cancelled by nobody."""
        ...

    async def get(self, queue: str, *, no_ack: bool = ...) -> Delivery | None:
        """Basic.Get: one message, or None when the queue is empty."""
        ...

    # ------------------------------------------------------------------ settling

    def ack(self, delivery_tag: int, multiple: bool = ..., *, generation: int | None = ...) -> bool:
        """Returns: False if the tag is void (the channel reopened since)."""
        ...

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """Ack at the end of this loop tick (coalesced). Returns: False if the tag is void."""
        ...

    def nack(
        self,
        delivery_tag: int,
        multiple: bool = ...,
        requeue: bool = ...,
        *,
        generation: int | None = ...,
    ) -> bool: ...

    def reject(
        self, delivery_tag: int, requeue: bool = ..., *, generation: int | None = ...
    ) -> bool: ...

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        body: bytes,
        exchange: str = ...,
        routing_key: str = ...,
        properties: Properties | bytes | None = ...,
        *,
        mandatory: bool = ...,
    ) -> int:
        """Publish without waiting. Returns: the confirm sequence number (0 without confirms).

        Raises:
            PropertiesTooLarge: the properties do not fit one content header frame.
            ConnectionLost: the channel is not open and cannot keep the publish.
        """
        ...

    async def drain(self, timeout: float | None = ...) -> None:
        """Wait until publishing may go on. Raises: DrainTimeout, ConnectionLost."""
        ...

    async def wait_confirms(self, upto: int | None = ..., timeout: float | None = ...) -> None:
        """Wait until every publish up to `upto` is settled. Raises: PublishError."""
        ...

    async def wait_confirm_of(self, seq: int, timeout: float | None = ...) -> None:
        """Wait until the publish `seq` is settled. Raises: PublishError (its own only)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class ConnectionProtocol(Protocol):
    """A broker connection: opens channels; RabbitMQ's recovers by itself after a drop."""

    @property
    def url(self) -> BrokerURL:
        """The broker URL connected to (or being tried)."""
        ...

    @property
    def name(self) -> str | None:
        """The connection name the broker shows (None: the client library's default)."""
        ...

    @property
    def heartbeat(self) -> int:
        """The negotiated heartbeat in seconds (0: none)."""
        ...

    @property
    def frame_max(self) -> int:
        """The largest frame, in bytes."""
        ...

    @property
    def server_properties(self) -> dict[str, Any]: ...

    @property
    def reconnects(self) -> int:
        """Recoveries so far."""
        ...

    @property
    def on_reconnect(self) -> list[Callable[[Any], Any]]:
        """Called with the connection after each recovery."""
        ...

    @property
    def on_lost(self) -> list[Callable[[Any, BaseException], Any]]:
        """Called with the connection and the reason when it drops."""
        ...

    @property
    def is_open(self) -> bool: ...

    @property
    def is_closed(self) -> bool:
        """Closed for good (by `close()`, or recovery gave up)."""
        ...

    @property
    def is_blocked(self) -> bool:
        """The broker blocks publishers (a resource alarm)."""
        ...

    @property
    def state(self) -> str:
        """new, connecting, open, recovering, closing or closed."""
        ...

    async def connect(self) -> ConnectionProtocol: ...

    async def channel(
        self,
        *,
        confirms: bool = ...,
        prefetch_count: int | None = ...,
        max_unconfirmed: int = ...,
    ) -> ChannelProtocol:
        """Open a new channel (with publisher confirms unless `confirms=False`)."""
        ...

    async def close(self, timeout: float = ...) -> None: ...

    async def wait_closed(self) -> None: ...
