"""memory:// - an in-process broker with RabbitMQ's semantics, behind the client's own API.

Owns the state of each named in-process broker (exchanges, queues, bindings, consumers,
unacked deliveries, direct reply-to routes) and `MemoryConnection` / `MemoryChannel`,
which have the methods, signatures and return types of `client.Connection` and
`channel.Channel`, so the runtime does not care which one it holds. Routing rules,
declare checks, error texts and x-death bookkeeping live in `memory_routing`; the headers
exchange in `memory_headers`; publish checks, CC/BCC and user_id in `memory_publish`;
priority queues in `memory_priority`; typed reading and editing of encoded headers in
`memory_fields`.

Behaviour follows RabbitMQ (checked against 3.10 and 4.3 with the real client; where they
differ, 4.x), including where the real client is asynchronous: deliveries, returns and
cancel notifications run from `loop.call_soon`, never from inside publish/ack, and
consumers get one batch per loop tick; a publish or ack the broker refuses closes the
channel after the call returned (as the broker's Channel.Close would), failing that
channel's unconfirmed publishes; a channel closed by an error reopens by itself with
`generation` + 1 and its consumers restored.
Pure asyncio, the standard library and pamqp's argument encoder: no sockets, no threads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, ClassVar

from . import _speedups
from . import memory_fields as fields
from . import memory_headers as headers_exchange
from . import memory_priority as priority
from . import memory_publish as checks
from . import memory_routing as rules
from ._speedups import DELIVER, GET_OK, RETURN, Delivery, Properties
from .amqp.errors import AMQPConnectError, BrokerError, ConnectionLost, LocalProtocolError
from .channel import Consumer, DeliveryCallback, PublishError, PublishNacked, QueueDeclareOk
from .confirm_waiters import ConfirmWaiters
from .confirm_waiters import report as report_failures
from .memory_routing import Exchange
from .metrics import CONFIRM_SAMPLE_MASK, FastHistogram
from .url import BrokerURL, parse_url

__all__ = ["MemoryBroker", "MemoryChannel", "MemoryConnection"]

log = logging.getLogger("munggoggo.memory")

_EMPTY_PROPERTIES = _speedups.encode_properties(None)
# decode_properties wants a whole content-header payload: class 60, weight, body size.
_HEADER_PREFIX = b"\x00\x3c\x00\x00" + bytes(8)
# A content header frame: frame header, class, weight, body size, properties, frame end.
_HEADER_OVERHEAD = 20
# In-process publishing has no socket buffer to fill; `writable` turns False after this
# many publishes without a drain(), so a publishing loop still lets consumers run.
_PUBLISHES_PER_YIELD = 1024
# Timers may fire a little early (loop clock resolution); a message due within this
# slack counts as expired rather than re-arming a timer in a tight loop.
_EXPIRY_SLACK = 0.001


def _decode(raw: bytes) -> Properties:
    return _speedups.decode_properties(_HEADER_PREFIX + raw)[1]


def _server_name() -> str:
    # RabbitMQ names look like amq.gen-JzTY20BRgKO-HjmUJj0wLg: 16 random bytes, url-safe.
    return "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


# --------------------------------------------------------------------------- messages


class _Content:
    """One published message, shared by every queue it was routed to; never mutated."""

    __slots__ = ("_props", "body", "exchange", "raw", "routes", "routing_key", "ttl")

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        raw: bytes,
        props: Properties | None,
        ttl: int | None,
        routes: tuple[str, ...] = (),
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.raw = raw  # encoded properties, the form the wire would carry
        self._props = props
        self.ttl = ttl
        self.routes = routes  # CC and BCC routing keys, routed like routing_key

    @property
    def routing_keys(self) -> tuple[str, ...]:
        """Every key the message is routed by: the publish's, then CC and BCC."""
        return (self.routing_key, *self.routes)

    def properties(self) -> Properties:
        """A private copy for one delivery: a consumer mutating it affects nobody else."""
        if self.raw == _EMPTY_PROPERTIES:
            return Properties()
        return _decode(self.raw)

    def peek(self) -> Properties:
        """Decoded once, read-only, for the broker's own use (headers routing)."""
        if self._props is None:
            self._props = _decode(self.raw)
        return self._props


class _Entry:
    """A message in one queue: its position, redelivered flag and expiry there."""

    __slots__ = ("content", "expires_at", "redelivered", "seq")

    def __init__(self, content: _Content, seq: int) -> None:
        self.content = content
        self.seq = seq  # publish order: requeued messages go back to their old place
        self.redelivered = False
        self.expires_at: float | None = None


class _Sub:
    """A consumer as the broker sees it: where it reads and how much it may hold."""

    __slots__ = (
        "active",
        "channel",
        "generation",
        "no_ack",
        "prefetch",
        "queue",
        "record",
        "tag",
        "unacked",
    )

    def __init__(
        self, channel: MemoryChannel, record: Consumer, queue: _Queue, prefetch: int
    ) -> None:
        self.channel = channel
        self.record = record  # the application's consumer this serves
        self.tag = record.tag
        self.queue = queue
        self.no_ack = record.no_ack
        self.prefetch = prefetch
        self.generation = channel.generation
        self.unacked = 0
        self.active = True

    def has_capacity(self) -> bool:
        return self.no_ack or not self.prefetch or self.unacked < self.prefetch


# --------------------------------------------------------------------------- queues


