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
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .url import BrokerURL

from .engine_channel import ChannelProtocol
from .engine_records import (
    Consumer,
    DeliveryCallback,
    DrainTimeout,
    PublishError,
    PublishFailureCallback,
    PublishNacked,
    QueueDeclareOk,
    ReturnCallback,
)

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


# --------------------------------------------------------------------------- protocols


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
    def server_properties(self) -> dict[str, Any]:
        """What the broker said about itself in Connection.Start (product, version, ...)."""
        ...

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
    def is_open(self) -> bool:
        """Open and usable now (not connecting, recovering or closed)."""
        ...

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

    async def connect(self) -> ConnectionProtocol:
        """Connect (once; a failover list is tried in order).

        Returns:
            The connection itself.

        Raises:
            AMQPConnectError: no broker could be reached, or the login was refused.
            LocalProtocolError: it was connected before.
        """
        ...

    async def channel(
        self,
        *,
        confirms: bool = ...,
        prefetch_count: int | None = ...,
        max_unconfirmed: int = ...,
    ) -> ChannelProtocol:
        """Open a new channel (with publisher confirms unless `confirms=False`).

        Args:
            confirms: turn publisher confirms on.
            prefetch_count: the consumer prefetch (`basic_qos`; None: none set, no limit).
            max_unconfirmed: publishes awaiting confirms before `writable` turns False.

        Returns:
            The open channel.

        Raises:
            ConnectionLost: the connection is not open.
            LocalProtocolError: every channel number is in use.
        """
        ...

    async def close(self, timeout: float = ...) -> None:
        """Close cleanly and for good (no recovery after this).

        Args:
            timeout: seconds to wait for the broker's CloseOk before dropping the socket.
        """
        ...

    async def wait_closed(self) -> None:
        """Wait until the connection is closed for good."""
        ...
