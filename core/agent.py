"""The Agent: identity, connection, behaviours, messaging patterns, RPC, control plane.

An agent owns one broker connection with two channels: one publishes (with confirms), one
consumes its inbox `<identity>` (exclusive: the identity lock) and its behaviours' queues
`<identity>.<behaviour>` (bound to `munggoggo.topic`). Deliveries arrive in batches and go
to behaviour mailboxes; the inbox dispatches RPC replies to waiting calls, RPC/control
requests to `@expose`d methods, and direct messages to the behaviour whose template matches.
What nobody can handle is dead-lettered to `munggoggo.dlx` with the reason in a header.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from . import envelope, tracing
from ._speedups import FrameError, Properties, PropertiesTooLarge, encode_properties
from .amqp.errors import AccessRefused, AMQPError, ResourceLocked
from .behaviour import Behaviour
from .config import AgentConfig, agent_config
from .consumer_restore import ConsumerRestorer
from .control import TraceStore
from .durable import (
    PERSISTENT,
    declare_behaviour_queue,
    declare_dead_letter_queue,
    declare_inbox,
)
from .eager import run_eagerly
from .engine import ChannelProtocol, ConnectionProtocol, DeliveryCallback, PublishError
from .header_copy import copy_headers
from .lifecycle import abort_start, refused_by_stopping, undo_behaviour_start
from .message import Message, copy_properties
from .metrics import COLLECTOR, AgentStats
from .reachability import Reachability
from .rpc import (
    METHOD_NOT_FOUND,
    TIMEOUT,
    UNAVAILABLE,
    AgentUnreachable,
    RpcError,
    RpcTimeout,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
    exception_error,
    expose,
    exposed_methods,
    is_notification,
)
from .tracing import HEADER as TRACE_HEADER
from .tracing import TRACEPARENT, adopt, outgoing_headers
from .undecodable import reject_undecodable
from .url import BrokerURL, parse_urls
from .wire import (
    AGENT_HEADER,
    BEHAVIOUR_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_ID_HEADER,
    DEAD_LETTER_QUEUE,
    DEAD_LETTERED_AT_HEADER,
    FANOUT_EXCHANGE,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    RETRIES_HEADER,
    TOPIC_EXCHANGE,
)

log = logging.getLogger("munggoggo.agent")


CREATED, STARTING, RUNNING, STOPPING, STOPPED = (
    "created",
    "starting",
    "running",
    "stopping",
    "stopped",
)


class IdentityInUse(AMQPError):
    """Another running agent already holds this identity (it consumes the inbox)."""


def identity_in_use(identity: str, url: BrokerURL) -> IdentityInUse:
    return IdentityInUse(
        f"agent identity {identity!r} is already in use on {url}: another running agent "
        "consumes its inbox queue"
    )


async def declare_inbox_or_fail(
    channel: ChannelProtocol, identity: str, expires_ms: int | None, url: BrokerURL
) -> None:
    """declare_inbox, with an older version's exclusive inbox held by a running agent
    reported as the identity in use."""
    try:
        await declare_inbox(channel, identity, expires_ms)
    except ResourceLocked:
        raise identity_in_use(identity, url) from None


async def open_connection(url: BrokerURL | tuple[BrokerURL, ...], name: str) -> ConnectionProtocol:
    """A connected client for the URL (or failover list): the real AMQP client, or the
    in-process broker."""
    urls = url if isinstance(url, tuple) else (url,)
    if urls[0].is_memory:
        from .memory import MemoryConnection

        return await MemoryConnection(urls[0]).connect()
    from .client import Connection

    return await Connection(urls, name=name).connect()


class Agent:
    """Subclass it, add behaviours in `setup()`, mark RPC methods with `@expose`."""

    def __init__(
        self,
        identity: str | None = None,
        *,
        url: str | list[str] | None = None,
        config: AgentConfig | Mapping[str, Any] | None = None,
    ):
        self.identity = identity or f"agent-{uuid.uuid4().hex[:8]}"
        if (
            not self.identity
            or len(self.identity.encode()) > 200
            or any(c.isspace() for c in self.identity)
        ):
            raise ValueError(
                f"invalid agent identity {self.identity!r}: 1-200 bytes, no whitespace"
            )
        self.urls = parse_urls(url)  # several: failover, tried in order (README)
        self.config = agent_config(config)
        self.state = CREATED
        self.behaviours: dict[str, Behaviour] = {}
        self.trace = TraceStore(self.config.trace_size)
        self._tracing = self.config.trace_size > 0
        self.connection: ConnectionProtocol = None  # type: ignore[assignment]  # until connected
        # Called with [(sequence number, error)] for publishes the broker will never
        # confirm (publish/send/broadcast return the sequence number); they are logged too.
        self.on_publish_failure: Callable[[list[tuple[int, Exception]]], None] | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.started_at: float | None = None
        self.stats = AgentStats()  # read by the Prometheus collector at scrape time
        self._exposed = exposed_methods(type(self))
        # The three channels exist from connect on (None before).
        # Confirmed publishes: pub/sub, direct, broadcast, handoffs.
        self._pub: ChannelProtocol = None  # type: ignore[assignment]
        # RPC requests and replies: no confirms, the caller's timeout covers a lost
        # request or reply, and mandatory still reports unknown agents.
        self._rpc: ChannelProtocol = None  # type: ignore[assignment]
        self._sub: ChannelProtocol = None  # type: ignore[assignment]
        # behaviour name ("" for the inbox) -> (channel, consumer tag). Each consuming
        # behaviour has its own channel, so its delivery tags are contiguous and one
        # coalesced multiple-ack per tick covers what it finished.
        self._consumers: dict[str, tuple[ChannelProtocol, str]] = {}
        self._behaviour_channels: dict[str, ChannelProtocol] = {}
        self._setting_up = False
        self._adding: dict[str, Behaviour] = {}  # behaviours add_behaviour is starting
        self._pending_calls: dict[str, asyncio.Future[bytes]] = {}
        self._call_targets: dict[str, str] = {}  # call id -> the agent called
        self._reachability = Reachability(self._pending_calls, self._call_targets)
        self._collectors: dict[str, list[bytes]] = {}
        # Marks our call ids (a late reply is recognised and dropped); the random part of
        # each id (`_new_call_id`) is what keeps a reply from being forged.
        self._call_prefix = f"{self.identity}.{uuid.uuid4().hex[:6]}."
        self._props_second = -1
        self._props_cache: dict[tuple[str, str], bytes] = {}
        self._delivery_mode: int | None = None  # PERSISTENT in durable mode, set on connect
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restorer = ConsumerRestorer(self.identity)
        # Why the agent stopped by itself (its identity taken), None when it did not.
        self.stop_reason: str | None = None
        self._stopping_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def url(self) -> BrokerURL:
        """The broker URL in use (the first of a failover list before connecting)."""
        conn = self.connection
        return conn.url if conn is not None else self.urls[0]

    # -- hooks ---------------------------------------------------------------------

    async def setup(self) -> None:
        """Add behaviours here (runs after the agent is connected)."""

    async def teardown(self) -> None:
        """Runs when the agent stops, after its behaviours stopped."""

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.state != CREATED:
            raise RuntimeError(f"agent {self.identity!r} is {self.state}; agents start once")
        self.state = STARTING
        self.loop = asyncio.get_running_loop()
        try:
            await self._connect()
            self.state = RUNNING
            self.started_at = time.time()
            COLLECTOR.add(self)
            # Behaviours added in setup() start together afterwards, so the prefetch
            # budget is split knowing how many there are.
            self._setting_up = True
            try:
                await self.setup()
            finally:
                self._setting_up = False
            for behaviour in list(self.behaviours.values()):
                await self._start_behaviour(behaviour)
        except BaseException:
            self.state = STOPPED
            await abort_start(self)
            raise
        log.info(
            "agent %s running on %s with %d behaviour(s)",
            self.identity,
            self.url,
            len(self.behaviours),
        )

    async def _connect(self) -> None:
        # Read here, not in __init__: `munggoggo run --queue-type` replaces the config.
        self._delivery_mode = PERSISTENT if self.config.durable else None
        self.connection = conn = await open_connection(self.urls, self.identity)
        # Fails the calls in flight when the connection drops; tells unroutable calls
        # after a recovery (unreachable) from calls to unknown agents.
        self._reachability.watch(conn, self.config.unreachable_grace)
        self._pub = await conn.channel()
        self._pub.on_return = self._on_return
        self._pub.on_publish_failure = self._on_publish_failure
        self._pub.sample_confirms = self.config.metrics
        self._rpc = await conn.channel(confirms=False)
        self._rpc.on_return = self._on_return
        self._sub = sub = await conn.channel(
            confirms=False, prefetch_count=self.config.inbox_prefetch
        )
        await sub.exchange_declare(TOPIC_EXCHANGE, "topic", durable=True)
        await sub.exchange_declare(FANOUT_EXCHANGE, "fanout", durable=True)
        await sub.exchange_declare(DEAD_LETTER_EXCHANGE, "topic", durable=True)
        await declare_dead_letter_queue(sub, self.config.queue_type)
        await sub.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, "#")
        await declare_inbox_or_fail(sub, self.identity, self.config.inbox_expires_ms, self.url)
        await sub.queue_bind(self.identity, FANOUT_EXCHANGE, "")
        # The exclusive consumer is the identity lock: a second agent with this identity
        # is refused here (docs/decisions.md, "The inbox").
        try:
            await self._consume_inbox()
        except AccessRefused:
            holder = await sub.queue_declare(self.identity, passive=True)
            if holder.consumer_count:
                raise identity_in_use(self.identity, self.url) from None
            raise

    async def stop(self) -> None:
        """Drain: stop consuming, let behaviours finish their step and settle, flush
        confirms, close. Bounded by `config.drain_timeout`."""
        if self.state in (STOPPED, CREATED):
            self.state = STOPPED
            self._stopped.set()
            return
        if self.state == STOPPING:
            return
        self.state = STOPPING
        grace = self.config.drain_timeout
        await self._restorer.cancel_all(grace)
        for channel, tag in list(self._consumers.values()):
            try:
                await asyncio.wait_for(channel.cancel(tag), grace)
            except (AMQPError, TimeoutError) as exc:
                log.warning("agent %s: could not cancel consumer %s: %s", self.identity, tag, exc)
        self._consumers.clear()
        await asyncio.gather(*(b.stop(timeout=grace) for b in self.behaviours.values()))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        try:
            await self.teardown()
        except Exception:
            log.exception("agent %s: teardown failed", self.identity)
        for fut in self._pending_calls.values():
            if not fut.done():
                fut.set_exception(RpcError(UNAVAILABLE, f"agent {self.identity!r} is stopping"))
        try:
            if self._pub is not None and self._pub.unconfirmed:
                await self._pub.wait_confirms(timeout=grace)
        except (PublishError, TimeoutError, AMQPError) as exc:
            log.error(
                "agent %s: not every publish was confirmed before closing: %s", self.identity, exc
            )
        if self._tasks:  # settle-after-confirm tasks woken by the flush above
            await asyncio.wait(list(self._tasks), timeout=grace)
        await self._release_inbox(grace)
        await self.connection.close()
        COLLECTOR.remove(self)
        self.state = STOPPED
        self._stopped.set()
        log.info("agent %s stopped", self.identity)

    async def wait_stopped(self) -> None:
        """Wait until the agent has stopped: by `stop()`, or by itself (see `stop_reason`)."""
        await self._stopped.wait()

    async def _consume_inbox(self) -> None:
        tag = await self._sub.consume(
            self.identity, self._on_inbox, exclusive=True, on_cancel=self._on_inbox_cancelled
        )
        self._consumers[""] = (self._sub, tag)

    def _on_inbox_cancelled(self, tag: str) -> None:
        """The broker cancelled the inbox consumer (the inbox was deleted), or could not
        restore it after a reconnect (the broker still held the old connection's
        exclusive consumer): consume again until it works, so the agent never goes deaf."""
        if self._consumers.get("", (None, None))[1] != tag:
            return  # an earlier consumer's late news
        del self._consumers[""]
        if self.state != RUNNING:
            return
        log.warning("agent %s: inbox consumer was cancelled; consuming again", self.identity)
        self.stats.count(self.stats.consumer_cancels, "")
        # The broker cancels a consumer on an open channel (Basic.Cancel: the inbox was
        # deleted) or refuses to restore it while the channel recovers: only then can a
        # stale consumer of our own old connection hold the inbox, until the broker reaps
        # that connection (within ~2 heartbeats).
        if self._sub.is_open:
            stale_until = 0.0
        else:
            stale_until = self.loop.time() + 2 * max(1, self.connection.heartbeat or 60) + 5
        attempt = functools.partial(self._consume_inbox_again, stale_until)
        self._restorer.restore("", "inbox", attempt)

    async def _consume_inbox_again(self, stale_until: float) -> bool:
        """One attempt of the inbox restore: True when consuming again (or stopping)."""
        if self.state != RUNNING:
            return True
        sub = self._sub
        await declare_inbox(sub, self.identity, self.config.inbox_expires_ms)
        await sub.queue_bind(self.identity, FANOUT_EXCHANGE, "")
        # Consume only once no one else does: a refused exclusive consume would close the
        # channel again.
        if not (await sub.queue_declare(self.identity, passive=True)).consumer_count:
            await self._consume_inbox()
            log.info("agent %s: consuming its inbox again", self.identity)
            return True
        if self.loop.time() < stale_until:
            return False  # perhaps our own old consumer, not yet reaped
        self._identity_taken()
        return True

    def _identity_taken(self) -> None:
        """Another process consumes our inbox: it holds our identity now. Two agents with
        one identity would split its messages and calls, so this one stops."""
        self.stop_reason = (
            f"another agent took identity {self.identity!r} while its inbox was restored"
        )
        log.critical("agent %s: %s; stopping", self.identity, self.stop_reason)
        # Not one of self._tasks: stop() waits for those, and would wait for itself.
        self._stopping_task = self.loop.create_task(self.stop())
        self._stopping_task.add_done_callback(_log_failure)

    def _on_behaviour_cancelled(self, behaviour: Behaviour, tag: str) -> None:
        """The broker cancelled a behaviour's consumer (its queue was deleted): declare,
        bind and consume again until it works."""
        name = behaviour.short_name
        if self._consumers.get(name, (None, None))[1] != tag:
            return  # released by us, or an earlier consumer's late news
        del self._consumers[name]
        if self.state != RUNNING or not behaviour.is_running:
            return
        log.warning(
            "agent %s: consumer of behaviour %s was cancelled; consuming again",
            self.identity,
            name,
        )
        self.stats.count(self.stats.consumer_cancels, name)
        self._restorer.restore(
            name, f"behaviour {name}", functools.partial(self._consume_behaviour_again, behaviour)
        )

    async def _consume_behaviour_again(self, behaviour: Behaviour) -> bool:
        if self.state != RUNNING or not behaviour.is_running:
            return True
        await self._consume_behaviour(behaviour)
        log.info("agent %s: behaviour %s consumes again", self.identity, behaviour.short_name)
        return True

    @property
    def restoring_consumers(self) -> frozenset[str]:
        """Consumers the broker cancelled that are not consuming again yet: behaviour short
        names, "" for the inbox. The agent is not ready while any is."""
        return self._restorer.restoring

    async def _release_inbox(self, grace: float) -> None:
        """Delete the inbox when it is empty and unused, so that later sends to this
        identity are refused as unknown (NO_ROUTE) at once; an inbox still holding
        messages stays for a successor until it expires."""
        if self._sub is None or not self.connection.is_open:
            return
        try:
            await asyncio.wait_for(
                self._sub.queue_delete(self.identity, if_unused=True, if_empty=True), grace
            )
        except (AMQPError, TimeoutError) as exc:
            log.info("agent %s: inbox kept (%s)", self.identity, exc)

    # -- behaviours ------------------------------------------------------------------

    async def add_behaviour(self, behaviour: Behaviour) -> Behaviour:
        """Add a behaviour: in setup() it starts with the others once setup() returns; on a
        running agent it starts now, and is added once its queue is declared and bound and
        its consumer set up; this returns once its setup() ran. One that could not start is
        not added and leaves nothing behind, so a corrected one can be added under the same
        name.

        Args:
            behaviour: a behaviour of this agent, its short name not taken.

        Returns:
            The behaviour.

        Raises:
            ValueError: the agent already has (or is adding) a behaviour of that name.
            QueueMismatch: its queue exists with other properties (core/durable.py).
            AMQPError: the broker refused its queue, a binding or the consumer.
        """
        name = behaviour.short_name
        if name in self.behaviours or name in self._adding:
            raise ValueError(f"agent {self.identity!r} already has a behaviour named {name!r}")
        if self.state != RUNNING or self._setting_up:
            self.behaviours[name] = behaviour
            return behaviour
        self._adding[name] = behaviour  # its name is taken while it starts
        try:
            await self._start_behaviour(behaviour)  # adds it once its consumer is set up
        except BaseException:
            await undo_behaviour_start(self, behaviour)
            raise
        finally:
            del self._adding[name]
        return behaviour

    add_runtime_dependency = add_behaviour  # the seed's spelling

    async def _start_behaviour(self, behaviour: Behaviour) -> None:
        if behaviour.binding_keys and behaviour.short_name not in self._consumers:
            await self._consume_behaviour(behaviour)
        # add_behaviour adds it here, its queue and consumer set up (a refused queue leaves
        # nothing behind); from now on direct messages its template matches reach it too.
        self.behaviours[behaviour.short_name] = behaviour
        behaviour.start()
        await behaviour.wait_set_up()

    async def _consume_behaviour(self, behaviour: Behaviour) -> None:
        """Declare the behaviour's queue, bind its keys, consume it."""
        sub = self._behaviour_channels.get(behaviour.short_name)
        if sub is None:
            sub = await self.connection.channel(confirms=False)
            self._behaviour_channels[behaviour.short_name] = sub
        # Its own queue, or a queue shared with other agents' behaviours (competing
        # consumers) when it was given one.
        queue = behaviour.queue or behaviour.name  # <identity>.<short name>
        await declare_behaviour_queue(
            sub, queue, self.config.queue_type, self.config.behaviour_queue_expires_ms
        )
        for key in behaviour.binding_keys:
            await sub.queue_bind(queue, TOPIC_EXCHANGE, key)
        await sub.basic_qos(self._prefetch_share(behaviour))  # per-consumer qos
        behaviour.queue = queue
        tag = await sub.consume(
            queue,
            self._behaviour_consumer(behaviour, queue, sub),
            on_cancel=functools.partial(self._on_behaviour_cancelled, behaviour),
        )
        self._consumers[behaviour.short_name] = (sub, tag)

    def _prefetch_share(self, behaviour: Behaviour) -> int:
        """This behaviour's part of the agent's prefetch budget (never above its own
        prefetch, never below 16). Consumers keep the share they started with."""
        # add_behaviour adds a behaviour once it started: count those it is starting too.
        starting = list(self._adding.values())
        consuming = sum(1 for b in [*self.behaviours.values(), *starting] if b.binding_keys)
        share = max(16, self.config.prefetch_budget // max(1, consuming))
        return min(behaviour.prefetch, share)

    def _behaviour_consumer(
        self, behaviour: Behaviour, queue: str, sub: ChannelProtocol
    ) -> DeliveryCallback:
        consumed = self.stats.consumed
        redelivered = self.stats.redelivered
        label = behaviour.short_name
        key = (label, "message")

        rejected = functools.partial(self.stats.count, self.stats.dead_lettered, label)

        def on_batch(batch: list[Any]) -> None:
            batch = reject_undecodable(batch, sub, queue, rejected)
            if not batch:
                return
            consumed[key] = consumed.get(key, 0) + len(batch)
            again = sum(1 for d in batch if d.redelivered)
            if again:
                redelivered[label] = redelivered.get(label, 0) + again
            messages = [Message(d, sub, queue) for d in batch]
            try:
                behaviour._deliver(messages)
            except Exception as exc:  # a bug: still, each message is settled, none is lost
                for msg in messages:
                    self.reject_failed(msg, exc, label)

        return on_batch

    def behaviour(self, name: str) -> Behaviour:
        try:
            return self.behaviours[name]
        except KeyError:
            raise KeyError(f"agent {self.identity!r} has no behaviour {name!r}") from None

    # -- publishing ----------------------------------------------------------------

    def _properties(self, content_type: str, kind: str) -> bytes:
        """Encoded properties for our own messages, cached per second (the timestamp)."""
        now = int(time.time())
        if now != self._props_second:
            self._props_second = now
            self._props_cache.clear()
        key = (content_type, kind)
        props = self._props_cache.get(key)
        if props is None:
            props = self._props_cache[key] = encode_properties(
                Properties(
                    content_type=content_type,
                    type=kind,
                    app_id=self.identity,
                    timestamp=now,
                    delivery_mode=self._delivery_mode,
                )
            )
        return props

    def _encode(
        self, body: Any, content_type: str | None, kind: str, headers: dict[str, Any] | None
    ) -> tuple[bytes, bytes]:
        data, ctype = envelope.encode_body(body, content_type)
        if TRACEPARENT.get() is not None or tracing.hooks is not None:
            headers = outgoing_headers(headers, kind)
        if headers:
            props = encode_properties(
                Properties(
                    content_type=ctype,
                    type=kind,
                    app_id=self.identity,
                    timestamp=int(time.time()),
                    headers=headers,
                    delivery_mode=self._delivery_mode,
                )
            )
        else:
            props = self._properties(ctype, kind)
        return data, props

    async def publish(
        self,
        body: Any,
        routing_key: str,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> int:
        """Publish to `munggoggo.topic` (pub/sub). Bytes, str or any msgspec-encodable value.
        Returns the publish's sequence number (what `on_publish_failure` reports)."""
        return await self._emit(body, TOPIC_EXCHANGE, routing_key, headers, content_type)

    async def send(
        self,
        target: str,
        body: Any,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> int:
        """Send a direct message to agent `target`'s inbox (returned and logged if unknown).
        Returns the publish's sequence number."""
        return await self._emit(body, "", target, headers, content_type)

    async def broadcast(
        self, body: Any, *, headers: dict[str, Any] | None = None, content_type: str | None = None
    ) -> int:
        """Send to every agent's inbox through `munggoggo.fanout`; the sequence number."""
        return await self._emit(body, FANOUT_EXCHANGE, "", headers, content_type)

    async def _emit(
        self,
        body: Any,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any] | None,
        content_type: str | None,
        origin: str = "",
    ) -> int:
        """Publish one message (confirmed); `origin` is the publishing behaviour, if any.

        Direct messages are mandatory: an unknown target comes back as a return.
        """
        data, props = self._encode(body, content_type, envelope.KIND_MESSAGE, headers)
        ch = self._pub
        seq = ch.publish(data, exchange, routing_key, props, mandatory=not exchange)
        published = self.stats.published
        key = (origin, envelope.KIND_MESSAGE)
        published[key] = published.get(key, 0) + 1
        if self._tracing:
            self.trace.record_out(
                envelope.KIND_MESSAGE, exchange or routing_key, routing_key, len(data), None
            )
        if not ch.writable:
            await ch.drain()
        return seq

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the broker confirmed everything this agent published."""
        if self._pub is not None:  # nothing published before it connected
            await self._pub.wait_confirms(timeout=timeout)

    # -- RPC client ----------------------------------------------------------------

    async def call(
        self, target: str, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call `method` of agent `target`; returns its result or raises RpcError / RpcTimeout."""
        if args and kwargs:
            raise ValueError("JSON-RPC params go by position or by name, not both")
        return await self.call_params(
            target, method, list(args) if args else (kwargs or None), timeout=timeout
        )

    async def call_params(
        self,
        target: str,
        method: str,
        params: list[Any] | dict[str, Any] | None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """`call` with the JSON-RPC params given as they travel (a list, a dict or None):
        for callers that forward params, whose names may be anything (even `timeout`)."""
        if self.state != RUNNING:
            raise RpcError(UNAVAILABLE, f"agent {self.identity!r} is {self.state}")
        call_id = self._new_call_id()
        body = encode_request(method, params, call_id)
        props = encode_properties(
            Properties(
                content_type=envelope.JSON,
                type=envelope.KIND_RPC,
                app_id=self.identity,
                correlation_id=call_id,
                reply_to=self.identity,
                timestamp=int(time.time()),
                headers=outgoing_headers(None, envelope.KIND_RPC, target, method),
            )
        )
        fut: asyncio.Future[bytes] = self.loop.create_future()
        self._pending_calls[call_id] = fut
        self._call_targets[call_id] = target
        limit = timeout if timeout is not None else self.config.rpc_timeout
        # One timer on the future itself: asyncio.wait_for would add a Task per call.
        timer = self.loop.call_later(limit, _expire_call, fut, target, method, limit)
        started = time.perf_counter()
        outcome = "error"
        try:
            try:
                self._rpc.publish(body, "", target, props, mandatory=True)
            except AMQPError as exc:
                outcome = "unavailable"
                raise RpcError(UNAVAILABLE, f"cannot call {target!r}: {exc}") from None
            if self._tracing:
                self.trace.record_out(envelope.KIND_RPC, target, method, len(body), call_id)
            try:
                reply = await fut
            except RpcTimeout:
                outcome = "timeout"
                raise
            except AgentUnreachable:
                outcome = "unreachable"
                raise
            result = decode_response(reply)
            outcome = "ok"
            return result
        finally:
            timer.cancel()
            self._pending_calls.pop(call_id, None)
            self._call_targets.pop(call_id, None)
            if self.config.metrics:
                self.stats.rpc_client_hist(method, outcome).observe(time.perf_counter() - started)

    async def peers(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        """Discover the other agents: broadcast `describe`, collect answers for `timeout` s."""
        call_id = self._new_call_id()
        collector: list[bytes] = []
        self._collectors[call_id] = collector
        props = encode_properties(
            Properties(
                content_type=envelope.JSON,
                type=envelope.KIND_CONTROL,
                app_id=self.identity,
                correlation_id=call_id,
                reply_to=self.identity,
            )
        )
        try:
            self._rpc.publish(encode_request("describe", None, call_id), FANOUT_EXCHANGE, "", props)
            await asyncio.sleep(timeout)
        finally:
            self._collectors.pop(call_id, None)
        found = []
        for body in collector:
            try:
                info = decode_response(body)
            except RpcError:
                continue
            if isinstance(info, dict) and info.get("identity") != self.identity:
                found.append(info)
        return sorted(found, key=lambda i: i["identity"])

    def _new_call_id(self) -> str:
        """A correlation id for one call: our prefix and 96 random bits, so that nobody
        who saw earlier ids can guess the next one and answer in the callee's place."""
        return self._call_prefix + os.urandom(12).hex()

    def _take_reply(self, call_id: str, delivery: Any) -> None:
        """A reply carrying one of our call ids: it answers the call if that call still
        waits and the reply comes from the agent called. A reply naming another sender
        (`app_id`) is dropped; one naming none is taken, as plain AMQP servers send them
        (see docs/decisions.md). A late reply (the call timed out) is dropped."""
        fut = self._pending_calls.get(call_id)
        if fut is None:
            collector = self._collectors.get(call_id)
            if collector is not None:
                collector.append(delivery.body)
            return
        sender = delivery.properties.app_id
        target = self._call_targets.get(call_id)
        if sender and target is not None and sender != target:
            log.warning(
                "agent %s: dropped a reply from %r to a call to %r", self.identity, sender, target
            )
            return
        del self._pending_calls[call_id]
        if not fut.done():
            fut.set_result(delivery.body)

    def _on_return(self, delivery: Any) -> None:
        self.stats.returned += 1
        call_id = delivery.properties.correlation_id
        fut = self._pending_calls.pop(call_id, None) if call_id else None
        if fut is not None and not fut.done():
            fut.set_exception(self._reachability.no_route(delivery.routing_key))
            return
        log.warning(
            "agent %s: message to %r returned by the broker: %d %s",
            self.identity,
            delivery.routing_key,
            delivery.reply_code,
            delivery.reply_text,
        )

    def _on_publish_failure(self, failures: list[tuple[int, Exception]]) -> None:
        log.error(
            "agent %s: %d publish(es) not confirmed: %s",
            self.identity,
            len(failures),
            failures[0][1],
        )
        if self.on_publish_failure is not None:
            try:
                self.on_publish_failure(failures)
            except Exception:
                log.exception("agent %s: on_publish_failure callback failed", self.identity)

    # -- inbox dispatch ------------------------------------------------------------

    def _on_inbox(self, batch: list[Any]) -> None:
        sub = self._sub
        identity = self.identity
        consumed = self.stats.consumed
        batch = reject_undecodable(batch, sub, identity, self._count_inbox_rejected)
        for d in batch:
            msg = Message(d, sub, identity)
            try:
                kind = d.properties.type
                key = ("", kind or envelope.KIND_MESSAGE)
                consumed[key] = consumed.get(key, 0) + 1
                if kind == envelope.KIND_RPC or kind == envelope.KIND_CONTROL:
                    call_id = d.properties.correlation_id
                    # A reply carries our call id and no reply_to; a request carrying our
                    # call id is one we sent ourselves (a call to our own method, our own
                    # broadcast).
                    if (
                        call_id is not None
                        and d.properties.reply_to is None
                        and call_id.startswith(self._call_prefix)
                    ):
                        msg.ack()
                        self._take_reply(call_id, d)
                        continue
                    self._serve_rpc(msg)
                    continue
                self._route_direct(msg)
            except Exception as exc:  # one message's failure is that message's alone
                self.reject_failed(msg, exc)

    def reject_failed(self, msg: Message, exc: BaseException, behaviour: str = "") -> None:
        """Settle a message whose handling failed where no retry can follow (a delivery
        callback, a copy that could not be made): logged, counted as dead-lettered, and
        rejected without requeue, so the queue's dead-letter exchange takes it as it is.
        A message already settled (or handed off) is left alone.

        Args:
            msg: the message.
            exc: what went wrong.
            behaviour: the behaviour it was for ("" for the inbox).
        """
        log.error(
            "agent %s: handling a message from %r failed, rejecting it: %s: %s",
            self.identity,
            msg.sender,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        if not msg.settled:
            self.stats.count(self.stats.dead_lettered, behaviour)
            msg.nack(requeue=False)

    def _count_inbox_rejected(self) -> None:
        self.stats.count(self.stats.dead_lettered, "")

    def _route_direct(self, msg: Message) -> None:
        for behaviour in self.behaviours.values():
            template = behaviour.template
            if template is not None and behaviour.state == "running" and template.match(msg):
                if self._tracing:
                    self.trace.record_in(msg, behaviour.short_name)
                behaviour._deliver([msg])
                return
        if msg.exchange == FANOUT_EXCHANGE:
            msg.ack()  # a broadcast nobody here wants is not an error
            return
        self._dead_letter(msg, "no behaviour template matches this message", None)

    # -- RPC server ----------------------------------------------------------------

    def _serve_rpc(self, msg: Message) -> None:
        started = time.perf_counter()
        try:
            request = decode_request(msg.body)
        except RpcError as exc:
            self._reply(msg, getattr(exc, "request_id", None), error=exc, started=started)
            return
        if request.id is None and is_notification(msg.body):
            msg_id: Any = _NOTIFICATION
        else:
            msg_id = request.id
        method = self._exposed.get(request.method)
        if method is None:
            self._reply(
                msg,
                msg_id,
                error=RpcError(METHOD_NOT_FOUND, f"Method not found: {request.method}"),
                started=started,
            )
            return
        name = method.name
        try:
            kwargs = method.bind(request.params)
        except RpcError as exc:
            self._reply(msg, msg_id, error=exc, method=name, started=started)
            return
        context = contextvars.copy_context()
        headers = msg.delivery.properties.headers
        func = method.func
        if tracing.hooks is not None:
            # A server span around the method, current while it runs (it sets the trace).
            func = tracing.hooks.server(func, method.is_async, self.identity, name, headers)
        elif headers and TRACE_HEADER in headers:
            context.run(adopt, headers)  # the method's publishes and calls continue the trace
        if method.is_async:
            # Most async methods never suspend: run them now and reply in this very tick.
            task = run_eagerly(
                self.loop,
                func(self, **kwargs),
                functools.partial(self._async_served, msg, msg_id, name, started),
                context,
            )
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        try:
            result = context.run(func, self, **kwargs)
        except Exception as exc:
            log.warning("agent %s: %s() raised %s", self.identity, name, exc, exc_info=True)
            self._reply(msg, msg_id, error=exception_error(exc), method=name, started=started)
            return
        self._reply(msg, msg_id, result=result, method=name, started=started)

    def _async_served(
        self,
        msg: Message,
        msg_id: Any,
        name: str,
        started: float,
        result: Any,
        exc: BaseException | None,
    ) -> None:
        if exc is None:
            self._reply(msg, msg_id, result=result, method=name, started=started)
            return
        if self.state == STOPPING and refused_by_stopping(exc):
            msg.nack(requeue=True)  # the method did not fail: the drain cut it short
            return
        if isinstance(exc, Exception):
            log.warning("agent %s: %s() raised %s", self.identity, name, exc, exc_info=exc)
        self._reply(msg, msg_id, error=exception_error(exc), method=name, started=started)

    def _reply(
        self,
        msg: Message,
        msg_id: Any,
        *,
        result: Any = None,
        error: RpcError | None = None,
        method: str = "_unknown",
        started: float = 0.0,
    ) -> None:
        """Answer an RPC request (unless it is a notification), ack it, count it.

        `method` labels the metrics: an exposed method's name, else `_unknown`, so
        callers cannot create unbounded label values."""
        stats = self.stats
        stats.count(stats.rpc_served, (method, "ok" if error is None else "error"))
        if started and self.config.metrics:
            stats.rpc_server_hist(method).observe(time.perf_counter() - started)
        reply_to = msg.reply_to
        if msg_id is not _NOTIFICATION and reply_to:
            if error is None:
                try:
                    body = encode_result(result, msg_id)
                except (TypeError, ValueError) as exc:
                    body = encode_error(
                        RpcError(-32603, f"result is not JSON-encodable: {exc}"), msg_id
                    )
            else:
                body = encode_error(error, msg_id)
            props = encode_properties(
                Properties(
                    content_type=envelope.JSON,
                    type=msg.kind,
                    app_id=self.identity,
                    correlation_id=msg.correlation_id,
                    timestamp=int(time.time()),
                )
            )
            try:
                self._rpc.publish(body, "", reply_to, props)
            except AMQPError as exc:  # reconnecting: the caller's timeout reports it
                log.warning("agent %s: reply to %r lost: %s", self.identity, reply_to, exc)
            if self._tracing:
                self.trace.record_out(msg.kind, reply_to, reply_to, len(body), msg.correlation_id)
        msg.ack()

    # -- failure handling --------------------------------------------------------

    def _retry_or_dead_letter(self, msg: Message, exc: BaseException, behaviour: str) -> None:
        """A step failed with `msg` unsettled: requeue it with a retry count, or dead-letter
        it once it failed `max_redeliveries` times (or can never be decoded)."""
        retries = _retry_count(msg.headers.get(RETRIES_HEADER)) + 1
        if retries > self.config.max_redeliveries or isinstance(exc, envelope.DecodeError):
            reason = f"{type(exc).__name__}: {exc}"
            self._dead_letter(msg, reason, behaviour, retries)
            return
        # A retry is a redelivery by our own hand (the broker's flag stays unset on the copy).
        self.stats.count(self.stats.redelivered, behaviour)
        # The copy travels through the default exchange: remember where the first try came
        # from, so a dead letter still names the original exchange and routing key.
        origin = {
            ORIGINAL_EXCHANGE_HEADER: msg.exchange,
            ORIGINAL_ROUTING_KEY_HEADER: msg.routing_key,
        }
        # The copy carries the count back to the queue it came from; the inbox too (an
        # exclusive queue still takes publishes from anyone): a plain requeue there would
        # lose the count and retry a poison message forever.
        changes = {RETRIES_HEADER: retries}
        self._handoff(msg, "", msg.queue or self.identity, changes, origin, behaviour)

    def _dead_letter(
        self, msg: Message, reason: str, behaviour: str | None, retries: int = 0
    ) -> None:
        self.stats.count(self.stats.dead_lettered, behaviour or "")
        log.warning(
            "agent %s: dead-lettering message from %r (%s)", self.identity, msg.sender, reason
        )
        changes: dict[str, Any] = {
            REASON_HEADER: reason[:1000],
            DEAD_LETTER_ID_HEADER: uuid.uuid4().hex[:16],
            DEAD_LETTERED_AT_HEADER: int(time.time()),
            AGENT_HEADER: self.identity,
            QUEUE_HEADER: msg.queue,
            RETRIES_HEADER: retries,
        }
        if behaviour:
            changes[BEHAVIOUR_HEADER] = behaviour
        origin = {  # unless a retry kept them
            ORIGINAL_EXCHANGE_HEADER: msg.exchange,
            ORIGINAL_ROUTING_KEY_HEADER: msg.routing_key,
        }
        self._handoff(msg, DEAD_LETTER_EXCHANGE, msg.queue or msg.routing_key, changes, origin)

    def _handoff(
        self,
        msg: Message,
        exchange: str,
        routing_key: str,
        changes: dict[str, Any],
        defaults: dict[str, Any],
        behaviour: str | None = None,
    ) -> None:
        """Publish a copy, ack the original once the broker confirmed the copy.

        The copy carries the original's headers byte for byte, with `changes` set and
        `defaults` where the original lacks them. When no copy can be sent, the original
        is rejected without requeue (the queue's dead-letter exchange takes it as it is):
        a message that cannot be copied costs that message, never the consumer.
        """
        try:
            headers = copy_headers(msg.delivery, changes, defaults=defaults)
            # In durable mode a retry or dead letter is persistent even if the original was
            # not (a transient agent's publish reaching our quorum queue): it may land in a
            # durable classic queue (the dead-letter queue on a broker where it is classic).
            props = copy_properties(msg.delivery, headers, delivery_mode=self._delivery_mode)
            seq = self._pub.publish(msg.body, exchange, routing_key, props)
        except AMQPError as exc:  # the connection is down: the broker requeues it anyway
            log.warning("agent %s: cannot send a copy (%s); requeueing", self.identity, exc)
            msg.nack(requeue=True)
            return
        except (PropertiesTooLarge, ValueError, FrameError) as exc:
            # Our headers made the copy too large to send, or the original's cannot be
            # carried on: reject rather than leave it unsettled; the queue's dead-letter
            # exchange takes it as it came (the reason is in this log line).
            log.warning(
                "agent %s: cannot send a copy of a message from %r (%s: %s); "
                "rejecting the original instead",
                self.identity,
                msg.sender,
                type(exc).__name__,
                exc,
            )
            if exchange != DEAD_LETTER_EXCHANGE:  # a dead letter was counted already
                self.stats.count(self.stats.dead_lettered, behaviour or "")
            msg.nack(requeue=False)
            return
        msg._begin_handoff()
        task = self.loop.create_task(self._finish_handoff(msg, seq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_handoff(self, msg: Message, seq: int) -> None:
        try:
            await self._pub.wait_confirm_of(seq)  # this copy's fate, not an earlier one's
        except asyncio.CancelledError:
            msg._end_handoff(ack=False)  # stopping: the original goes back, as it came
            raise
        except Exception as exc:  # refused, connection lost, or a bug: never left pending
            log.error(
                "agent %s: copy not confirmed, original goes back to the queue: %s: %s",
                self.identity,
                type(exc).__name__,
                exc,
            )
            msg._end_handoff(ack=False)
            return
        msg._end_handoff(ack=True)

    # -- control plane (RPC-callable) --------------------------------------------

    @expose
    def ping(self) -> str:
        return "pong"

    @expose
    def describe(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "state": self.state,
            "behaviours": [b.describe() for b in self.behaviours.values()],
            "methods": sorted(self._exposed),
            "started_at": self.started_at,
        }

    @expose
    def status(self) -> dict[str, Any]:
        info = self.describe()
        conn = self.connection
        info.update(
            {
                "url": str(self.url),
                "connected": bool(conn is not None and conn.is_open),
                "reconnects": getattr(conn, "reconnects", 0),
                "uptime": time.time() - self.started_at if self.started_at else 0.0,
                "counters": self._counters(),
                "pending_calls": len(self._pending_calls),
                "unconfirmed": self._pub.unconfirmed if self._pub is not None else 0,
            }
        )
        return info

    def _counters(self) -> dict[str, int]:
        stats = self.stats
        return {
            "published": sum(stats.published.values()),
            "consumed": sum(stats.consumed.values()),
            "rpc_served": sum(stats.rpc_served.values()),
            "dead_lettered": sum(stats.dead_lettered.values()),
            "returned": stats.returned,
        }

    def _settling_channels(self) -> list[tuple[str, ChannelProtocol]]:
        """(behaviour name or "" for the inbox, channel) of every consuming channel."""
        pairs = [("", self._sub)] if self._sub is not None else []
        pairs.extend(self._behaviour_channels.items())
        return pairs

    @expose
    def list_behaviours(self) -> list[dict[str, Any]]:
        return [b.describe() for b in self.behaviours.values()]

    @expose
    async def start_behaviour(self, name: str) -> dict[str, Any]:
        behaviour = self._behaviour_or_error(name)
        if not behaviour.is_running:
            await self._start_behaviour(behaviour)
        return behaviour.describe()

    @expose
    async def stop_behaviour(self, name: str) -> dict[str, Any]:
        behaviour = self._behaviour_or_error(name)
        await self._stop_behaviour(behaviour)
        return behaviour.describe()

    async def _stop_behaviour(self, behaviour: Behaviour) -> None:
        """Stop consuming its queue first, so new messages wait there (ready, not held in a
        mailbox) until it is started again."""
        await self.release_consumer(behaviour)
        await behaviour.stop(timeout=self.config.drain_timeout)

    async def release_consumer(self, behaviour: Behaviour) -> None:
        """Stop consuming `behaviour`'s queue: what is ready there waits for the other
        consumers of the queue, or for the behaviour to start again. Nothing to do when it
        does not consume one.

        Args:
            behaviour: one of this agent's behaviours.

        Raises:
            AMQPError: the broker refused the cancel or the channel closed.
        """
        await self._restorer.cancel(behaviour.short_name)
        consumer = self._consumers.pop(behaviour.short_name, None)
        if consumer is not None:
            await consumer[0].cancel(consumer[1])

    def consumers(self) -> dict[str, tuple[ChannelProtocol, str]]:
        """The active consumers: behaviour short name ("" for the inbox) -> (channel,
        consumer tag). A copy: changing it changes nothing."""
        return dict(self._consumers)

    @expose
    def traces(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.trace.last(limit)

    def _behaviour_or_error(self, name: str) -> Behaviour:
        """The behaviour by short name, or by full name `<identity>.<short name>`."""
        behaviour = self.behaviours.get(name)
        if behaviour is None and name.startswith(self.identity + "."):
            behaviour = self.behaviours.get(name[len(self.identity) + 1 :])
        if behaviour is None:
            raise RpcError(-32004, f"agent {self.identity!r} has no behaviour {name!r}")
        return behaviour

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity!r} {self.state}>"


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Done callback of a task nobody awaits: its error is logged, not lost."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


def _retry_count(value: Any) -> int:
    """The retry header as any client may have set it: a count that is not a non-negative
    int counts as none (int() of a string or list would raise inside the failure path and
    take the behaviour down)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _expire_call(fut: asyncio.Future[bytes], target: str, method: str, limit: float) -> None:
    if not fut.done():
        fut.set_exception(
            RpcTimeout(TIMEOUT, f"no reply from agent {target!r} to {method}() within {limit:g}s")
        )


class _Notification:
    """Marker id for JSON-RPC notifications: no reply is sent."""

    def __repr__(self) -> str:
        return "<notification>"


_NOTIFICATION = _Notification()
