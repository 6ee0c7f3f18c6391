"""The broker side of a memory:// channel's topology methods, as RabbitMQ runs them.

Exchange and queue declare (with RabbitMQ's checks, in its order: reserved names,
arguments, exclusivity, redeclare equivalence), delete, bind and unbind, and queue purge.
`ChannelTopology` is one channel's view: it knows the connection (owner of the exclusive
queues it declares) and the channel's most recently declared queue, which an empty queue
name means. Each method runs synchronously and raises the `BrokerError` RabbitMQ would
close the channel with; `MemoryChannel` (channel.py) wraps them as the client's async API.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..engine import QueueDeclareOk
from . import arguments as args_rules
from .errors import (
    BASIC_QOS,
    EXCHANGE_BIND,
    EXCHANGE_DECLARE,
    EXCHANGE_DELETE,
    EXCHANGE_UNBIND,
    QUEUE_BIND,
    QUEUE_DECLARE,
    QUEUE_DELETE,
    QUEUE_PURGE,
    QUEUE_UNBIND,
    check_arguments,
    check_name,
    default_exchange_refused,
    error,
    locked,
    no_exchange,
    no_queue,
    rs,
    transient_nonexclusive,
)
from .exchange import EXCHANGE_TYPES, Exchange, check_binding
from .queue import Queue
from .replyto import REPLY_TO

if TYPE_CHECKING:
    from .broker import MemoryBroker
    from .connection import MemoryConnection


def server_name() -> str:
    """A server-named queue's name: RabbitMQ's look like amq.gen-JzTY20BRgKO-HjmUJj0wLg
    (16 random bytes, url-safe).
    """
    return "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


class ChannelTopology:
    """Declares, binds and deletes on a broker for one channel of `connection`."""

    def __init__(self, broker: MemoryBroker, connection: MemoryConnection) -> None:
        self.broker = broker
        self.connection = connection
        self.last_queue = ""  # RabbitMQ's "most recently declared queue" shortcut

    # ------------------------------------------------------------------ exchanges

    def exchange_declare(
        self,
        name: str,
        type_: str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> None:
        """The broker side of Exchange.Declare, as RabbitMQ checks it (406 on a mismatch)."""
        method = EXCHANGE_DECLARE
        if not name:
            raise default_exchange_refused(method)
        exchanges = self.broker.exchanges
        if passive:
            if name not in exchanges:
                raise no_exchange(name, method)
            return
        if type_ not in EXCHANGE_TYPES:
            raise error("COMMAND_INVALID", f"unknown exchange type '{type_}'", method)
        existing = exchanges.get(name)
        if existing is None:
            if name.startswith("amq."):
                raise error(
                    "ACCESS_REFUSED",
                    f"exchange name '{name}' contains reserved prefix 'amq.*'",
                    method,
                )
            exchanges[name] = Exchange(name, type_, durable, auto_delete, internal, arguments)
            return
        problem = existing.equivalence_problem(type_, durable, auto_delete, internal, arguments)
        if problem:
            raise error("PRECONDITION_FAILED", problem, method)

    def exchange_delete(self, name: str, if_unused: bool) -> None:
        """The broker side of Exchange.Delete (the default and amq.* exchanges are refused)."""
        method = EXCHANGE_DELETE
        if not name:
            raise default_exchange_refused(method)
        if name.startswith("amq."):
            raise error(
                "ACCESS_REFUSED", f"deletion of system {rs('exchange', name)} not allowed",
                method,
            )  # fmt: skip
        existing = self.broker.exchanges.get(name)
        if existing is None:
            return
        if if_unused and existing.bindings:
            raise error("PRECONDITION_FAILED", f"{rs('exchange', name)} in use", method)
        self.broker.delete_exchange(existing)

    def exchange_bind(
        self, destination: str, source: str, routing_key: str, args: dict[str, Any], bind: bool
    ) -> None:
        """Exchange.Bind, or Exchange.Unbind when `bind` is False."""
        method = EXCHANGE_BIND if bind else EXCHANGE_UNBIND
        if not source or not destination:
            raise default_exchange_refused(method)
        exchanges = self.broker.exchanges
        src, dst = exchanges.get(source), exchanges.get(destination)
        if bind:
            if src is None:
                raise no_exchange(source, method)
            if dst is None:
                raise no_exchange(destination, method)
            check_binding(src, args, method)
            src.bind(dst, routing_key, args)
        elif src is not None and dst is not None and src.unbind(dst, routing_key, args):
            self.broker.maybe_auto_delete(src)

    # ------------------------------------------------------------------ queues

    def queue_declare(
        self,
        name: str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
    ) -> QueueDeclareOk:
        """The broker side of Queue.Declare, as RabbitMQ checks it (406 on a mismatch)."""
        method = QUEUE_DECLARE
        broker = self.broker
        if name == REPLY_TO:
            return QueueDeclareOk(name, 0, 1)  # RabbitMQ's answer for the pseudo queue
        if passive:
            queue = self.queue(name, method)
        else:
            if not name:
                name = server_name()
            elif name.startswith("amq."):
                raise error(
                    "ACCESS_REFUSED",
                    f"queue name '{name}' contains reserved prefix 'amq.*'",
                    method,
                )
            durable = durable and not exclusive  # RabbitMQ never keeps exclusive queues
            owner = self.connection if exclusive else None
            existing = broker.queues.get(name)
            if existing is None:
                # RabbitMQ 4.3's order: invalid arguments (406) before the kind of queue.
                args_rules.validate_queue_args(name, arguments, exclusive, durable, auto_delete)
                if not durable and not exclusive:
                    raise transient_nonexclusive(name)
                queue = Queue(
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
                    raise locked(name, method)
                self._check_equivalent(queue, durable, auto_delete, arguments)
        queue.touch()
        self.last_queue = name
        return queue.declare_ok()

    @staticmethod
    def _check_equivalent(
        queue: Queue, durable: bool, auto_delete: bool, arguments: dict[str, Any]
    ) -> None:
        name = queue.name
        problem = None
        for key, have, want in (
            ("durable", queue.durable, durable),
            ("auto_delete", queue.auto_delete, auto_delete),
        ):
            if have != want:
                problem = args_rules.inequivalent("queue", name, key, want, have)
                break
        problem = problem or args_rules.queue_args_difference(name, queue.arguments, arguments)
        if problem:
            raise error("PRECONDITION_FAILED", problem, QUEUE_DECLARE)

    def queue(self, name: str, method: tuple[int, int]) -> Queue:
        """An existing queue this connection may use (RabbitMQ's lax exclusivity check).

        Raises:
            BrokerError: 404 when there is none, 405 when another connection owns it.
        """
        queue = self.broker.queues.get(name)
        if queue is None:
            raise no_queue(name, method)
        if queue.owner is not None and queue.owner is not self.connection:
            raise locked(name, method)
        return queue

    def shortcut(self, name: str, method: tuple[int, int]) -> str:
        """An empty queue name means the channel's most recently declared queue.

        Raises:
            BrokerError: 404 when the channel declared none.
        """
        if name:
            return name
        if not self.last_queue:
            raise error("NOT_FOUND", "no previously declared queue", method)
        return self.last_queue

    def queue_bind(
        self, name: str, exchange: str, routing_key: str, args: dict[str, Any], bind: bool
    ) -> None:
        """Queue.Bind, or Queue.Unbind when `bind` is False."""
        method = QUEUE_BIND if bind else QUEUE_UNBIND
        if not name and not routing_key:
            routing_key = self.shortcut(name, method)
        name = self.shortcut(name, method)
        if not exchange:
            raise default_exchange_refused(method)
        broker = self.broker
        source = broker.exchanges.get(exchange)
        if bind:
            if source is None:
                raise no_exchange(exchange, method)
            queue = self.queue(name, method)
            check_binding(source, args, method)
            source.bind(queue, routing_key, args)
            return
        unbound = broker.queues.get(name)
        if source is not None and unbound is not None and source.unbind(unbound, routing_key, args):
            broker.maybe_auto_delete(source)

    def queue_purge(self, name: str) -> int:
        """The broker side of Queue.Purge: the number of messages purged."""
        method = QUEUE_PURGE
        return self.queue(self.shortcut(name, method), method).purge()

    def queue_delete(self, name: str, if_unused: bool, if_empty: bool) -> int:
        """The broker side of Queue.Delete: the number of messages deleted with it."""
        method = QUEUE_DELETE
        name = self.shortcut(name, method)
        if name not in self.broker.queues:
            return 0  # deleting what is not there is fine, as in RabbitMQ
        queue = self.queue(name, method)
        if if_unused and queue.subs:
            raise error("PRECONDITION_FAILED", f"{rs('queue', name)} in use", method)
        if if_empty and queue.ready:
            raise error("PRECONDITION_FAILED", f"{rs('queue', name)} not empty", method)
        return self.broker.delete_queue(queue)


class TopologyMethods:
    """The client's topology API of `MemoryChannel` (a mixin): names and arguments are
    checked as the real client checks them before sending, then the broker side
    (`ChannelTopology`) runs through the channel's `_call`, which waits until the channel
    is open and closes it when the broker refuses.
    """

    if TYPE_CHECKING:  # what the mixin uses of MemoryChannel
        _topology: ChannelTopology
        _qos: tuple[int, int] | None

        async def _call(self, method: Callable[..., Any], *args: Any) -> Any: ...

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
        """As `ChannelProtocol.exchange_declare`."""
        check_name("exchange", exchange)
        await self._call(
            self._topology.exchange_declare,
            exchange,
            exchange_type,
            passive,
            durable,
            auto_delete,
            internal,
            dict(arguments or {}),
        )

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        """As `ChannelProtocol.exchange_delete`."""
        check_name("exchange", exchange)
        await self._call(self._topology.exchange_delete, exchange, if_unused)

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """As `ChannelProtocol.exchange_bind`."""
        await self._exchange_bind(destination, source, routing_key, arguments, True)

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """As `ChannelProtocol.exchange_unbind`."""
        await self._exchange_bind(destination, source, routing_key, arguments, False)

    async def _exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str,
        arguments: dict[str, Any] | None,
        bind: bool,
    ) -> None:
        check_name("destination", destination)
        check_name("source", source)
        check_arguments(arguments)
        await self._call(
            self._topology.exchange_bind,
            destination,
            source,
            routing_key,
            dict(arguments or {}),
            bind,
        )

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
        """As `ChannelProtocol.queue_declare`."""
        check_name("queue", queue)
        ok: QueueDeclareOk = await self._call(
            self._topology.queue_declare,
            queue,
            passive,
            durable,
            exclusive,
            auto_delete,
            dict(arguments or {}),
        )
        return ok

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """As `ChannelProtocol.queue_bind`."""
        await self._queue_bind(queue, exchange, routing_key, arguments, True)

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """As `ChannelProtocol.queue_unbind`."""
        await self._queue_bind(queue, exchange, routing_key, arguments, False)

    async def _queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: dict[str, Any] | None,
        bind: bool,
    ) -> None:
        check_name("queue", queue)
        check_name("exchange", exchange)
        check_arguments(arguments)
        await self._call(
            self._topology.queue_bind, queue, exchange, routing_key, dict(arguments or {}), bind
        )

    async def queue_purge(self, queue: str) -> int:
        """As `ChannelProtocol.queue_purge`."""
        check_name("queue", queue)
        purged: int = await self._call(self._topology.queue_purge, queue)
        return purged

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """As `ChannelProtocol.queue_delete`."""
        check_name("queue", queue)
        deleted: int = await self._call(self._topology.queue_delete, queue, if_unused, if_empty)
        return deleted

    async def basic_qos(self, prefetch_count: int, prefetch_size: int = 0) -> None:
        """Per-consumer prefetch: applies to consumers started after this call."""
        await self._call(self._basic_qos, prefetch_count, prefetch_size)

    def _basic_qos(self, prefetch_count: int, prefetch_size: int) -> None:
        if prefetch_size:
            raise error("NOT_IMPLEMENTED", f"prefetch_size!=0 ({prefetch_size})", BASIC_QOS)
        self._qos = (prefetch_count, prefetch_size)
