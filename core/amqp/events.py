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
    server_properties: dict[str, Any]
    channel_max: int
    frame_max: int
    heartbeat: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is closed: `error` is the broker's reason, None for a clean close.

    During the handshake a refused login arrives as AuthenticationError.
    """

    error: Exception | None


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """A channel is closed: `error` is the broker's reason, None when we closed it."""

    channel: int
    error: BrokerError | None


@dataclass(frozen=True, slots=True)
class MethodReply:
    """The reply to a synchronous method we sent (Queue.DeclareOk, Basic.ConsumeOk, ...)."""

    channel: int
    method: Any


@dataclass(frozen=True, slots=True)
class ConfirmsSettled:
    """One or more broker acks/nacks arrived for a channel in confirm mode.

    `failed` holds (seq, frames) of publishes the broker nacked.
    """

    channel: int
    confirmed_through: int
    failed: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class ConsumerCancelled:
    """The broker cancelled a consumer (its queue was deleted, or the node went away)."""

    channel: int
    consumer_tag: str


@dataclass(frozen=True, slots=True)
class GetEmpty:
    channel: int


@dataclass(frozen=True, slots=True)
class Blocked:
    reason: str


@dataclass(frozen=True, slots=True)
class Unblocked:
    pass


@dataclass(frozen=True, slots=True)
class ChannelFlow:
    channel: int
    active: bool