class _Queue:
    """A classic queue: ready messages in order, round-robin consumers, TTL, DLX, limits."""

    def __init__(
        self,
        broker: MemoryBroker,
        name: str,
        *,
        durable: bool = False,
        owner: MemoryConnection | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        pseudo: bool = False,
    ) -> None:
        self.broker = broker
        self.name = name
        self.durable = durable
        self.owner = owner  # the connection of an exclusive queue
        self.auto_delete = auto_delete
        self.arguments = dict(arguments or {})
        self.pseudo = pseudo  # a direct reply-to target, not in broker.queues
        args = self.arguments
        self.ttl: int | None = args.get("x-message-ttl")
        self.dlx: str | None = args.get("x-dead-letter-exchange")
        self.dlrk: str | None = args.get("x-dead-letter-routing-key")
        self.max_length: int | None = args.get("x-max-length")
        self.max_bytes: int | None = args.get("x-max-length-bytes")
        self.overflow: str = args.get("x-overflow", "drop-head")
        self.expires: int | None = args.get("x-expires")
        # Only the oldest consumer gets messages; the next takes over when it goes.
        self.single_active = args.get("x-single-active-consumer") is True
        # A deque, or the per-priority FIFOs of an x-max-priority queue (same operations).
        self.ready: deque[_Entry] | priority.PriorityReady = priority.ready_queue(args)
        self.bytes = 0  # body bytes of ready messages, for x-max-length-bytes
        self.subs: deque[_Sub] = deque()  # rotated: the head is the next to get a message
        self.exclusive_sub: _Sub | None = None
        self.had_consumers = False
        self.deleted = False
        self._ttl_timer: asyncio.TimerHandle | None = None
        self._ttl_timer_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<queue {self.name!r} ready={len(self.ready)} consumers={len(self.subs)}>"

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.subs)

    def declare_ok(self) -> QueueDeclareOk:
        self.expire_head(self.broker.loop.time())
        return QueueDeclareOk(self.name, len(self.ready), len(self.subs))

    def push(self, content: _Content) -> bool:
        """Enqueue (or hand straight to a consumer); False if x-overflow refused it."""
        broker = self.broker
        entry = _Entry(content, next(broker._seq))
        # Like RabbitMQ, a message meeting an idle consumer never waits in the queue:
        # it neither counts towards x-max-length nor can it expire.
        if self.subs and not self.ready and self._assign(entry):
            return True
        ttl = self.ttl
        if content.ttl is not None and (ttl is None or content.ttl < ttl):
            ttl = content.ttl
        if ttl is not None:
            if ttl == 0:  # "deliver now or never"
                broker.dead_letter(self, entry, "expired")
                return True
            entry.expires_at = broker.loop.time() + ttl / 1000
        size = len(content.body)
        if self.max_length is not None or self.max_bytes is not None:
            if self.overflow != "drop-head" and self._full(size):
                if self.overflow == "reject-publish-dlx":
                    broker.dead_letter(self, entry, "maxlen")
                return False
            self.ready.append(entry)
            self.bytes += size
            while self._over():
                self._drop_head("maxlen")
        else:
            self.ready.append(entry)
            self.bytes += size
        self._arm_ttl_timer()  # the head may be new (first message, or maxlen dropped one)
        if self.subs:
            broker.mark(self)
        return True

    def _full(self, size: int) -> bool:
        return (self.max_length is not None and len(self.ready) >= self.max_length) or (
            self.max_bytes is not None and self.bytes + size > self.max_bytes
        )

    def _over(self) -> bool:
        return (self.max_length is not None and len(self.ready) > self.max_length) or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        )

    def _drop_head(self, reason: str) -> None:
        entry = self.ready.popleft()
        self.bytes -= len(entry.content.body)
        self.broker.dead_letter(self, entry, reason)

    def _assign(self, entry: _Entry) -> bool:
        """Give a message to the next consumer (round-robin) with room under its prefetch."""
        subs = self.subs
        if self.single_active:
            sub = subs[0]
            if not sub.has_capacity():
                return False
            self.broker._pending(sub, sub.channel._deliver(sub, entry, self))
            return True
        for _ in range(len(subs)):
            sub = subs[0]
            subs.rotate(-1)
            if sub.has_capacity():
                self.broker._pending(sub, sub.channel._deliver(sub, entry, self))
                return True
        return False

    def deliver(self, now: float) -> None:
        """Hand ready messages to consumers while any has room; expire what is due."""
        ready = self.ready
        while ready and self.subs:
            entry = ready[0]
            if entry.expires_at is not None and now + _EXPIRY_SLACK >= entry.expires_at:
                self._drop_head("expired")
                continue
            if not self._assign(entry):
                break
            ready.popleft()
            self.bytes -= len(entry.content.body)
        self.expire_head(now)

    def expire_head(self, now: float) -> None:
        # Classic-queue semantics: only messages at the head expire.
        ready = self.ready
        while ready:
            due = ready[0].expires_at
            if due is None or now + _EXPIRY_SLACK < due:
                break
            self._drop_head("expired")
        self._arm_ttl_timer()

    def _arm_ttl_timer(self) -> None:
        if not self.ready or self.deleted:
            return
        due = self.ready[0].expires_at
        if due is None or (self._ttl_timer is not None and self._ttl_timer_at <= due):
            return
        if self._ttl_timer is not None:
            self._ttl_timer.cancel()
        self._ttl_timer_at = due
        self._ttl_timer = self.broker.loop.call_at(due, self._ttl_timer_fired)

    def _ttl_timer_fired(self) -> None:
        self._ttl_timer = None
        if not self.deleted:
            self.broker.mark(self)

    def take(self) -> _Entry | None:
        """Basic.Get: the head message, after expiring what is due."""
        self.expire_head(self.broker.loop.time())
        if not self.ready:
            return None
        entry = self.ready.popleft()
        self.bytes -= len(entry.content.body)
        self._arm_ttl_timer()
        return entry

    def requeue(self, entries: list[_Entry]) -> None:
        """Put messages back where they were (by publish order), ahead of newer ones."""
        priority.requeue(self.ready, entries)
        self.bytes += sum(len(e.content.body) for e in entries)
        if self._ttl_timer is not None:
            self._ttl_timer.cancel()
            self._ttl_timer = None
        # RabbitMQ hands a requeued message to a consumer with room at once, so
        # redeliveries follow the order of the nacks, not of the original publishes.
        self.deliver(self.broker.loop.time())

    def purge(self) -> int:
        count = len(self.ready)
        self.ready.clear()
        self.bytes = 0
        return count

    def add_sub(self, sub: _Sub, exclusive: bool) -> None:
        self.subs.append(sub)
        self.had_consumers = True
        if exclusive:
            self.exclusive_sub = sub
        self.broker.mark(self)

    def remove_sub(self, sub: _Sub) -> None:
        with contextlib.suppress(ValueError):
            self.subs.remove(sub)
        if self.exclusive_sub is sub:
            self.exclusive_sub = None
        if not self.subs:
            if self.auto_delete and self.had_consumers:
                self.broker.delete_queue(self)
            else:
                self.touch()

    def touch(self) -> None:
        """The queue was used: restart its x-expires countdown."""
        if self.expires is None or self.deleted:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.broker.loop.call_later(self.expires / 1000, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self.subs and not self.deleted:
            self.broker.delete_queue(self)

    def stop_timers(self) -> None:
        for timer in (self._ttl_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._ttl_timer = self._idle_timer = None


# --------------------------------------------------------------------------- broker


class MemoryBroker:
    """One in-process broker (a RabbitMQ vhost's worth of state), shared by name.

    `MemoryBroker.get("x")` is what every `MemoryConnection("memory://x")` uses; tests
    call `MemoryBroker.reset()` for isolation (connections already open keep the old
    one). A broker lives on one event loop: a connection from another loop (a new test)
    gets a fresh broker under the same name. `exchanges` and `queues` are for inspection.
    """

    _brokers: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.exchanges: dict[str, Exchange] = rules.predeclared()
        self.queues: dict[str, _Queue] = {}
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # first connect
        self._reply_queues: dict[str, _Queue] = {}
        self._dirty: dict[_Queue, None] = {}  # queues whose consumers may take more
        self._batches: dict[_Sub, list[Delivery]] = {}  # assigned, not yet handed over
        self._scheduled = False
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name!r} queues={len(self.queues)}>"

    @classmethod
    def get(cls, name: str = "default") -> MemoryBroker:
        broker = cls._brokers.get(name)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if broker is None or (loop is not None and broker.loop not in (None, loop)):
            broker = cls._brokers[name] = cls(name)
        return broker

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget the broker called `name` (all of them without a name)."""
        if name is None:
            cls._brokers.clear()
        else:
            cls._brokers.pop(name, None)

    # ------------------------------------------------------------------ dispatch

    def mark(self, queue: _Queue) -> None:
        """Consumers of `queue` may take more: look again on the next dispatch."""
        self._dirty[queue] = None
        self._schedule()

    def _pending(self, sub: _Sub, delivery: Delivery) -> None:
        batch = self._batches.get(sub)
        if batch is None:
            self._batches[sub] = [delivery]
            self._schedule()
        else:
            batch.append(delivery)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        """One dispatch per loop tick: fill consumers, then one callback per consumer."""
        self._scheduled = False
        if self._dirty:
            dirty, self._dirty = self._dirty, {}
            now = self.loop.time()
            for queue in dirty:
                if not queue.deleted:
                    queue.deliver(now)
        # Swapped out first: callbacks may publish, and those deliveries go in a later tick.
        batches, self._batches = self._batches, {}
        for sub, batch in batches.items():
            sub.channel._dispatch(sub, batch)

    # ------------------------------------------------------------------ routing

    def route(self, exchange: Exchange, routing_key: str, content: _Content) -> list[_Queue]:
        """The queues a message reaches by its routing key and its CC and BCC keys, through
        exchange bindings and alternate exchanges, each once."""
        if not exchange.name:
            if content.routes:
                found_by_name = (self._default_route(k) for k in content.routing_keys)
                return list(dict.fromkeys(q for q in found_by_name if q is not None))
            queue = self._default_route(routing_key)
            return [queue] if queue is not None else []
        found: dict[_Queue, None] = {}
        seen: set[str] = set()
        todo = [exchange]
        keys = content.routing_keys if content.routes else None
        typed: list[dict[str, Any]] = []

        def headers() -> dict[str, Any]:
            if not typed:  # read once, and only if a headers exchange asks
                typed.append(headers_exchange.routing_headers(content.raw))
            return typed[0]

        while todo:
            ex = todo.pop()
            if ex.name in seen:
                continue
            seen.add(ex.name)
            destinations = (
                ex.match(routing_key, headers) if keys is None else ex.match_keys(keys, headers)
            )
            if not destinations:
                alternate = ex.alternate
                if alternate is not None and alternate in self.exchanges:
                    todo.append(self.exchanges[alternate])
                continue
            for destination in destinations:
                if type(destination) is Exchange:
                    todo.append(destination)
                else:
                    found[destination] = None
        return list(found)

    def _default_route(self, name: str) -> _Queue | None:
        queue = self.queues.get(name)
        if queue is None and name.startswith(rules.REPLY_TO_PREFIX):
            queue = self._reply_queues.get(name)
        return queue

    def publish(
        self,
        channel: MemoryChannel,
        exchange_name: str,
        routing_key: str,
        body: bytes,
        raw: bytes,
        props: Properties | None,
        mandatory: bool,
    ) -> bool:
        """Route one publish; True if a queue refused it (x-overflow: reject-publish).

        Raises the BrokerError with which RabbitMQ would close the channel.
        """
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            raise rules.no_exchange(exchange_name, rules.BASIC_PUBLISH)
        if exchange.internal:
            raise rules.error(
                "ACCESS_REFUSED",
                f"cannot publish to internal {rules.rs('exchange', exchange_name)}",
                rules.BASIC_PUBLISH,
            )
        ttl = None
        routes: tuple[str, ...] = ()
        if checks.needs_look(raw):
            if props is None:
                props = _decode(raw)
            if props.reply_to == rules.REPLY_TO:
                reply = channel._reply
                if reply is None:
                    raise rules.error(
                        "PRECONDITION_FAILED",
                        "fast reply consumer does not exist",
                        rules.BASIC_PUBLISH,
                    )
                # Rewritten to a routable name, as RabbitMQ does (on our private copy).
                props.reply_to = reply.queue.name
                raw = fields.with_headers_table(props, fields.headers_table(raw))
            ttl, routes, checked = checks.inspect(raw, props)
            if checked is not raw:  # BCC was taken out: props still has it
                raw, props = checked, None
        content = _Content(exchange_name, routing_key, body, raw, props, ttl, routes)
        queues = self.route(exchange, routing_key, content)
        if not queues:
            if mandatory:
                channel._schedule_return(content)
            return False
        refused = False
        for queue in queues:
            if not queue.push(content):
                refused = True
        return refused

    def dead_letter(self, queue: _Queue, entry: _Entry, reason: str) -> None:
        """Republish a rejected, expired or overflowing message to the queue's DLX."""
        if queue.dlx is None:
            return
        exchange = self.exchanges.get(queue.dlx)
        if exchange is None:
            return  # RabbitMQ drops it too (and logs a warning)
        old = entry.content
        props = old.properties()
        before = props.headers or {}
        props.headers = rules.add_death(
            before,
            reason=reason,
            queue=queue.name,
            exchange=old.exchange,
            routing_keys=checks.death_routing_keys(old.routing_key, old.raw),
            expiration=props.expiration,
            now=int(time.time()),
        )
        # Only x-death and the x-first-death-* it adds change; other headers keep their bytes.
        changed = {k: v for k, v in props.headers.items() if k == "x-death" or k not in before}
        raw = checks.dead_letter_properties(props, old.raw, changed)
        # Without a dead-letter routing key the copy keeps all its keys, CC and BCC too.
        if queue.dlrk is not None:
            routing_key, routes = queue.dlrk, ()
        else:
            routing_key, routes = old.routing_key, old.routes
        content = _Content(queue.dlx, routing_key, old.body, raw, props, None, routes)
        targets = self.route(exchange, routing_key, content)
        if reason != "rejected":
            deaths = props.headers["x-death"]
            targets = [q for q in targets if not rules.is_cycle(q.name, deaths)]
        for target in targets:
            target.push(content)

    # ------------------------------------------------------------------ deletion

    def delete_queue(self, queue: _Queue) -> int:
        """Delete a queue: bindings go, consumers are cancelled; returns its ready count."""
        if queue.deleted:
            return 0
        queue.deleted = True
        if self.queues.get(queue.name) is queue:
            del self.queues[queue.name]
        queue.stop_timers()
        count = queue.purge()
        self._dirty.pop(queue, None)
        for exchange in list(self.exchanges.values()):
            if exchange.unbind_all(queue):
                self._maybe_auto_delete(exchange)
        subs = list(queue.subs)
        queue.subs.clear()
        for sub in subs:
            sub.channel._cancelled_by_broker(sub)
        return count

    def delete_exchange(self, exchange: Exchange) -> None:
        if self.exchanges.get(exchange.name) is not exchange:
            return
        del self.exchanges[exchange.name]
        for other in list(self.exchanges.values()):
            if other.unbind_all(exchange):
                self._maybe_auto_delete(other)

    def _maybe_auto_delete(self, exchange: Exchange) -> None:
        # RabbitMQ deletes an auto-delete exchange when its last binding as a source goes.
        if exchange.auto_delete and not exchange.bindings:
            self.delete_exchange(exchange)


def _check_binding(source: Exchange, args: dict[str, Any], method: tuple[int, int]) -> None:
    """The exchange type's check of a new binding's arguments (headers: x-match)."""
    if source.type == "headers":
        problem = headers_exchange.binding_problem(args)
        if problem:
            raise rules.error("PRECONDITION_FAILED", problem, method)


# --------------------------------------------------------------------------- connection

_NEW, _OPEN, _CLOSING, _CLOSED = "new", "open", "closing", "closed"


class MemoryConnection:
    """A connection to an in-process broker, with `client.Connection`'s API.

    `MemoryConnection("memory://name")` joins the broker called name ("default" for a
    bare `memory://`). It never drops, so `reconnects` stays 0 and `on_reconnect` /
    `on_lost` are never called; there is no topology to replay. Keyword arguments of the
    real Connection (reconnect, backoff, ...) are accepted and ignored, except `name`.
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
        return self._state == _OPEN

    @property
    def is_closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def is_blocked(self) -> bool:
        return False

    @property
    def state(self) -> str:
        return self._state

    async def __aenter__(self) -> MemoryConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> MemoryConnection:
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
        ch = MemoryChannel(self, channel_id, confirms=confirms, max_unconfirmed=max_unconfirmed)
        self._channels[channel_id] = ch
        ch._open()
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

    def _forget_channel(self, ch: MemoryChannel) -> None:
        if self._channels.get(ch.id) is ch:
            del self._channels[ch.id]

    async def close(self, timeout: float = 5.0) -> None:
        """Close like a connection dying on RabbitMQ: unacked deliveries are requeued,
        consumers go (auto-delete queues with them), exclusive queues are deleted."""
        if self._state in (_CLOSED, _NEW):
            self._state = _CLOSED
            return
        self._state = _CLOSING
        broker = self.broker
        for ch in list(self._channels.values()):
            # Acks made this tick reach the broker before the close, as on the wire.
            ch._ack_later_now()
            if ch._live:
                ch._detach()
        for queue in [q for q in broker.queues.values() if q.owner is self]:
            broker.delete_queue(queue)
        reason = ConnectionLost(f"connection to {self.url} was closed")
        self._state = _CLOSED
        for ch in list(self._channels.values()):
            ch._fail_forever(reason)
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future)


# --------------------------------------------------------------------------- channel


class MemoryChannel:
    """One channel of a `MemoryConnection`, with `channel.Channel`'s API and semantics."""

    def __init__(
        self,
        connection: MemoryConnection,
        channel_id: int,
        *,
        confirms: bool = True,
        max_unconfirmed: int = 1024,
    ) -> None:
        self.connection = connection
        self.id = channel_id
        self.generation = 0  # bumps on every (re)open; delivery tags of older ones are void
        self.confirms = confirms
        self.max_unconfirmed = max_unconfirmed  # accepted for parity; confirms are instant
        self.on_return: Callable[[Delivery], None] | None = None
        self.on_publish_failure: Callable[[list[tuple[int, Exception]]], None] | None = None
        self._loop = connection.loop
        self._broker = connection.broker
        self._consumers: dict[str, Consumer] = {}  # what the application asked for
        self._subs: dict[str, _Sub] = {}  # what the broker has on this channel now
        self._reply: _Sub | None = None  # the direct reply-to consumer
        self._unacked: OrderedDict[int, tuple[_Entry, _Queue, _Sub | None]] = OrderedDict()
        self._next_tag = 1
        self._qos: tuple[int, int] | None = None
        self._last_queue = ""  # RabbitMQ's "most recently declared queue" shortcut
        self._tags = itertools.count(1)
        self._open_event = asyncio.Event()
        self._live = False  # the broker side of the channel is open
        self._closed_by_user = False
        # Between a refused publish/ack and the moment the client "receives" the close:
        self._closing_error: BrokerError | None = None
        self._landing: asyncio.Future[None] | None = None
        self._reopen_handle: asyncio.Handle | None = None
        # Confirms: seq numbers never restart. Publishes made while closing are discarded
        # by the broker (they fail when the close lands); publishes made while reopening
        # wait in _buffered and go out after the reopen, as the real client republishes.
        self._last_seq = 0
        self._doomed: list[int] = []
        self._buffered: list[tuple[int, str, str, bytes, bytes, Properties | None, bool]] = []
        self._to_notify: list[tuple[int, Exception]] = []
        self._confirm_waiters = ConfirmWaiters(PublishError)
        self._later: list[int] = []  # ack_later tags, acked at the end of the tick
        self._unyielded = 0  # publishes since the last drain()
        self.acked = 0  # messages acked with ack_later / nacked or rejected (counters)
        self.nacked = 0
        # Same metric as the real channel; confirms are immediate here, so samples are 0.
        self.sample_confirms = True
        self.confirm_seconds = FastHistogram()

    # ------------------------------------------------------------------ state

    @property
    def is_open(self) -> bool:
        return self._open_event.is_set()

    def is_consuming(self, consumer_tag: str) -> bool:
        """Whether the consumer `consumer_tag` is consuming on this channel (as
        `Channel.is_consuming`)."""
        return consumer_tag in self._consumers

    @property
    def unconfirmed(self) -> int:
        return len(self._doomed) + len(self._buffered)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed" if self._closed_by_user else "recovering"
        return f"<MemoryChannel {self.id} {state} gen={self.generation}>"

    def _open(self) -> None:
        self._live = True
        self._next_tag = 1
        self.generation += 1
        self._open_event.set()

    async def _enter(self) -> None:
        """What the real channel's _rpc does before a method: wait until it is open.

        A method sent while the broker is already closing the channel is answered by that
        close, so it raises the error that closed the channel.
        """
        if self._closed_by_user:
            raise LocalProtocolError(f"channel {self.id} is closed")
        await self._raise_if_closing()
        await asyncio.sleep(0)  # a round trip's worth: let due deliveries run first
        while True:
            if self._closed_by_user:
                raise LocalProtocolError(f"channel {self.id} is closed")
            await self._raise_if_closing()
            if self.is_open:
                return
            await self._wait_open()

    async def _raise_if_closing(self) -> None:
        error = self._closing_error
        if error is not None:
            assert self._landing is not None
            await asyncio.shield(self._landing)
            raise error

    async def _wait_open(self) -> None:
        conn = self.connection
        if conn.is_closed:
            raise ConnectionLost(f"connection to {conn.url} is closed")
        waiter = asyncio.ensure_future(self._open_event.wait())
        await asyncio.wait([waiter, conn._closed_future], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            raise ConnectionLost(f"connection to {conn.url} is closed")

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a synchronous broker method; a refusal closes the channel like RabbitMQ's."""
        await self._enter()
        try:
            return method(*args)
        except BrokerError as exc:
            if self._live:
                self._detach()
            self._client_closed(exc)
            raise

    # ------------------------------------------------------------------ closing and reopening

    def _detach(self) -> None:
        """The broker side of the channel closes: its consumers are removed and its unacked
        deliveries requeued, marked redelivered."""
        self._live = False
        # Consumers go first so requeued messages cannot be handed straight back to this
        # channel; an auto-delete queue losing its last consumer takes them with it, as in
        # RabbitMQ.
        for sub in list(self._subs.values()):
            self._unsubscribe(sub)
        if self._unacked:
            by_queue: dict[_Queue, list[_Entry]] = {}
            for entry, queue, _sub in self._unacked.values():
                entry.redelivered = True
                by_queue.setdefault(queue, []).append(entry)
            self._unacked.clear()
            for queue, entries in by_queue.items():
                if not queue.deleted:
                    queue.requeue(entries)

    def _close_async(self, error: BrokerError) -> None:
        """The broker refused a publish or ack: it closes the channel now, and the client
        learns about it one tick later (the call that caused it has already returned)."""
        if not self._live:
            return
        self._detach()
        self._closing_error = error
        self._landing = self._loop.create_future()
        self._loop.call_soon(self._land)

    def _land(self) -> None:
        error = self._closing_error
        self._closing_error = None
        if error is not None and not self._closed_by_user and not self.connection.is_closed:
            self._client_closed(error)
        if self._landing is not None and not self._landing.done():
            self._landing.set_result(None)

    def _client_closed(self, error: BrokerError) -> None:
        """The client sees the broker's Channel.Close: fail what the broker discarded,
        then reopen (generation + 1) as the real client does."""
        self._open_event.clear()
        log.warning("channel %d: %s", self.id, error)
        doomed, self._doomed = self._doomed, []
        if doomed:
            self._record_failures([(seq, error) for seq in doomed])
        self._wake_confirm_waiters()
        if self.connection.is_open and not self._closed_by_user:
            self._reopen_handle = self._loop.call_soon(self._reopen)

    def _reopen(self) -> None:
        self._reopen_handle = None
        if self._closed_by_user or not self.connection.is_open:
            return
        self._open()
        for record in list(self._consumers.values()):
            try:
                self._subscribe(record)
            except BrokerError as exc:
                # The real client would see the channel close again here; we just drop
                # the consumer that cannot come back and keep the others.
                log.error(
                    "consumer %s on queue %r could not be restored: %s",
                    record.tag,
                    record.queue,
                    exc,
                )
                self._consumers.pop(record.tag, None)
                if record.on_cancel is not None:
                    record.on_cancel(record.tag)
        buffered, self._buffered = self._buffered, []
        for item in buffered:
            self._publish_now(*item)
        self._wake_confirm_waiters()

    def _fail_forever(self, error: BaseException) -> None:
        """The connection is closed for good: fail everything that still waits."""
        self._live = False
        self._open_event.clear()
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        lost = self._doomed + [item[0] for item in self._buffered]
        self._doomed, self._buffered = [], []
        if lost and self.confirms:
            self._record_failures([(seq, error) for seq in lost])  # type: ignore[misc]
        self._wake_confirm_waiters()
        if self._closing_error is not None:
            self._land()

    async def close(self) -> None:
        if self._closed_by_user:
            return
        self._closed_by_user = True
        self._ack_later_now()  # before Channel.Close, as the real channel sends them
        if self._live:
            self._detach()
        self._open_event.clear()
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        # Unlike the real client (whose waiters would hang), settle what can never be
        # confirmed now.
        lost = self._doomed + [item[0] for item in self._buffered]
        self._doomed, self._buffered = [], []
        if lost and self.confirms:
            reason = self._closing_error or ConnectionLost(f"channel {self.id} closed")
            self._record_failures([(seq, reason) for seq in lost])
        self._wake_confirm_waiters()
        self.connection._forget_channel(self)
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ topology

    async def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        rules.check_name("exchange", exchange)
        await self._call(
            self._exchange_declare,
            exchange,
            exchange_type,
            passive,
            durable,
            auto_delete,
            internal,
            dict(arguments or {}),
        )

    def _exchange_declare(
        self,
        name: str,
        type_: str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> None:
        method = rules.EXCHANGE_DECLARE
        if not name:
            raise rules.default_exchange_refused(method)
        exchanges = self._broker.exchanges
        if passive:
            if name not in exchanges:
                raise rules.no_exchange(name, method)
            return
        if type_ not in rules.EXCHANGE_TYPES:
            raise rules.error("COMMAND_INVALID", f"unknown exchange type '{type_}'", method)
        existing = exchanges.get(name)
        if existing is None:
            if name.startswith("amq."):
                raise rules.error(
                    "ACCESS_REFUSED",
                    f"exchange name '{name}' contains reserved prefix 'amq.*'",
                    method,
                )
            exchanges[name] = Exchange(name, type_, durable, auto_delete, internal, arguments)
            return
        problem = existing.equivalence_problem(type_, durable, auto_delete, internal, arguments)
        if problem:
            raise rules.error("PRECONDITION_FAILED", problem, method)

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        rules.check_name("exchange", exchange)
        await self._call(self._exchange_delete, exchange, if_unused)

    def _exchange_delete(self, name: str, if_unused: bool) -> None:
        method = rules.EXCHANGE_DELETE
        if not name:
            raise rules.default_exchange_refused(method)
        if name.startswith("amq."):
            raise rules.error(
                "ACCESS_REFUSED", f"deletion of system {rules.rs('exchange', name)} not allowed",
                method,
            )  # fmt: skip
        existing = self._broker.exchanges.get(name)
        if existing is None:
            return
        if if_unused and existing.bindings:
            raise rules.error("PRECONDITION_FAILED", f"{rules.rs('exchange', name)} in use", method)
        self._broker.delete_exchange(existing)

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        rules.check_name("destination", destination)
        rules.check_name("source", source)
        rules.check_arguments(arguments)
        await self._call(
            self._exchange_bind, destination, source, routing_key, dict(arguments or {}), True
        )

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        rules.check_name("destination", destination)
        rules.check_name("source", source)
        rules.check_arguments(arguments)
        await self._call(
            self._exchange_bind, destination, source, routing_key, dict(arguments or {}), False
        )

    def _exchange_bind(
        self, destination: str, source: str, routing_key: str, args: dict[str, Any], bind: bool
    ) -> None:
        method = rules.EXCHANGE_BIND if bind else rules.EXCHANGE_UNBIND
        if not source or not destination:
            raise rules.default_exchange_refused(method)
        exchanges = self._broker.exchanges
        src, dst = exchanges.get(source), exchanges.get(destination)
        if bind:
            if src is None:
                raise rules.no_exchange(source, method)
            if dst is None:
                raise rules.no_exchange(destination, method)
            _check_binding(src, args, method)
            src.bind(dst, routing_key, args)
        elif src is not None and dst is not None and src.unbind(dst, routing_key, args):
            self._broker._maybe_auto_delete(src)

    async def queue_declare(
        self,
        queue: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> QueueDeclareOk:
        rules.check_name("queue", queue)
        return await self._call(
            self._queue_declare,
            queue,
            passive,
            durable,
            exclusive,
            auto_delete,
            dict(arguments or {}),
        )

    def _queue_declare(
        self,
        name: str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
    ) -> QueueDeclareOk:
        method = rules.QUEUE_DECLARE
        broker = self._broker
        if name == rules.REPLY_TO:
            return QueueDeclareOk(name, 0, 1)  # RabbitMQ's answer for the pseudo queue
        if passive:
            queue = self._queue(name, method)
        else:
            if not name:
                name = _server_name()
            elif name.startswith("amq."):
                raise rules.error(
                    "ACCESS_REFUSED",
                    f"queue name '{name}' contains reserved prefix 'amq.*'",
                    method,
                )
            durable = durable and not exclusive  # RabbitMQ never keeps exclusive queues
            owner = self.connection if exclusive else None
            existing = broker.queues.get(name)
            if existing is None:
                # RabbitMQ 4.3's order: invalid arguments (406) before the kind of queue.
                rules.validate_queue_args(name, arguments, exclusive, durable, auto_delete)
                if not durable and not exclusive:
                    raise rules.transient_nonexclusive(name)
                queue = _Queue(
                    broker,
                    name,
                    durable=durable,
                    owner=owner,
                    auto_delete=auto_delete,
                    arguments=arguments,
                )
                broker.queues[name] = queue
            else:
                queue = existing
                if queue.owner is not owner:
                    raise rules.locked(name, method)
                problem = None
                for key, have, want in (
                    ("durable", queue.durable, durable),
                    ("auto_delete", queue.auto_delete, auto_delete),
                ):
                    if have != want:
                        problem = rules.inequivalent("queue", name, key, want, have)
                        break
                problem = problem or rules.queue_args_difference(name, queue.arguments, arguments)
                if problem:
                    raise rules.error("PRECONDITION_FAILED", problem, method)
        queue.touch()
        self._last_queue = name
        return queue.declare_ok()

    def _queue(self, name: str, method: tuple[int, int]) -> _Queue:
        """An existing queue this connection may use (RabbitMQ's lax exclusivity check)."""
        queue = self._broker.queues.get(name)
        if queue is None:
            raise rules.no_queue(name, method)
        if queue.owner is not None and queue.owner is not self.connection:
            raise rules.locked(name, method)
        return queue

    def _shortcut(self, name: str, method: tuple[int, int]) -> str:
        """An empty queue name means the channel's most recently declared queue."""
        if name:
            return name
        if not self._last_queue:
            raise rules.error("NOT_FOUND", "no previously declared queue", method)
        return self._last_queue

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        rules.check_name("queue", queue)
        rules.check_name("exchange", exchange)
        rules.check_arguments(arguments)
        await self._call(
            self._queue_bind, queue, exchange, routing_key, dict(arguments or {}), True
        )

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        rules.check_name("queue", queue)
        rules.check_name("exchange", exchange)
        rules.check_arguments(arguments)
        await self._call(
            self._queue_bind, queue, exchange, routing_key, dict(arguments or {}), False
        )

    def _queue_bind(
        self, name: str, exchange: str, routing_key: str, args: dict[str, Any], bind: bool
    ) -> None:
        method = rules.QUEUE_BIND if bind else rules.QUEUE_UNBIND
        if not name and not routing_key:
            routing_key = self._shortcut(name, method)
        name = self._shortcut(name, method)
        if not exchange:
            raise rules.default_exchange_refused(method)
        broker = self._broker
        source = broker.exchanges.get(exchange)
        if bind:
            if source is None:
                raise rules.no_exchange(exchange, method)
            queue = self._queue(name, method)
            _check_binding(source, args, method)
            source.bind(queue, routing_key, args)
            return
        queue = broker.queues.get(name)
        if source is not None and queue is not None and source.unbind(queue, routing_key, args):
            broker._maybe_auto_delete(source)

    async def queue_purge(self, queue: str) -> int:
        rules.check_name("queue", queue)
        return await self._call(self._queue_purge, queue)

    def _queue_purge(self, name: str) -> int:
        method = rules.QUEUE_PURGE
        return self._queue(self._shortcut(name, method), method).purge()

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        rules.check_name("queue", queue)
        return await self._call(self._queue_delete, queue, if_unused, if_empty)

    def _queue_delete(self, name: str, if_unused: bool, if_empty: bool) -> int:
        method = rules.QUEUE_DELETE
        name = self._shortcut(name, method)
        if name not in self._broker.queues:
            return 0  # deleting what is not there is fine, as in RabbitMQ
        queue = self._queue(name, method)
        if if_unused and queue.subs:
            raise rules.error("PRECONDITION_FAILED", f"{rules.rs('queue', name)} in use", method)
        if if_empty and queue.ready:
            raise rules.error("PRECONDITION_FAILED", f"{rules.rs('queue', name)} not empty", method)
        return self._broker.delete_queue(queue)

    async def basic_qos(self, prefetch_count: int, prefetch_size: int = 0) -> None:
        """Per-consumer prefetch: applies to consumers started after this call."""
        await self._call(self._basic_qos, prefetch_count, prefetch_size)

    def _basic_qos(self, prefetch_count: int, prefetch_size: int) -> None:
        if prefetch_size:
            raise rules.error(
                "NOT_IMPLEMENTED", f"prefetch_size!=0 ({prefetch_size})", rules.BASIC_QOS
            )
        self._qos = (prefetch_count, prefetch_size)

    # ------------------------------------------------------------------ consuming

    async def consume(
        self,
        queue: str,
        callback: DeliveryCallback,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str | None = None,
        arguments: dict[str, Any] | None = None,
        on_cancel: Callable[[str], None] | None = None,
    ) -> str:
        """Start a consumer; `callback(deliveries)` gets each batch, in order.

        `on_cancel(tag)` runs when the broker cancels the consumer (queue deleted).
        """
        rules.check_name("queue", queue)
        tag = consumer_tag or f"mg.{self.id}.{next(self._tags)}"
        record = Consumer(tag, queue, callback, no_ack, exclusive, arguments, on_cancel)
        await self._call(self._subscribe, record)
        self._consumers[tag] = record
        return tag

    def _subscribe(self, record: Consumer) -> None:
        method = rules.BASIC_CONSUME
        tag = record.tag
        if tag in self._subs:
            raise rules.error("NOT_ALLOWED", f"attempt to reuse consumer tag '{tag}'", method)
        broker = self._broker
        if record.queue == rules.REPLY_TO:
            if not record.no_ack:
                raise rules.error(
                    "PRECONDITION_FAILED", "reply consumer cannot acknowledge", method
                )
            if self._reply is not None:
                raise rules.error("PRECONDITION_FAILED", "reply consumer already set", method)
            # A fresh routable name per consumer: replies to an older one go nowhere.
            token = base64.urlsafe_b64encode(os.urandom(18)).decode()
            pseudo = _Queue(broker, rules.REPLY_TO_PREFIX + token, pseudo=True)
            sub = _Sub(self, record, pseudo, 0)
            pseudo.subs.append(sub)
            broker._reply_queues[pseudo.name] = pseudo
            self._reply = self._subs[tag] = sub
            return
        name = self._shortcut(record.queue, method)
        queue = self._queue(name, method)
        if queue.exclusive_sub is not None or (record.exclusive and queue.subs):
            raise rules.error(
                "ACCESS_REFUSED", f"{rules.rs('queue', name)} in exclusive use", method
            )
        prefetch = self._qos[0] if self._qos is not None else 0
        sub = _Sub(self, record, queue, prefetch)
        self._subs[tag] = sub
        queue.add_sub(sub, record.exclusive)

    def _unsubscribe(self, sub: _Sub) -> None:
        sub.active = False
        self._subs.pop(sub.tag, None)
        queue = sub.queue
        if queue.pseudo:
            self._broker._reply_queues.pop(queue.name, None)
            queue.deleted = True
            queue.subs.clear()
            self._reply = None
        else:
            queue.remove_sub(sub)

    async def cancel(self, consumer_tag: str) -> None:
        if consumer_tag not in self._consumers:
            return
        try:
            if self.is_open:
                await self._raise_if_closing()
                await asyncio.sleep(0)
                sub = self._subs.get(consumer_tag)
                if sub is not None:
                    self._unsubscribe(sub)
        finally:
            self._consumers.pop(consumer_tag, None)

    def _cancelled_by_broker(self, sub: _Sub) -> None:
        """The queue was deleted: like consumer_cancel_notify, tell the client next tick."""
        sub.active = False
        self._subs.pop(sub.tag, None)
        self._loop.call_soon(self._on_consumer_cancelled, sub.tag)

    def _on_consumer_cancelled(self, tag: str) -> None:
        record = self._consumers.pop(tag, None)
        log.warning(
            "broker cancelled consumer %s on queue %r", tag, record.queue if record else "?"
        )
        if record is not None and record.on_cancel is not None:
            record.on_cancel(tag)

    async def get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """Basic.Get: one message or None when the queue is empty."""
        rules.check_name("queue", queue)
        return await self._call(self._get, queue, no_ack)

    def _get(self, name: str, no_ack: bool) -> Delivery | None:
        method = rules.BASIC_GET
        queue = self._queue(self._shortcut(name, method), method)
        queue.touch()
        entry = queue.take()
        if entry is None:
            return None
        tag = self._next_tag
        self._next_tag = tag + 1
        d = self._delivery(GET_OK, entry)
        d.delivery_tag = tag
        d.message_count = len(queue.ready)
        if not no_ack:
            self._unacked[tag] = (entry, queue, None)
        return d

    def _delivery(self, kind: int, entry: _Entry) -> Delivery:
        content = entry.content
        d = Delivery(self.id, kind)
        d.redelivered = entry.redelivered
        d.exchange = content.exchange
        d.routing_key = content.routing_key
        d.properties = content.properties()
        d.properties_raw = content.raw
        d.body = content.body
        return d

    def _deliver(self, sub: _Sub, entry: _Entry, queue: _Queue) -> Delivery:
        """Broker side of Basic.Deliver: take a delivery tag, track it until settled."""
        tag = self._next_tag
        self._next_tag = tag + 1
        d = self._delivery(DELIVER, entry)
        d.consumer_tag = sub.tag
        d.delivery_tag = tag
        if not sub.no_ack:
            self._unacked[tag] = (entry, queue, sub)
            sub.unacked += 1
        return d

    def _dispatch(self, sub: _Sub, batch: list[Delivery]) -> None:
        """Client side: hand one batch to its consumer's callback."""
        if not self._live or sub.generation != self.generation:
            return  # the channel closed meanwhile and requeued these; their tags are void
        record = sub.record
        if self._consumers.get(sub.tag) is not record:
            # Cancelled while these were on their way: hand them back, like the client.
            if not sub.no_ack:
                self._settle([d.delivery_tag for d in batch], requeue=True)
            return
        try:
            record.callback(batch)
        except Exception:
            log.exception("consumer callback for %s raised; its messages stay unacked", sub.tag)

    # ------------------------------------------------------------------ acknowledgements

    def ack(
        self, delivery_tag: int, multiple: bool = False, *, generation: int | None = None
    ) -> bool:
        """Settle deliveries; False if the tag is void (channel reopened since)."""
        if not self._valid_tag(generation):
            return False
        if self._live:  # after the broker closed the channel it ignores acks
            taken = self._take(delivery_tag, multiple, rules.BASIC_ACK)
            if taken:
                self._settle_taken(taken, None)
        return True

    def ack_later(self, delivery_tag: int, generation: int) -> bool:
        """Ack at the end of this loop tick, like the real channel's coalesced ack (which
        never acks a tag settled another way meanwhile). False if the tag is void."""
        if generation != self.generation or not self.is_open:
            return False
        self.acked += 1
        if not self._later:
            self._loop.call_soon(self._ack_later_due, self.generation)
        self._later.append(delivery_tag)
        return True

    def _ack_later_now(self) -> None:
        """Settle the ack_later tags of this tick now (a close must not drop them)."""
        if self._later:
            self._ack_later_due(self.generation)

    def _ack_later_due(self, generation: int) -> None:
        tags, self._later = self._later, []
        if generation != self.generation or not self._live:
            return  # the channel reopened: the broker requeued these already
        self._settle(sorted(tags), requeue=None)

    def nack(
        self,
        delivery_tag: int,
        multiple: bool = False,
        requeue: bool = True,
        *,
        generation: int | None = None,
    ) -> bool:
        if not self._valid_tag(generation):
            return False
        self.nacked += 1
        if self._live:
            taken = self._take(delivery_tag, multiple, rules.BASIC_NACK)
            if taken:
                self._settle_taken(taken, requeue)
        return True

    def reject(
        self, delivery_tag: int, requeue: bool = True, *, generation: int | None = None
    ) -> bool:
        if not self._valid_tag(generation):
            return False
        self.nacked += 1
        if self._live:
            taken = self._take(delivery_tag, False, rules.BASIC_REJECT)
            if taken:
                self._settle_taken(taken, requeue)
        return True

    def _valid_tag(self, generation: int | None) -> bool:
        if generation is not None and generation != self.generation:
            return False
        return self.is_open

    def _take(
        self, tag: int, multiple: bool, method: tuple[int, int]
    ) -> list[tuple[_Entry, _Queue, _Sub | None]]:
        """The unacked deliveries an ack/nack/reject covers (RabbitMQ's collect_acks)."""
        unacked = self._unacked
        if multiple and tag == 0:
            taken = list(unacked.values())
            unacked.clear()
            return taken
        if tag not in unacked:
            self._close_async(
                rules.error("PRECONDITION_FAILED", f"unknown delivery tag {tag}", method)
            )
            return []
        if not multiple:
            return [unacked.pop(tag)]
        taken = []
        while unacked:
            first = next(iter(unacked))
            if first > tag:
                break
            taken.append(unacked.popitem(last=False)[1])
        return taken

    def _settle(self, tags: list[int], requeue: bool | None) -> None:
        taken = [self._unacked.pop(t) for t in tags if t in self._unacked]
        if taken:
            self._settle_taken(taken, requeue)

    def _settle_taken(
        self, taken: list[tuple[_Entry, _Queue, _Sub | None]], requeue: bool | None
    ) -> None:
        """requeue None: acked; True: back to the queue; False: dead-lettered or dropped."""
        broker = self._broker
        back: dict[_Queue, list[_Entry]] = {}
        for entry, queue, sub in taken:
            if sub is not None:
                sub.unacked -= 1
                if sub.active:
                    broker.mark(queue)
            if requeue is None or queue.deleted:
                continue
            if requeue:
                entry.redelivered = True
                back.setdefault(queue, []).append(entry)
            else:
                broker.dead_letter(queue, entry, "rejected")
        for queue, entries in back.items():
            queue.requeue(entries)

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | bytes | None = None,
        *,
        mandatory: bool = False,
    ) -> int:
        """Publish; returns the confirm sequence number (0 without confirms).

        Routing happens now; consumers see the message from the next loop tick. A publish
        the broker refuses (missing exchange, ...) returns normally and closes the channel
        a tick later; `wait_confirms()` then raises PublishError.

        Raises PropertiesTooLarge, as the client does, when the encoded properties would
        not fit one content header frame of the URL's frame_max (nothing is published).
        """
        props: Properties | None = None
        if properties is None:
            raw = _EMPTY_PROPERTIES
        elif type(properties) is bytes:
            raw = properties
            props = _decode(raw)  # validates, and RabbitMQ decodes every publish too
        else:
            raw = _speedups.encode_properties(properties)  # a snapshot, raising like the client
        frame_max = self.connection.frame_max
        if frame_max and len(raw) + _HEADER_OVERHEAD > frame_max:
            _speedups.check_header_fits(len(raw), frame_max)  # raises PropertiesTooLarge
        for value in (exchange, routing_key):
            if len(value) > 85 and len(value.encode("utf-8", "surrogateescape")) > 255:
                raise ValueError(f"short string longer than 255 bytes: {value[:40]!r}...")
        if type(body) is not bytes:
            body = bytes(body)
        self._unyielded += 1
        if self.is_open:
            seq = self._next_seq()
            self._publish_now(seq, exchange, routing_key, body, raw, props, mandatory)
            if seq and not seq & CONFIRM_SAMPLE_MASK and self.sample_confirms:
                self.confirm_seconds.observe(0.0)
        elif self.confirms and not self._closed_by_user and not self.connection.is_closed:
            seq = self._next_seq()
            self._buffered.append((seq, exchange, routing_key, body, raw, props, mandatory))
        else:
            raise ConnectionLost(f"cannot publish on channel {self.id}: it is not open")
        return seq

    def _next_seq(self) -> int:
        if not self.confirms:
            return 0
        self._last_seq += 1
        return self._last_seq

    def _publish_now(
        self,
        seq: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        raw: bytes,
        props: Properties | None,
        mandatory: bool,
    ) -> None:
        if not self._live:  # the broker is closing this channel and discards the publish
            if seq:
                self._doomed.append(seq)
            return
        try:
            refused = self._broker.publish(self, exchange, routing_key, body, raw, props, mandatory)
        except BrokerError as exc:
            self._close_async(exc)
            if seq:
                self._doomed.append(seq)
            return
        if refused and seq:
            failure = (seq, PublishNacked(f"broker nacked publish on channel {self.id}"))
            self._confirm_waiters.add([failure])
            # Reported from the loop, never from inside publish().
            if not self._to_notify:
                self._loop.call_soon(self._notify_failures)
            self._to_notify.append(failure)

    def _notify_failures(self) -> None:
        failures, self._to_notify = self._to_notify, []
        report_failures(failures, self.on_publish_failure)

    def _schedule_return(self, content: _Content) -> None:
        d = Delivery(self.id, RETURN)
        d.reply_code = 312
        d.reply_text = "NO_ROUTE"
        d.exchange = content.exchange
        d.routing_key = content.routing_key
        d.properties = content.properties()
        d.properties_raw = content.raw
        d.body = content.body
        self._loop.call_soon(self._on_return, d)

    def _on_return(self, delivery: Delivery) -> None:
        if self.on_return is not None:
            self.on_return(delivery)
        else:
            log.warning(
                "message returned by broker: %d %s (exchange %r, routing key %r)",
                delivery.reply_code,
                delivery.reply_text,
                delivery.exchange,
                delivery.routing_key,
            )

    @property
    def writable(self) -> bool:
        """True when publishing may go on without waiting (see `drain`)."""
        return self.connection.is_open and self._unyielded < _PUBLISHES_PER_YIELD

    async def drain(self, timeout: float | None = None) -> None:
        """No flow control in process, but it yields once so a publishing loop lets
        consumers run, as socket back-pressure would (so `timeout`, taken for parity with
        `Channel.drain`, never runs out)."""
        if self.connection.is_closed:
            raise ConnectionLost(f"connection to {self.connection.url} is closed")
        await asyncio.sleep(0)
        self._unyielded = 0

    async def wait_confirms(self, upto: int | None = None, timeout: float | None = None) -> None:
        """Wait until every publish with seq <= `upto` (default: all so far) is settled.

        Raises PublishError listing those that were nacked or lost (each failure is reported
        to one such waiter only: the first whose range covers it; a failure that a
        `wait_confirm_of` waiting for that very publish got is not reported here).
        """
        if not self.confirms:
            raise LocalProtocolError(f"channel {self.id} has publisher confirms off")
        if upto is None:
            upto = self._last_seq
        await self._confirm_waiters.wait(self._loop, upto, self._confirmed_through(), timeout)

    async def wait_confirm_of(self, seq: int, timeout: float | None = None) -> None:
        """Wait until the publish with sequence number `seq` is settled.

        Args:
            seq: what `publish()` returned.
            timeout: seconds, or None to wait as long as it takes.

        Raises:
            PublishError: that publish was nacked or lost (its failure only).
            TimeoutError: not settled within `timeout`.
            LocalProtocolError: the channel has publisher confirms off.
        """
        if not self.confirms:
            raise LocalProtocolError(f"channel {self.id} has publisher confirms off")
        await self._confirm_waiters.wait_one(self._loop, seq, self._confirmed_through(), timeout)

    def _confirmed_through(self) -> int:
        # Doomed and buffered publishes are always the newest ones.
        return self._last_seq - len(self._doomed) - len(self._buffered)

    def _wake_confirm_waiters(self) -> None:
        self._confirm_waiters.wake(self._confirmed_through())

    def _record_failures(self, failures: list[tuple[int, Exception]]) -> None:
        self._confirm_waiters.record(failures, self.on_publish_failure)
