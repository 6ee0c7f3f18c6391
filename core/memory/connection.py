"""`MemoryConnection`: a connection to an in-process broker, with `client.Connection`'s API.

It never drops, so nothing is ever recovered: `reconnects` stays 0 and `on_reconnect` /
`on_lost` are never called. Closing it is what a connection dying on RabbitMQ does: the
acks made this tick still reach the broker, unacked deliveries are requeued, consumers go
(auto-delete queues with them), exclusive queues are deleted, and what its channels still
wait for fails with ConnectionLost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from ..amqp.errors import AMQPConnectError, ConnectionLost, LocalProtocolError
from ..url import BrokerURL, parse_url
from .broker import MemoryBroker
from .channel import MemoryChannel

_NEW, _OPEN, _CLOSING, _CLOSED = "new", "open", "closing", "closed"


class MemoryConnection:
    """A connection to an in-process broker, with `client.Connection`'s API.

    `MemoryConnection("memory://name")` joins the broker called name ("default" for a
    bare `memory://`). It never drops, so `reconnects` stays 0 and `on_reconnect` /
    `on_lost` are never called; there is no topology to replay. Keyword arguments of the
    real Connection (reconnect, backoff, ...) are accepted and ignored, except `name`.

    Args:
        url: a memory:// URL (None: `MUNGGOGGO_URL` if it is one, else `memory://`).
        **ignored: the real Connection's keyword arguments; `name` names the connection.

    Raises:
        AMQPConnectError: a URL that is not memory://.
    """

    def __init__(self, url: str | BrokerURL | None = None, **ignored: Any) -> None:
        if url is None:
            env = os.environ.get("MUNGGOGGO_URL", "")
            url = env if env.startswith("memory://") else "memory://"
        self.url = url if isinstance(url, BrokerURL) else parse_url(url)
        if not self.url.is_memory:
            raise AMQPConnectError(f"MemoryConnection serves memory:// URLs, not {self.url}")
        self.name: str = ignored.get("name") or self.url.name or f"memory-{id(self):x}"
        self.frame_max = self.url.frame_max
        self.heartbeat = 0
        self.server_properties: dict[str, Any] = {"product": "munggoggo memory broker"}
        self.reconnects = 0
        self.on_reconnect: list[Callable[[MemoryConnection], Any]] = []
        self.on_lost: list[Callable[[MemoryConnection, BaseException], Any]] = []
        self.loop = asyncio.get_running_loop()
        self.broker: MemoryBroker = MemoryBroker.get(self.url.host)
        self._state = _NEW
        self._channels: dict[int, MemoryChannel] = {}
        self._next_channel_id = 1
        self._closed_future: asyncio.Future[None] = self.loop.create_future()

    def __repr__(self) -> str:
        return f"<MemoryConnection {self.url} {self._state}>"

    @property
    def is_open(self) -> bool:
        """As `ConnectionProtocol.is_open`: connected and not closing."""
        return self._state == _OPEN

    @property
    def is_closed(self) -> bool:
        """As `ConnectionProtocol.is_closed`: closed by `close()`."""
        return self._state == _CLOSED

    @property
    def is_blocked(self) -> bool:
        """Never: the in-process broker raises no resource alarms."""
        return False

    @property
    def state(self) -> str:
        """As `ConnectionProtocol.state`: new, open, closing or closed."""
        return self._state

    @property
    def closed_future(self) -> asyncio.Future[None]:
        """Done once the connection is closed, for waiting on it alongside other futures
        (`wait_closed()` is the coroutine form).
        """
        return self._closed_future

    async def __aenter__(self) -> MemoryConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> MemoryConnection:
        """As `ConnectionProtocol.connect`: join the broker (once)."""
        if self._state != _NEW:
            raise LocalProtocolError(f"connect() on a connection that is {self._state}")
        self.broker.loop = self.loop
        self._state = _OPEN
        await asyncio.sleep(0)
        return self

    async def channel(
        self,
        *,
        confirms: bool = True,
        prefetch_count: int | None = None,
        max_unconfirmed: int = 1024,
    ) -> MemoryChannel:
        """Open a new channel (with publisher confirms unless `confirms=False`)."""
        if self._state != _OPEN:
            raise ConnectionLost(
                f"cannot open a channel: connection to {self.url} is {self._state}"
            )
        channel_id = self._allocate_channel_id()
        # Opened on the broker side as it is made.
        ch = MemoryChannel(self, channel_id, confirms=confirms, max_unconfirmed=max_unconfirmed)
        self._channels[channel_id] = ch
        await asyncio.sleep(0)
        if prefetch_count is not None:
            try:
                await ch.basic_qos(prefetch_count)
            except BaseException:
                await ch.close()
                raise
        return ch

    def _allocate_channel_id(self) -> int:
        limit = self.url.channel_max
        for _ in range(limit):
            cid = self._next_channel_id
            self._next_channel_id = cid % limit + 1
            if cid not in self._channels:
                return cid
        raise LocalProtocolError(f"all {limit} channels of the connection are in use")

    def forget_channel(self, ch: MemoryChannel) -> None:
        """`ch` was closed by its user: its id is free again.

        Args:
            ch: the channel.
        """
        if self._channels.get(ch.id) is ch:
            del self._channels[ch.id]

    async def close(self, timeout: float = 5.0) -> None:
        """Close like a connection dying on RabbitMQ: unacked deliveries are requeued,
        consumers go (auto-delete queues with them), exclusive queues are deleted.
        """
        if self._state in (_CLOSED, _NEW):
            self._state = _CLOSED
            return
        self._state = _CLOSING
        broker = self.broker
        for ch in list(self._channels.values()):
            ch.connection_closing()
        for queue in [q for q in broker.queues.values() if q.owner is self]:
            broker.delete_queue(queue)
        reason = ConnectionLost(f"connection to {self.url} was closed")
        self._state = _CLOSED
        for ch in list(self._channels.values()):
            ch.connection_closed(reason)
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    async def wait_closed(self) -> None:
        """As `ConnectionProtocol.wait_closed`."""
        await asyncio.shield(self._closed_future)
