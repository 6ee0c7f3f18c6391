"""The gateway's window on the mesh: one client agent per gateway worker.

Everything the HTTP, JSON-RPC and WebSocket handlers need from the mesh goes through
`Mesh`: calls, publishes, sends, peers, behaviour control, and topic subscriptions. It uses
only the public Agent API and the public engine (`connection.channel()`); it never reaches
into runtime internals.

Subscriptions: one exclusive queue per worker, bound to `munggoggo.topic` with the union of
every client's patterns (a binding per distinct pattern, removed when its last subscriber
leaves). Each received batch is matched against the subscribers' patterns in process and
handed to their callbacks; a callback must not block (WebSocket clients buffer on their side).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from munggoggo import Agent
from munggoggo.agent import TOPIC_EXCHANGE
from munggoggo.message import Message
from munggoggo.template import topic_matches

log = logging.getLogger("munggoggo.gateway.mesh")

Subscriber = Callable[[Message], None]


class Mesh:
    """A connected client agent with the operations the gateway exposes."""

    def __init__(self, url: str | None = None, identity: str | None = None) -> None:
        self.identity = identity or f"gateway-{socket.gethostname()}-{os.getpid()}"
        self.agent = Agent(self.identity, url=url)
        self._subscribers: dict[int, tuple[str, Subscriber]] = {}
        self._pattern_counts: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._channel: Any = None
        self._queue: str | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self.agent.start()
        self._channel = await self.agent.connection.channel(confirms=False, prefetch_count=1024)
        ok = await self._channel.queue_declare(
            f"{self.identity}.subscriptions", exclusive=True, auto_delete=True
        )
        self._queue = ok.queue
        await self._channel.consume(self._queue, self._on_batch, no_ack=True)

    async def stop(self) -> None:
        await self.agent.stop()

    @property
    def connected(self) -> bool:
        conn = self.agent.connection
        return bool(conn is not None and conn.is_open and self.agent.state == "running")

    # -- calls and messages ------------------------------------------------------

    async def call(
        self, target: str, method: str, params: list[Any] | dict[str, Any] | None, timeout: float
    ) -> Any:
        """Call an exposed method; raises munggoggo.RpcError (incl. RpcTimeout)."""
        return await self.agent.call_params(target, method, params or None, timeout=timeout)

    async def publish(
        self, routing_key: str, body: Any, headers: dict[str, Any] | None = None
    ) -> None:
        await self.agent.publish(body, routing_key, headers=headers)

    async def send(self, target: str, body: Any, headers: dict[str, Any] | None = None) -> None:
        await self.agent.send(target, body, headers=headers)

    async def peers(self, wait: float = 0.3) -> list[dict[str, Any]]:
        """Running agents (without this gateway's own client agent)."""
        return [
            p
            for p in await self.agent.peers(timeout=wait)
            if not p["identity"].startswith("gateway-")
        ]

    # -- subscriptions ---------------------------------------------------------------

    async def subscribe(self, pattern: str, callback: Subscriber) -> int:
        """Deliver messages on topics matching `pattern` (`*`, `#`) to `callback`.
        Returns a token for `unsubscribe`."""
        if not pattern or len(pattern.encode()) > 255:
            raise ValueError("a topic pattern is 1 to 255 bytes")
        if self._pattern_counts.get(pattern, 0) == 0:
            await self._channel.queue_bind(self._queue, TOPIC_EXCHANGE, pattern)
        self._pattern_counts[pattern] = self._pattern_counts.get(pattern, 0) + 1
        token = next(self._tokens)
        self._subscribers[token] = (pattern, callback)
        return token

    async def unsubscribe(self, token: int) -> None:
        entry = self._subscribers.pop(token, None)
        if entry is None:
            return
        pattern = entry[0]
        remaining = self._pattern_counts.get(pattern, 1) - 1
        if remaining <= 0:
            self._pattern_counts.pop(pattern, None)
            if self._channel is not None and self._channel.is_open:
                await self._channel.queue_unbind(self._queue, TOPIC_EXCHANGE, pattern)
        else:
            self._pattern_counts[pattern] = remaining

    @property
    def subscriptions(self) -> int:
        return len(self._subscribers)

    def _on_batch(self, batch: list[Any]) -> None:
        subscribers = list(self._subscribers.values())
        if not subscribers:
            return
        for delivery in batch:
            msg = Message(delivery, None, self._queue or "")
            key = delivery.routing_key
            for pattern, callback in subscribers:
                if topic_matches(pattern, key):
                    try:
                        callback(msg)
                    except Exception:
                        log.exception("subscriber for %r failed", pattern)
