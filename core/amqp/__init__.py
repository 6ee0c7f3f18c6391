"""munggoggo.amqp: the sans-IO AMQP 0-9-1 protocol layer (no sockets, no asyncio)."""

from . import events
from .connection import AMQPConnection, ChannelState
from .errors import (
    AccessRefused,
    AMQPConnectError,
    AMQPError,
    AuthenticationError,
    BrokerError,
    ConnectionLost,
    LocalProtocolError,
    NotFound,
    PreconditionFailed,
    RemoteProtocolError,
    ResourceLocked,
    broker_error,
)
from .state import ChanState, ConnState

__all__ = [
    "AMQPConnectError",
    "AMQPConnection",
    "AMQPError",
    "AccessRefused",
    "AuthenticationError",
    "BrokerError",
    "ChanState",
    "ChannelState",
    "ConnState",
    "ConnectionLost",
    "LocalProtocolError",
    "NotFound",
    "PreconditionFailed",
    "RemoteProtocolError",
    "ResourceLocked",
    "broker_error",
    "events",
]
