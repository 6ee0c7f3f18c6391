"""`Message`: what a behaviour receives. A thin view over a wire Delivery.

Nothing is decoded until asked for: `body` is the raw bytes, `decode()` runs the envelope
codec, properties are read straight from the delivery. Settling (`ack`, `nack`) goes back to
the channel that delivered the message, guarded by the channel generation so a message from
before a reconnect can never ack a different one.

Per-message costs are kept small on purpose (a message is made, handed over, received,
decoded and acked for every delivery): `Message.batch` makes a consumer batch's messages in
one loop, `decode()` goes straight to a cached msgspec decoder for a JSON or msgpack body,
and `ack_all` settles a step's messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from . import envelope

if TYPE_CHECKING:
    from ._speedups import Delivery, Properties

PENDING, ACKED, NACKED, HANDOFF = 0, 1, 2, 3

T = TypeVar("T")

# (content type, type) -> the msgspec decoder decode_body would use, or None: a body it does
# not decode with msgspec. Bounded: content types come from the wire.
_DECODERS: dict[tuple[str | None, Any], Any] = {}
_DECODERS_MAX = 256
_UNKNOWN = object()


class Settler(Protocol):
    """What a message settles through: the channel that delivered it (`ChannelProtocol`),
    or, for an item of a batch, the batch's `BatchSettler` (core/batch_consume.py).
    """

    @property
    def generation(self) -> int:
        """Bumps on every (re)open of the channel; settling an older one does nothing."""
        ...

    @property
    def is_open(self) -> bool:
        """Whether the channel is open."""
        ...

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """Ack, coalesced with others (held up to a millisecond or half the prefetch).

        Args:
            delivery_tag: the delivery's tag.
            generation: the channel generation it was delivered on.

        Returns:
            False if the tag is void.
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
        """Refuse: requeue, or dead-letter.

        Args:
            delivery_tag: the delivery's tag.
            multiple: every unsettled tag up to this one too.
            requeue: back to the queue (True), or dead-lettered (False).
            generation: the channel generation it was delivered on.

        Returns:
            False if the tag is void.
        """
        ...


