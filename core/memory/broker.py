"""The memory:// broker: a named registry of brokers, routing, dead-lettering, dispatch.

A `MemoryBroker` is one RabbitMQ vhost's worth of state (exchanges, queues, direct
reply-to routes), shared by every `MemoryConnection` to its name. It routes a publish
through exchange bindings, exchange-to-exchange bindings and alternate exchanges (by the
routing key and the CC and BCC keys, each queue once), republishes dead letters to a
queue's dead-letter exchange, and deletes queues and exchanges with what hangs on them.
Deliveries are handed over as RabbitMQ's client would see them: from `loop.call_soon`,
never from inside publish or ack, one batch per consumer per loop tick.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, ClassVar, Protocol

from .._speedups import Delivery, Properties
from . import deaths
from . import publish as checks
from .content import Content, Entry, decode
from .errors import BASIC_PUBLISH, error, no_exchange, rs
from .exchange import Exchange, predeclared
from .headers import routing_headers
from .queue import Queue, Subscription
from .replyto import REPLY_TO, REPLY_TO_PREFIX, rewrite


class Publisher(Protocol):
    """What the broker needs of the channel a publish comes from (a `MemoryChannel`)."""

    reply_consumer: Subscription | None  # its direct reply-to consumer, if any

    def schedule_return(self, content: Content) -> None:
        """Return an unroutable mandatory publish to it (from the loop).

        Args:
            content: the message returned.
        """
        ...


class MemoryBroker:
    """One in-process broker (a RabbitMQ vhost's worth of state), shared by name.

    `MemoryBroker.get("x")` is what every `MemoryConnection("memory://x")` uses; tests
    call `MemoryBroker.reset()` for isolation (connections already open keep the old
    one). A broker lives on one event loop: a connection from another loop (a new test)
    gets a fresh broker under the same name. `exchanges` and `queues` are for inspection.

    Args:
        name: the broker's name (the host of its memory:// URLs).
    """

    _brokers: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.exchanges: dict[str, Exchange] = predeclared()
        self.queues: dict[str, Queue] = {}
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # first connect
        # Direct reply-to routes by routable name (replyto.py), reached by the default
        # exchange only.
        self.reply_queues: dict[str, Queue] = {}
        # Publish order across the broker: a requeued message goes back to its old place.
        self.sequence = itertools.count()
        self._dirty: dict[Queue, None] = {}  # queues whose consumers may take more
        self._batches: dict[Subscription, list[Delivery]] = {}  # assigned, not handed over
        self._scheduled = False

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name!r} queues={len(self.queues)}>"

    @classmethod
    def get(cls, name: str = "default") -> MemoryBroker:
        """The broker called `name`: a new one if there is none yet, or if the one there
        lives on another event loop than the running one.

        Args:
            name: the broker's name.

        Returns:
            The broker.
        """
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
        """Forget the broker called `name` (all of them without a name).

        Args:
            name: the broker's name, or None for every broker.
        """
        if name is None:
            cls._brokers.clear()
        else:
            cls._brokers.pop(name, None)

    # ------------------------------------------------------------------ dispatch

    def mark(self, queue: Queue) -> None:
        """Consumers of `queue` may take more: look again on the next dispatch.

        Args:
            queue: the queue.
        """
        self._dirty[queue] = None
        self._schedule()

    def hand_over(self, sub: Subscription, delivery: Delivery) -> None:
        """`delivery` goes to `sub`'s consumer with its batch at the next dispatch.

        Args:
            sub: the consumer's subscription.
            delivery: the delivery.
        """
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
            sub.channel.dispatch(sub, batch)

    # ------------------------------------------------------------------ routing

    def route(self, exchange: Exchange, routing_key: str, content: Content) -> list[Queue]:
        """The queues a message reaches by its routing key and its CC and BCC keys, through
        exchange bindings and alternate exchanges, each once.

        Args:
            exchange: the exchange published to.
            routing_key: the publish's routing key.
            content: the message (its CC and BCC keys, its headers).

        Returns:
            The queues, each once.
        """
        if not exchange.name:
            if content.routes:
                found_by_name = (self._default_route(k) for k in content.routing_keys)
                return list(dict.fromkeys(q for q in found_by_name if q is not None))
            queue = self._default_route(routing_key)
            return [queue] if queue is not None else []
        found: dict[Queue, None] = {}
        seen: set[str] = set()
        todo = [exchange]
        keys = content.routing_keys if content.routes else None
        typed: list[dict[str, Any]] = []

        def headers() -> dict[str, Any]:
            if not typed:  # read once, and only if a headers exchange asks
                typed.append(routing_headers(content.raw))
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

    def _default_route(self, name: str) -> Queue | None:
        queue = self.queues.get(name)
        if queue is None and name.startswith(REPLY_TO_PREFIX):
            queue = self.reply_queues.get(name)
        return queue

    def publish(
        self,
        channel: Publisher,
        exchange_name: str,
        routing_key: str,
        body: bytes,
        raw: bytes,
        props: Properties | None,
        mandatory: bool,
    ) -> bool:
        """Route one publish.

        Args:
            channel: the channel it comes from (mandatory returns go back to it).
            exchange_name: the exchange published to.
            routing_key: the routing key.
            body: the message body.
            raw: the encoded properties.
            props: the decoded properties, or None (decoded here when needed).
            mandatory: return it to the channel when no queue takes it.

        Returns:
            True if a queue refused it (x-overflow: reject-publish).

        Raises:
            BrokerError: what RabbitMQ would close the channel with: NotFound (no such
                exchange), AccessRefused (an internal exchange), PreconditionFailed
                (properties RabbitMQ refuses, such as an invalid expiration).
        """
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            raise no_exchange(exchange_name, BASIC_PUBLISH)
        if exchange.internal:
            raise error(
                "ACCESS_REFUSED",
                f"cannot publish to internal {rs('exchange', exchange_name)}",
                BASIC_PUBLISH,
            )
        ttl = None
        routes: tuple[str, ...] = ()
        if checks.needs_look(raw):
            if props is None:
                props = decode(raw)
            if props.reply_to == REPLY_TO:
                raw = rewrite(channel.reply_consumer, props, raw)
            ttl, routes, checked = checks.inspect(raw, props)
            if checked is not raw:  # BCC was taken out: props still has it
                raw, props = checked, None
        content = Content(exchange_name, routing_key, body, raw, props, ttl, routes)
        queues = self.route(exchange, routing_key, content)
        if not queues:
            if mandatory:
                channel.schedule_return(content)
            return False
        refused = False
        for queue in queues:
            if not queue.push(content):
                refused = True
        return refused

    def dead_letter(self, queue: Queue, entry: Entry, reason: str) -> None:
        """Republish a rejected, expired or overflowing message to the queue's DLX.

        Nothing happens when the queue has no dead-letter exchange, or it does not exist.

        Args:
            queue: the queue the message leaves.
            entry: the message in that queue.
            reason: the x-death reason: rejected, expired or maxlen.
        """
        if queue.dlx is None:
            return
        exchange = self.exchanges.get(queue.dlx)
        if exchange is None:
            return  # RabbitMQ drops it too (and logs a warning)
        old = entry.content
        props = old.properties()
        before = props.headers or {}
        props.headers = deaths.add_death(
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
        routes: tuple[str, ...]
        if queue.dlrk is not None:
            routing_key, routes = queue.dlrk, ()
        else:
            routing_key, routes = old.routing_key, old.routes
        content = Content(queue.dlx, routing_key, old.body, raw, props, None, routes)
        targets = self.route(exchange, routing_key, content)
        if reason != "rejected":
            died = props.headers["x-death"]
            targets = [q for q in targets if not deaths.is_cycle(q.name, died)]
        for target in targets:
            target.push(content)

    # ------------------------------------------------------------------ deletion

    def delete_queue(self, queue: Queue) -> int:
        """Delete a queue: bindings go, consumers are cancelled.

        Args:
            queue: the queue.

        Returns:
            How many ready messages it held (0 if it was deleted before).
        """
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
                self.maybe_auto_delete(exchange)
        subs = list(queue.subs)
        queue.subs.clear()
        for sub in subs:
            sub.channel.cancelled_by_broker(sub)
        return count

    def delete_exchange(self, exchange: Exchange) -> None:
        """Delete an exchange and its bindings as a destination (auto-delete sources
        losing their last binding go too).

        Args:
            exchange: the exchange.
        """
        if self.exchanges.get(exchange.name) is not exchange:
            return
        del self.exchanges[exchange.name]
        for other in list(self.exchanges.values()):
            if other.unbind_all(exchange):
                self.maybe_auto_delete(other)

    def maybe_auto_delete(self, exchange: Exchange) -> None:
        """A binding of `exchange` went: RabbitMQ deletes an auto-delete exchange when its
        last binding as a source goes.

        Args:
            exchange: the exchange.
        """
        if exchange.auto_delete and not exchange.bindings:
            self.delete_exchange(exchange)
