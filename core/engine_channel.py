"""The engine contract's channel: `ChannelProtocol`, what the runtime needs of a channel.

Split from `munggoggo.engine` (which re-exports it, with the connection's protocol and the
records) to keep each module readable; import it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._speedups import Delivery, Properties
from .engine_records import (
    DeliveryCallback,
    PublishFailureCallback,
    QueueDeclareOk,
    ReturnCallback,
)

if TYPE_CHECKING:
    from .engine import ConnectionProtocol
    from .metrics import FastHistogram

__all__ = ["ChannelProtocol"]


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
    def confirmed_through(self) -> int:
        """Every publish with a sequence number up to this one is settled (acked, nacked or
        failed), even when the broker confirmed later ones first; 0 without confirms.
        """
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
    ) -> None:
        """Declare an exchange (or check that it exists, `passive`).

        Args:
            exchange: its name.
            exchange_type: direct, fanout, topic or headers.
            passive: only check that it exists.
            durable: whether it survives a broker restart.
            auto_delete: delete it when its last binding goes.
            internal: whether publishers cannot publish to it (only exchange bindings).
            arguments: declare arguments (`alternate-exchange`, ...).

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            NotFound: `passive` and it does not exist.
            PreconditionFailed: it exists with other properties.
        """
        ...

    async def exchange_delete(self, exchange: str, *, if_unused: bool = ...) -> None:
        """Delete an exchange (nothing happens when it does not exist).

        Args:
            exchange: its name.
            if_unused: only if it has no bindings.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            PreconditionFailed: `if_unused` and it has bindings.
        """
        ...

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None:
        """Bind an exchange to another: what reaches `source` and matches goes on.

        Args:
            destination: the exchange that receives.
            source: the exchange routed from.
            routing_key: the binding key.
            arguments: binding arguments (a headers exchange's match).

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            NotFound: either exchange does not exist.
        """
        ...

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None:
        """Remove an exchange-to-exchange binding.

        Args:
            destination: the exchange that received.
            source: the exchange routed from.
            routing_key: the binding key.
            arguments: the binding's arguments.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
        """
        ...

    async def queue_declare(
        self,
        queue: str = ...,
        *,
        passive: bool = ...,
        durable: bool = ...,
        exclusive: bool = ...,
        auto_delete: bool = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> QueueDeclareOk:
        """Declare a queue (or check that it exists, `passive`).

        Args:
            queue: its name ("": the broker names it).
            passive: only check that it exists.
            durable: whether it survives a broker restart.
            exclusive: only this connection may use it; it goes with the connection.
            auto_delete: delete it when its last consumer goes.
            arguments: declare arguments (`x-queue-type`, `x-expires`, ...).

        Returns:
            Its name, ready messages and consumers.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            NotFound: `passive` and it does not exist.
            PreconditionFailed: it exists with other properties.
            ResourceLocked: another connection holds it exclusively.
        """
        ...

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None:
        """Bind a queue to an exchange.

        Args:
            queue: the queue.
            exchange: the exchange routed from.
            routing_key: the binding key (a topic pattern on a topic exchange).
            arguments: binding arguments (a headers exchange's match).

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            NotFound: the queue or the exchange does not exist.
        """
        ...

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> None:
        """Remove a queue's binding.

        Args:
            queue: the queue.
            exchange: the exchange routed from.
            routing_key: the binding key.
            arguments: the binding's arguments.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
        """
        ...

    async def queue_purge(self, queue: str) -> int:
        """Drop a queue's ready messages.

        Args:
            queue: the queue.

        Returns:
            The number of messages purged.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            NotFound: the queue does not exist.
        """
        ...

    async def queue_delete(self, queue: str, *, if_unused: bool = ..., if_empty: bool = ...) -> int:
        """Delete a queue (nothing happens when it does not exist).

        Args:
            queue: the queue.
            if_unused: only if it has no consumers.
            if_empty: only if it holds no messages.

        Returns:
            The number of messages deleted with the queue.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            PreconditionFailed: `if_unused` or `if_empty` and it is not.
        """
        ...

    async def basic_qos(self, prefetch_count: int, prefetch_size: int = ...) -> None:
        """Per-consumer prefetch for consumers started after this call.

        Args:
            prefetch_count: unacked messages a consumer may hold (0: no limit).
            prefetch_size: unacked bytes a consumer may hold (0: no limit).
        """
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

        Args:
            queue: the queue to consume.
            callback: called with each batch of deliveries, in order.
            no_ack: the broker counts a message as acked once sent.
            exclusive: be the queue's only consumer.
            consumer_tag: the tag (None: the engine makes one).
            arguments: consume arguments (`x-priority`, ...).
            on_cancel: called with the tag when the broker cancels the consumer (its queue
                was deleted, ...).

        Returns:
            The consumer tag.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            NotFound: the queue does not exist.
            AccessRefused: `exclusive` and the queue has a consumer, or another consumer
                holds it exclusively.
        """
        ...

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer (nothing happens for a tag that does not consume here).

        Args:
            consumer_tag: the consumer's tag.
        """
        ...

    def is_consuming(self, consumer_tag: str) -> bool:
        """Whether that consumer consumes here: started, and cancelled by nobody.

        Args:
            consumer_tag: the consumer's tag.

        Returns:
            True if it consumes.
        """
        ...

    async def get(self, queue: str, *, no_ack: bool = ...) -> Delivery | None:
        """Basic.Get: one message, or None when the queue is empty.

        Args:
            queue: the queue.
            no_ack: the broker counts the message as acked once sent.

        Returns:
            The delivery, or None.

        Raises:
            BrokerError: the broker refused it (the channel reopens by itself).
            NotFound: the queue does not exist.
        """
        ...

    # ------------------------------------------------------------------ settling

    def ack(self, delivery_tag: int, multiple: bool = ..., *, generation: int | None = ...) -> bool:
        """Ack a delivery now (written at the end of this loop tick).

        Args:
            delivery_tag: the delivery's tag.
            multiple: ack every unacked delivery up to it too.
            generation: the channel generation it was delivered on (None: the current).

        Returns:
            False if the tag is void (the channel reopened since, or is closed).
        """
        ...

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """Ack at the end of this loop tick, coalesced with the others into multiple-acks.

        Args:
            delivery_tag: the delivery's tag.
            generation: the channel generation it was delivered on.

        Returns:
            False if the tag is void (the channel reopened since, or is closed).
        """
        ...

    def nack(
        self,
        delivery_tag: int,
        multiple: bool = ...,
        requeue: bool = ...,
        *,
        generation: int | None = ...,
    ) -> bool:
        """Refuse a delivery: back to its queue, or dead-lettered.

        Args:
            delivery_tag: the delivery's tag.
            multiple: refuse every unsettled delivery up to it too.
            requeue: put it back in its queue (False: drop or dead-letter it).
            generation: the channel generation it was delivered on (None: the current).

        Returns:
            False if the tag is void (the channel reopened since, or is closed).
        """
        ...

    def reject(
        self, delivery_tag: int, requeue: bool = ..., *, generation: int | None = ...
    ) -> bool:
        """Refuse one delivery (Basic.Reject): back to its queue, or dead-lettered.

        Args:
            delivery_tag: the delivery's tag.
            requeue: put it back in its queue (False: drop or dead-letter it).
            generation: the channel generation it was delivered on (None: the current).

        Returns:
            False if the tag is void (the channel reopened since, or is closed).
        """
        ...

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
        """Publish without waiting.

        Args:
            body: the message body.
            exchange: the exchange ("": the default exchange, routing to the queue named).
            routing_key: the routing key.
            properties: the basic properties, or already encoded ones.
            mandatory: have the broker return it (`on_return`) when no queue takes it.

        Returns:
            The confirm sequence number (0 without confirms).

        Raises:
            PropertiesTooLarge: the properties do not fit one content header frame.
            ConnectionLost: the channel is not open and cannot keep the publish.
        """
        ...

    async def drain(self, timeout: float | None = ...) -> None:
        """Wait until publishing may go on (`writable`).

        Args:
            timeout: seconds to wait at most (None: no limit).

        Raises:
            DrainTimeout: the timeout ran out.
            ConnectionLost: the connection closed for good.
        """
        ...

    async def wait_confirms(self, upto: int | None = ..., timeout: float | None = ...) -> None:
        """Wait until every publish up to `upto` is settled.

        Args:
            upto: the last sequence number waited for (None: every publish so far).
            timeout: seconds to wait at most (None: no limit).

        Raises:
            PublishError: publishes of the range were nacked or lost.
            TimeoutError: the timeout ran out.
        """
        ...

    async def wait_confirm_of(self, seq: int, timeout: float | None = ...) -> None:
        """Wait until the publish `seq` is settled.

        Args:
            seq: its sequence number, as `publish` returned it.
            timeout: seconds to wait at most (None: no limit).

        Raises:
            PublishError: this publish (its own failure only) was nacked or lost.
            TimeoutError: the timeout ran out.
        """
        ...

    async def close(self) -> None:
        """Close the channel for good (it is not reopened after this)."""
        ...