class Message:
    """A received message. `ack()` happens for you after the behaviour is done with it.

    Behaviours get messages from `receive()`; they are not built by user code.

    Args:
        delivery: the wire delivery (properties, delivery tag, body).
        channel: the channel that delivered it, which settles it (for an item of a
            batch, the batch's settler); None for a message that needs no settling (it
            counts as acked).
        queue: the queue it was consumed from.

    Attributes:
        delivery: the wire delivery underneath (properties, delivery tag, body).
            Read-only by contract: it is a plain attribute because it is read per
            message, but `ack()`, `nack()` and `reject()` settle its delivery tag, so
            assigning another delivery would settle that one's tag instead (on a channel
            where it may belong to another message) and leave this one unsettled.
        queue: the queue it was consumed from ("" if not known).
    """

    __slots__ = ("_channel", "_generation", "_settled", "delivery", "queue")

    def __init__(self, delivery: Delivery, channel: Settler | None, queue: str = "") -> None:
        self.delivery = delivery
        self._channel = channel
        self._generation = channel.generation if channel is not None else 0
        self._settled = PENDING if channel is not None else ACKED
        self.queue = queue

    @classmethod
    def batch(cls, deliveries: list[Delivery], channel: Settler, queue: str) -> list[Message]:
        """The messages of a consumer batch: what `Message(d, channel, queue)` makes for
        each delivery, in one loop (no `__init__` call per message).

        Args:
            deliveries: the batch, all from `channel`'s current generation.
            channel: the channel that delivered them.
            queue: the queue they were consumed from.

        Returns:
            One unsettled message per delivery, in order.
        """
        generation = channel.generation
        new = cls.__new__
        messages: list[Message] = []
        append = messages.append
        for delivery in deliveries:
            msg = new(cls)
            msg.delivery = delivery
            msg._channel = channel
            msg._generation = generation
            msg._settled = PENDING
            msg.queue = queue
            append(msg)
        return messages

    # -- wire data ---------------------------------------------------------------

    @property
    def body(self) -> bytes:
        """The raw body, as it arrived (nothing decoded)."""
        return self.delivery.body

    @property
    def routing_key(self) -> str:
        """The routing key it was published with (a topic, or the inbox's name)."""
        return self.delivery.routing_key

    @property
    def exchange(self) -> str:
        """The exchange it was published to ("" for the default exchange)."""
        return self.delivery.exchange

    @property
    def sender(self) -> str | None:
        """The sending agent's identity (the `app_id` property), None if not given."""
        return self.delivery.properties.app_id

    @property
    def kind(self) -> str:
        """What it is (the `type` property): `message` unless it says `rpc` or `control`."""
        return self.delivery.properties.type or envelope.KIND_MESSAGE

    @property
    def content_type(self) -> str | None:
        """The body's content type (JSON, msgpack, text, bytes), None if not given."""
        return self.delivery.properties.content_type

    @property
    def correlation_id(self) -> str | None:
        """The correlation id (an RPC's call id), None if not given."""
        return self.delivery.properties.correlation_id

    @property
    def reply_to(self) -> str | None:
        """Where a reply goes (an RPC caller's inbox), None if not given."""
        return self.delivery.properties.reply_to

    @property
    def headers(self) -> dict[str, Any]:
        """The AMQP headers (empty if none were sent)."""
        return self.delivery.properties.headers or {}

    @property
    def timestamp(self) -> int | None:
        """When it was published, in epoch seconds (the `timestamp` property), or None."""
        return self.delivery.properties.timestamp

    @property
    def message_id(self) -> str | None:
        """The publisher's message id, None if not given."""
        return self.delivery.properties.message_id

    @property
    def redelivered(self) -> bool:
        """Whether the broker delivered it before (a requeue or a lost consumer)."""
        return self.delivery.redelivered

    # Typed as msgspec's own decode: a class gives an instance of it; anything else msgspec
    # validates into (`list[Point]` is a class too, `int | None` is not) gives Any.
    @overload
    def decode(self, type: None = None) -> Any: ...
    @overload
    def decode(self, type: type[T]) -> T: ...
    @overload
    def decode(self, type: Any) -> Any: ...
    def decode(self, type: Any = None) -> Any:
        """The body as a value: bytes, str, JSON/msgpack builtins, or validated into `type`.

        By its content type: JSON and msgpack bodies are decoded (into builtins, or
        validated into `type`); `text/*` bodies become str and other bodies stay bytes
        unless `type` asks for the other of the two. A body without a content type is
        read as JSON when `type` is given and is neither bytes nor str.

        Args:
            type: what to validate the body into: a msgspec Struct, `int`, `list[Point]`,
                any type msgspec can decode into; None for builtins.

        Returns:
            The decoded value; an instance of `type` when `type` is a class.

        Raises:
            DecodeError: the body is malformed for its content type, does not validate
                into `type`, or `type` is not one its content type can decode into.
            TypeError: msgspec cannot decode into `type` at all (a programming error).
        """
        delivery = self.delivery
        content_type = delivery.properties.content_type
        last = _last_decoder
        if last[0] is content_type and last[1] is type:  # the usual case: as last time
            decoder = last[2]
        else:
            decoder = _decoder(content_type, type)
        if decoder is not None:
            try:
                return decoder.decode(delivery.body)
            except (ValueError, RecursionError):
                pass  # decode_body decodes again and raises the DecodeError saying why
        return envelope.decode_body(delivery.body, content_type, type)

    # -- settling ----------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Whether it was acked, nacked or handed off (retry / dead letter) already."""
        return self._settled != PENDING

    @property
    def stale(self) -> bool:
        """Whether its channel was closed or reopened since it was delivered: the broker
        has requeued it (and delivers it again), so settling this one does nothing.
        """
        channel = self._channel
        return channel is not None and (
            channel.generation != self._generation or not channel.is_open
        )

    def ack(self) -> bool:
        """Acknowledge now (otherwise it happens when the behaviour is done with it).

        The ack is coalesced with others: one multiple-ack goes out within a millisecond,
        or sooner once half the prefetch is waiting, and before any other method of its
        channel.

        Returns:
            False if it was settled already, or its channel was closed or reopened since it
            was delivered (the broker requeued it and delivers it again); else True.
        """
        if self._settled != PENDING:
            return False
        self._settled = ACKED
        # Coalesced: held briefly (core/channel_acks.py), then one multiple-ack for the
        # settled prefix of delivery tags (alone, if an earlier one is still unsettled).
        return self._channel.ack_later(self.delivery.delivery_tag, self._generation)  # type: ignore[union-attr]

    def nack(self, requeue: bool = True) -> bool:
        """Refuse it now: back to its queue, or dead-lettered by the broker.

        Args:
            requeue: put it back in its queue (True), or drop it (False: the broker
                dead-letters it when its queue has a dead-letter exchange).

        Returns:
            False if it was settled already, or its channel was closed or reopened since it
            was delivered; else True.
        """
        if self._settled != PENDING:
            return False
        self._settled = NACKED
        return self._channel.nack(  # type: ignore[union-attr]
            self.delivery.delivery_tag, requeue=requeue, generation=self._generation
        )

    def begin_handoff(self) -> None:
        """A copy of it was published (a retry or a dead letter, core/handoff.py): it is
        settled by `end_handoff` once the broker confirmed the copy, and `ack`/`nack`
        leave it alone meanwhile.
        """
        self._settled = HANDOFF

    def end_handoff(self, ack: bool) -> None:
        """Settle a message handed off: acked when its copy was confirmed, requeued when
        the copy was refused or lost. Nothing happens when it is not handed off.

        Args:
            ack: whether the copy was confirmed.
        """
        if self._settled != HANDOFF:
            return
        self._settled = ACKED if ack else NACKED
        tag, gen = self.delivery.delivery_tag, self._generation
        if ack:
            self._channel.ack_later(tag, gen)  # type: ignore[union-attr]
        else:
            self._channel.nack(tag, requeue=True, generation=gen)  # type: ignore[union-attr]

    def __repr__(self) -> str:
        body = self.body
        shown = body[:40] + (b"..." if len(body) > 40 else b"")
        return (
            f"<Message {self.kind} from {self.sender!r} key={self.routing_key!r} "
            f"{self.content_type or '-'} {shown!r}>"
        )


