"""The gateway's window on the mesh: one client agent per gateway worker.

Everything the HTTP, JSON-RPC and WebSocket handlers need from the mesh goes through
`Mesh`: calls, publishes, sends, broadcasts, peers, behaviour control, topic
subscriptions, and the dead-letter queue (`dead_letters()`). It uses
only the public Agent API and the public engine (`connection.channel()`); it never reaches
into runtime internals. Publishes go through `publisher` (gateway/publisher.py): bounded
waits, a bounded buffer for the broker.

The client agents of the gateway's workers are named `gateway-<host>-<pid>`: every
identity starting with `gateway-` is one of them (`is_gateway_identity`). They are not
agents of the mesh for the gateway's clients: not listed, not callable through the gateway
(whatever worker serves the request: an unknown agent, like any other), and they keep no
traces (their traffic is every client's). They do not announce their presence either
(`AgentConfig(presence=False)`), and presence events about them are not passed on.

Presence: the client agent hears the agents of the mesh start and stop (core/presence.py)
and hands each event to the presence subscribers (`subscribe_presence`), the WebSocket
clients that asked for them.

Subscriptions: one exclusive queue per worker, bound to `munggoggo.topic` with the union of
every client's patterns (a binding per distinct pattern, removed when its last subscriber
leaves). Each received batch is matched against the subscribers' patterns in process and
handed to their callbacks; a callback must not block (WebSocket clients buffer on their side).

A pattern whose last subscriber leaves while the connection is down cannot be unbound then;
the connection's recovery would even bind it again (it replays the bindings it knows). So
it stays due for an unbind, and a background task unbinds what is due once the channel is
open again; a new subscriber of that pattern takes it back first. Binding changes run one
at a time (a lock), so an unbind and a new bind of the same pattern never cross.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from munggoggo.agent import TOPIC_EXCHANGE, Agent
from munggoggo.amqp.errors import AMQPError
from munggoggo.config import AgentConfig
from munggoggo.deadletters import DeadLetters
from munggoggo.engine import ChannelProtocol
from munggoggo.message import Message
from munggoggo.rpc import UNKNOWN_AGENT, RpcError
from munggoggo.topics import topic_matches
from munggoggo.wire import DEAD_LETTER_QUEUE, DELAY_QUEUE_PREFIX, FANOUT_EXCHANGE, GATEWAY_PREFIX

from .publisher import Publisher, PublishRefused, Unroutable
from .topics import topic_problem

log = logging.getLogger("munggoggo.gateway.mesh")

Subscriber = Callable[[Message], None]
PresenceSubscriber = Callable[[str, str], None]  # (identity, "started" or "stopped")

_MAX_NAME = 255  # queue names are AMQP short strings


def is_gateway_identity(identity: str) -> bool:
    """Whether `identity` names a gateway worker's client agent (of any gateway worker)."""
    return identity.startswith(GATEWAY_PREFIX)


def can_be_inbox(target: str) -> bool:
    """Whether a queue named `target` may be an agent's inbox: 1 to 255 bytes, not a
    gateway worker's client agent, not the broker's (`amq.`: publishing to its reply-to
    queues would reach other clients' callers), not the mesh's dead letters or delay
    queues.

    Args:
        target: the identity a client names.

    Returns:
        False for a name no agent of the mesh can have.
    """
    if not target or len(target.encode()) > _MAX_NAME or is_gateway_identity(target):
        return False
    if target.startswith(("amq.", DELAY_QUEUE_PREFIX)):
        return False
    return target != DEAD_LETTER_QUEUE


def unknown_agent(target: str) -> RpcError:
    """The error for an agent that has no inbox (-32001), as calls report it.

    Args:
        target: the identity asked for.

    Returns:
        The RpcError.
    """
    return RpcError(UNKNOWN_AGENT, f"unknown agent {target!r}: no inbox queue of that name")


class NotConnected(AMQPError):
    """The broker connection is down: the mesh refuses at once instead of waiting."""


