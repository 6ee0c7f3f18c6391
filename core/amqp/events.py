"""Events the sans-IO connection hands to its owner, one small frozen class each.

Deliveries are not wrapped: `munggoggo._speedups.Delivery` records are events themselves,
so the hot path allocates nothing per message beyond the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import BrokerError


@dataclass(frozen=True, slots=True)
class ConnectionOpened:
    """The handshake is done: the connection is open with the tuned limits.

    Attributes:
        server_properties: what the broker said about itself (product, version, ...).
        channel_max: the most channels, as negotiated.
        frame_max: the largest frame in bytes, as negotiated.
        heartbeat: the heartbeat interval in seconds, as negotiated (0: none).
    """

    server_properties: dict[str, Any]
    channel_max: int
    frame_max: int
    heartbeat: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is closed: `error` is the broker's reason, None for a clean close.

    During the handshake a refused login arrives as AuthenticationError.

    Attributes:
        error: the reason (a BrokerError, AuthenticationError, ...), or None.
    """

    error: Exception | None


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """A channel is open (Channel.OpenOk).

    Attributes:
        channel: the channel number.
    """

    channel: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """A channel is closed: `error` is the broker's reason, None when we closed it.

    Attributes:
        channel: the channel number.
        error: the broker's reason, or None.
    """

    channel: int
    error: BrokerError | None


@dataclass(frozen=True, slots=True)
class MethodReply:
    """The reply to a synchronous method we sent (Queue.DeclareOk, Basic.ConsumeOk, ...).

    Attributes:
        channel: the channel number.
        method: the reply (a pamqp method frame).
    """

    channel: int
    method: Any


@dataclass(frozen=True, slots=True)
class ConfirmsSettled:
    """One or more broker acks/nacks arrived for a channel in confirm mode.

    Attributes:
        channel: the channel number.
        confirmed_through: every publish up to this sequence number is settled.
        failed: (sequence number, frames) of the publishes the broker nacked.
    """

    channel: int
    confirmed_through: int
    failed: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class ConsumerCancelled:
    """The broker cancelled a consumer (its queue was deleted, or the node went away).

    Attributes:
        channel: the channel number.
        consumer_tag: the consumer's tag.
    """

    channel: int
    consumer_tag: str


@dataclass(frozen=True, slots=True)
class GetEmpty:
    """A Basic.Get found the queue empty.

    Attributes:
        channel: the channel number.
    """

    channel: int


@dataclass(frozen=True, slots=True)
class Blocked:
    """The broker blocks publishers (a resource alarm: memory or disk).

    Attributes:
        reason: the broker's reason.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Unblocked:
    """The broker accepts publishes again."""


@dataclass(frozen=True, slots=True)
class ChannelFlow:
    """The broker asked a channel to pause or resume sending content (Channel.Flow).

    Attributes:
        channel: the channel number.
        active: True to resume, False to pause.
    """

    channel: int
    active: bool