# The decoder of the last decode() call: (content type, type, decoder). A stream of one
# kind of message finds its decoder here without building and hashing a key.
_last_decoder: tuple[Any, Any, Any] = (_UNKNOWN, _UNKNOWN, None)


def _decoder(content_type: str | None, type: Any) -> Any:
    """The msgspec decoder for a body of `content_type` into `type` (None: none), cached."""
    global _last_decoder
    try:
        decoder = _DECODERS.get((content_type, type), _UNKNOWN)
    except TypeError:  # an unhashable type annotation: not cached
        return None
    if decoder is _UNKNOWN:
        decoder = envelope.body_decoder(content_type, type)
        if len(_DECODERS) < _DECODERS_MAX:
            _DECODERS[content_type, type] = decoder
    _last_decoder = (content_type, type, decoder)
    return decoder


def ack_all(messages: list[Message]) -> None:
    """Ack every message of `messages` not settled yet (`msg.ack()` for each, in one
    loop), then empty the list: a behaviour settling what its step received.

    Args:
        messages: received messages; emptied.
    """
    for msg in messages:
        if msg._settled == PENDING:
            msg._settled = ACKED
            msg._channel.ack_later(msg.delivery.delivery_tag, msg._generation)  # type: ignore[union-attr]
    messages.clear()


def copy_properties(
    delivery: Delivery,
    headers: dict[str, Any],
    *,
    expiration: str | None = None,
    delivery_mode: int | None = None,
) -> Properties:
    """The properties for a copy of a received message: a retry, a dead letter, a requeue.

    They are the original ones with new `headers`. `user_id` is left out: RabbitMQ refuses
    a publish whose user_id is not the publishing user, and whoever publishes the copy is
    rarely the original sender. `expiration` only when the caller passes it on: a retried
    copy starts its life anew.

    Args:
        delivery: the received message's delivery.
        headers: the copy's headers.
        expiration: the copy's per-message TTL (None: none).
        delivery_mode: 2 to make the copy persistent (durable mode); None keeps the
            original's.

    Returns:
        The copy's properties.
    """
    from ._speedups import Properties

    p = delivery.properties
    return Properties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        headers=headers,
        delivery_mode=delivery_mode or p.delivery_mode,  # durable mode makes copies persistent
        priority=p.priority,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        expiration=expiration,
        message_id=p.message_id,
        timestamp=p.timestamp,
        type=p.type,
        app_id=p.app_id,
    )
