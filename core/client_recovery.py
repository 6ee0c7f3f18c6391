"""Recovering a lost connection: reconnect with backoff, then restore what the application
built, in an order that keeps every dependency satisfied.

1. Reconnect (every broker URL in order, `transport.Backoff` between rounds).
2. Reopen every channel on the wire with the same id, qos and confirm mode.
3. Replay the topology (exchanges, queues, bindings; `topology.Topology`) on a helper
   channel; a server-named queue that came back under a new name is renamed in the topology
   and in the consumers that used it. A broker refusal is logged and skipped, not fatal.
4. Hand back the channels without consumers first (a delivery to a restored consumer may be
   handled at once and publish on one of them), then restore consumers and hand back the rest;
   each channel republishes what the broker never confirmed (or fails it, `republish=False`).
5. Call the `on_reconnect` callbacks.

`ConnectionRecovery` is a part of `client.Connection` (a mixin): the attributes it names
below are the connection's own, set up in `Connection.__init__`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import client_state as states
from .amqp.errors import AMQPError, BrokerError
from .channel import Channel
from .topology import Topology
from .transport import AMQPStream, Backoff
from .url import BrokerURL

if TYPE_CHECKING:
    from .amqp.connection import AMQPConnection
    from .client import Connection

__all__ = ["ConnectionRecovery"]

log = logging.getLogger("munggoggo.client")


class ConnectionRecovery:
    """Reconnecting and restoring topology, channels, consumers and unconfirmed publishes."""

    # The connection's attributes this part reads (set up by Connection.__init__).
    url: BrokerURL
    urls: tuple[BrokerURL, ...]
    republish: bool
    backoff: Backoff
    topology: Topology
    reconnects: int
    on_reconnect: list[Callable[[Connection], Any]]
    _state: str
    _stream: AMQPStream | None
    _amqp_conn: AMQPConnection | None
    _channels: dict[int, Channel]

    if TYPE_CHECKING:  # the connection's own methods (client.Connection)

        async def _establish(self) -> None: ...
        def _update_flow(self) -> None: ...
        def _allocate_channel_id(self) -> int: ...
        def schedule_flush(self) -> None: ...

    async def _recover(self) -> None:
        while self._state == states.RECOVERING:
            await asyncio.sleep(self.backoff.next_delay())
            if self._state != states.RECOVERING:
                return
            try:
                await self._establish()
            except (AMQPError, OSError) as exc:
                if len(self.urls) == 1:  # with several, _establish logged each URL's failure
                    log.warning("reconnect to %s failed: %s", self.url, exc)
                if self._stream is not None:
                    self._stream.abort()
                continue
            try:
                await self._restore()
            except (AMQPError, OSError) as exc:
                log.warning("reconnect to %s failed: %s", self.url, exc)
                if self._stream is not None:
                    self._stream.abort()
                continue
            self.backoff.reset()
            self.reconnects += 1
            self._state = states.OPEN
            self._update_flow()
            log.info("reconnected to %s (recovery #%d)", self.url, self.reconnects)
            for cb in self.on_reconnect:
                try:
                    result = cb(self)  # type: ignore[arg-type]
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("on_reconnect callback failed")
            return

    async def _restore(self) -> None:
        """Reopen channels, replay topology, restore consumers, then republish."""
        channels = sorted(self._channels.values(), key=lambda c: c.id)
        for ch in channels:
            await ch.open_on_wire()
        await self._replay_topology(channels)
        # Channels without consumers first: a delivery to a restored consumer may be
        # handled at once and publish (an RPC reply, a handoff) on one of them.
        consuming = [ch for ch in channels if ch.has_consumers]
        for ch in channels:
            if not ch.has_consumers:
                ch.mark_ready()
                ch.republish_or_fail(self.republish)
        for ch in consuming:
            await ch.restore_consumers()
        for ch in consuming:
            ch.mark_ready()
            ch.republish_or_fail(self.republish)

    async def _replay_topology(self, channels: list[Channel]) -> None:
        if not len(self.topology):
            return
        helper = Channel(self, self._allocate_channel_id(), confirms=False)  # type: ignore[arg-type]
        self._channels[helper.id] = helper
        try:
            await helper.open_on_wire()
            helper.mark_ready()
            topo = self.topology
            for ex in list(topo.exchanges.values()):
                await self._replay(
                    helper,
                    helper.exchange_declare(
                        ex.name,
                        ex.type,
                        durable=ex.durable,
                        auto_delete=ex.auto_delete,
                        internal=ex.internal,
                        arguments=ex.arguments,
                    ),
                    f"exchange {ex.name!r}",
                )
            for q in list(topo.queues.values()):
                ok = await self._replay(
                    helper,
                    helper.queue_declare(
                        "" if q.server_named else q.name,
                        durable=q.durable,
                        exclusive=q.exclusive,
                        auto_delete=q.auto_delete,
                        arguments=q.arguments,
                    ),
                    f"queue {q.name!r}",
                )
                if ok is not None and q.server_named and ok.queue != q.name:
                    topo.renamed(q.name, ok.queue)
                    for ch in channels:
                        ch.rename_queue(q.name, ok.queue)
            for b in list(topo.bindings):
                if b.kind == "queue":
                    coro = helper.queue_bind(b.destination, b.source, b.routing_key, b.arguments)
                else:
                    coro = helper.exchange_bind(b.destination, b.source, b.routing_key, b.arguments)
                await self._replay(helper, coro, f"binding {b.source!r} -> {b.destination!r}")
        finally:
            self._channels.pop(helper.id, None)
            if helper.is_open and self._amqp_conn is not None:
                self._amqp_conn.close_channel(helper.id)
                self.schedule_flush()

    @staticmethod
    async def _replay(helper: Channel, coro: Any, what: str) -> Any:
        """Redeclare one thing; a broker refusal is logged and skipped, not fatal."""
        try:
            return await coro
        except BrokerError as exc:
            log.error("could not restore %s after reconnect: %s", what, exc)
            if not helper.is_open:
                await helper.open_on_wire()
                helper.mark_ready()
            return None