class Mesh:
    """A connected client agent with the operations the gateway exposes."""

    def __init__(
        self,
        url: str | None = None,
        identity: str | None = None,
        *,
        publish_timeout: float = 1.0,
        publish_buffer: int = 1024,
        publish_buffer_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        """Args:
        url: the broker URL (None: MUNGGOGGO_URL or local RabbitMQ).
        identity: the client agent's identity (default `gateway-<host>-<pid>`).
        publish_timeout, publish_buffer, publish_buffer_bytes: the `Publisher`'s bounds:
            seconds a publish may wait for room; messages and bytes published and not
            yet confirmed by the broker.
        """
        self.identity = identity or f"{GATEWAY_PREFIX}{socket.gethostname()}-{os.getpid()}"
        # No traces: this agent carries every client's calls (their correlation ids).
        # Silent on presence: a gateway worker is no agent of the mesh for its clients.
        self.agent = Agent(self.identity, url=url, config=AgentConfig(trace_size=0, presence=False))
        self.agent.on_presence = self._on_presence
        self._presence_subscribers: dict[int, PresenceSubscriber] = {}
        self.publisher: Publisher | None = None
        self._publish_limits = (publish_timeout, publish_buffer, publish_buffer_bytes)
        self._subscribers: dict[int, tuple[str, Subscriber]] = {}
        self._pattern_counts: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._channel: ChannelProtocol | None = None
        self._queue: str | None = None
        self._binding_lock = asyncio.Lock()
        self._unbind_due: set[str] = set()  # patterns nobody subscribes to, still bound
        self._unbinder: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        agent = self.agent
        await agent.start()
        timeout, max_messages, max_bytes = self._publish_limits
        self.publisher = Publisher(
            await agent.connection.channel(max_unconfirmed=max(1, max_messages)),
            self.identity,
            timeout=timeout,
            max_messages=max(1, max_messages),
            max_bytes=max(1, max_bytes),
            persistent=agent.config.durable,
        )
        self._channel = await agent.connection.channel(confirms=False, prefetch_count=1024)
        ok = await self._channel.queue_declare(
            f"{self.identity}.subscriptions", exclusive=True, auto_delete=True
        )
        self._queue = ok.queue
        await self._channel.consume(self._queue, self._on_batch, no_ack=True)

    async def stop(self) -> None:
        self._stopping = True
        if self._unbinder is not None:
            self._unbinder.cancel()
        if self.publisher is not None:
            await self.publisher.close(self.agent.config.drain_timeout)
        await self.agent.stop()

    @property
    def connected(self) -> bool:
        conn = self.agent.connection
        return bool(conn is not None and conn.is_open and self.agent.state == "running")

    # -- calls and messages ------------------------------------------------------

    async def call(
        self, target: str, method: str, params: list[Any] | dict[str, Any] | None, timeout: float
    ) -> Any:
        """Call an exposed method; raises munggoggo.RpcError (incl. RpcTimeout). A gateway
        worker's client agent is unknown here, as an agent without an inbox is."""
        if is_gateway_identity(target):
            raise unknown_agent(target)
        return await self.agent.call_params(target, method, params or None, timeout=timeout)

    async def publish(
        self, routing_key: str, body: Any, headers: dict[str, Any] | None = None
    ) -> None:
        """Publish on `munggoggo.topic`, waiting at most the publish timeout for room.

        Raises:
            PublishRefused: the broker connection is down (at once), or no room in time.
            ValueError: the routing key breaks the topic rule (gateway/topics.py), or the
                body or headers cannot be encoded or do not fit a frame.
        """
        problem = topic_problem(routing_key)
        if problem:
            raise ValueError(problem)
        publisher = self._connected_publisher()
        data, props = publisher.encode(body, headers)
        await publisher.publish(routing_key, data, props)

    async def send(
        self,
        target: str,
        body: Any,
        headers: dict[str, Any] | None = None,
        *,
        verdict_timeout: float = 5.0,
    ) -> None:
        """Send a direct message to agent `target`'s inbox and wait for the broker's word
        that it is there: published `mandatory`, so the broker returns it when no queue has
        that name. Queues no agent can own are refused without publishing: a gateway
        worker's client agent, the broker's own (`amq.`), the mesh's dead letters and
        delay queues.

        Args:
            target: the agent's identity.
            body: bytes, str (text/plain) or any JSON-encodable value.
            headers: AMQP headers to send with it.
            verdict_timeout: seconds to wait for the broker's confirm once published.

        Raises:
            RpcError: -32001, unknown agent (no inbox of that name; nothing delivered).
            PublishRefused: the broker cannot take it now (nothing of it was kept).
            VerdictTimeout: no confirm in time (it may still arrive).
            ValueError: the body or the headers cannot be encoded or do not fit a frame.
        """
        if not can_be_inbox(target):
            raise unknown_agent(target)
        publisher = self._connected_publisher()
        message_id = publisher.new_message_id()
        data, props = publisher.encode(body, headers, message_id)
        try:
            await publisher.send_direct(
                target, data, props, message_id, verdict_timeout=verdict_timeout
            )
        except Unroutable:
            raise unknown_agent(target) from None

    async def broadcast(self, body: Any, headers: dict[str, Any] | None = None) -> None:
        """Send to every agent's inbox through `munggoggo.fanout`, waiting at most the
        publish timeout for room.

        Args:
            body: bytes, str (text/plain) or any JSON-encodable value.
            headers: AMQP headers to send with it.

        Raises:
            PublishRefused: the broker connection is down (at once), or no room in time.
            ValueError: the body or the headers cannot be encoded or do not fit a frame.
        """
        publisher = self._connected_publisher()
        data, props = publisher.encode(body, headers)
        await publisher.publish("", data, props, exchange=FANOUT_EXCHANGE)

    def _connected_publisher(self) -> Publisher:
        if self.publisher is None:
            raise PublishRefused("the gateway is not connected to the mesh yet")
        return self.publisher

    def dead_letters(self) -> DeadLetters:
        """The mesh's dead-letter queue through this worker's connection.

        Returns:
            A `DeadLetters` on the client agent's connection.

        Raises:
            NotConnected: the broker connection is down.
        """
        if not self.connected:
            raise NotConnected("not connected to the broker; retry later")
        return DeadLetters(self.agent.connection)

    async def peers(self, wait: float = 0.3) -> list[dict[str, Any]]:
        """Running agents, without the gateway workers' client agents."""
        found = await self.agent.peers(timeout=wait)
        return [
            p
            for p in found
            if isinstance(p.get("identity"), str) and not is_gateway_identity(p["identity"])
        ]

    # -- presence --------------------------------------------------------------------

    def subscribe_presence(self, callback: PresenceSubscriber) -> int:
        """Hand every presence event of an agent of the mesh (not of gateway workers) to
        `callback(identity, state)`; it must not block. Returns a token for
        `unsubscribe_presence`."""
        token = next(self._tokens)
        self._presence_subscribers[token] = callback
        return token

    @property
    def running_agents(self) -> list[str]:
        """The agents of the mesh the client agent knows to run (from their presence
        announcements; gateway workers left out), sorted."""
        tracker = self.agent.presence
        known = tracker.peers if tracker is not None else []
        return [identity for identity in known if not is_gateway_identity(identity)]

    def unsubscribe_presence(self, token: int) -> None:
        """Stop handing presence events to the subscriber of `token` (unknown: ignored)."""
        self._presence_subscribers.pop(token, None)

    def _on_presence(self, identity: str, state: str) -> None:
        if is_gateway_identity(identity):
            return  # another worker's client agent (of an older gateway that announced)
        for callback in list(self._presence_subscribers.values()):
            try:
                callback(identity, state)
            except Exception:
                log.exception("presence subscriber failed")

    # -- subscriptions ---------------------------------------------------------------

    async def subscribe(self, pattern: str, callback: Subscriber) -> int:
        """Deliver messages on topics matching `pattern` (`*`, `#`) to `callback`.
        Returns a token for `unsubscribe`."""
        if not pattern or len(pattern.encode()) > 255:
            raise ValueError("a topic pattern is 1 to 255 bytes")
        if self._pattern_counts.get(pattern, 0) == 0:
            if not self.connected:  # binding would wait for the connection to come back
                raise NotConnected("not connected to the broker; retry later")
            async with self._binding_lock:
                # Due for an unbind: not any more (binding again is harmless if it stayed).
                self._unbind_due.discard(pattern)
                channel, queue = self._subscriptions_queue()
                await channel.queue_bind(queue, TOPIC_EXCHANGE, pattern)
        self._pattern_counts[pattern] = self._pattern_counts.get(pattern, 0) + 1
        token = next(self._tokens)
        self._subscribers[token] = (pattern, callback)
        return token

    async def unsubscribe(self, token: int) -> None:
        """Stop delivering to the subscriber of `token` (unknown tokens are ignored). The
        pattern's binding goes with its last subscriber: at once when the connection is up,
        else as soon as it is back (this never waits for the broker to come back)."""
        entry = self._subscribers.pop(token, None)
        if entry is None:
            return
        pattern = entry[0]
        remaining = self._pattern_counts.get(pattern, 1) - 1
        if remaining > 0:
            self._pattern_counts[pattern] = remaining
            return
        self._pattern_counts.pop(pattern, None)
        self._unbind_due.add(pattern)
        if self._channel is not None and self._channel.is_open:
            try:
                await self._unbind_due_patterns()
            except AMQPError as exc:  # the connection went down meanwhile
                log.info("unbinding %r after the connection is back (%s)", pattern, exc)
        if self._unbind_due and self._unbinder is None and not self._stopping:
            self._unbinder = asyncio.get_running_loop().create_task(self._unbind_when_back())

    @property
    def unbinds_due(self) -> frozenset[str]:
        """Patterns nobody subscribes to any more whose binding is still to be removed."""
        return frozenset(self._unbind_due)

    def _subscriptions_queue(self) -> tuple[ChannelProtocol, str]:
        """The channel and queue of the subscriptions, made by `start()` (subscribing
        needs the mesh connected, so after it)."""
        assert self._channel is not None and self._queue is not None
        return self._channel, self._queue

    async def _unbind_due_patterns(self) -> None:
        async with self._binding_lock:
            while self._unbind_due:
                pattern = next(iter(self._unbind_due))
                # Waits for the channel to be open again if it is not.
                channel, queue = self._subscriptions_queue()
                await channel.queue_unbind(queue, TOPIC_EXCHANGE, pattern)
                self._unbind_due.discard(pattern)

    async def _unbind_when_back(self) -> None:
        """Unbind what is due once the channel is open, retrying until it is done or the
        mesh stops."""
        delay = 0.05
        try:
            while self._unbind_due and not self._stopping:
                try:
                    await self._unbind_due_patterns()
                except AMQPError as exc:
                    conn = self.agent.connection
                    if self._stopping or conn is None or getattr(conn, "is_closed", False):
                        return
                    log.info("unbinding %d pattern(s) later: %s", len(self._unbind_due), exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._unbinder = None

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
