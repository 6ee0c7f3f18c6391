"""Declaring and binding from a channel: exchanges and queues, recorded for replay.

Each successful declare or bind is recorded in the connection's `topology.Topology` (and each
delete or unbind forgets it), so that a recovery redeclares what the application built, in
the order it was built (`client_recovery`). A passive declare only checks and records nothing.

`ChannelTopology` is a part of `channel.Channel` (a mixin): it sends each method with the
channel's `_rpc`, which waits for the channel to be open (through a reconnect) first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pamqp import commands

from .engine import QueueDeclareOk
from .topology import BindingRecord, ExchangeRecord, QueueRecord

if TYPE_CHECKING:
    from .client import Connection

__all__ = ["ChannelTopology"]


class ChannelTopology:
    """exchange_* and queue_* methods of a channel."""

    connection: Connection

    if TYPE_CHECKING:  # the channel's own method (channel.Channel)

        async def _rpc(self, method: Any) -> Any: ...

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
        await self._rpc(
            commands.Exchange.Declare(
                exchange=exchange,
                exchange_type=exchange_type,
                passive=passive,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=arguments or {},
            )
        )
        if not passive:
            self.connection.topology.add_exchange(
                ExchangeRecord(exchange, exchange_type, durable, auto_delete, internal, arguments)
            )

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        await self._rpc(commands.Exchange.Delete(exchange=exchange, if_unused=if_unused))
        self.connection.topology.remove_exchange(exchange)

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Exchange.Bind(
                destination=destination,
                source=source,
                routing_key=routing_key,
                arguments=arguments or {},
            )
        )
        self.connection.topology.add_binding(
            BindingRecord("exchange", destination, source, routing_key, arguments)
        )

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Exchange.Unbind(
                destination=destination,
                source=source,
                routing_key=routing_key,
                arguments=arguments or {},
            )
        )
        self.connection.topology.remove_binding(
            BindingRecord("exchange", destination, source, routing_key, arguments)
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
        reply = await self._rpc(
            commands.Queue.Declare(
                queue=queue,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments or {},
            )
        )
        if not passive:
            self.connection.topology.add_queue(
                QueueRecord(
                    reply.queue, durable, exclusive, auto_delete, arguments, server_named=not queue
                )
            )
        return QueueDeclareOk(reply.queue, reply.message_count, reply.consumer_count)

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Queue.Bind(
                queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments or {}
            )
        )
        self.connection.topology.add_binding(
            BindingRecord("queue", queue, exchange, routing_key, arguments)
        )

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._rpc(
            commands.Queue.Unbind(
                queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments or {}
            )
        )
        self.connection.topology.remove_binding(
            BindingRecord("queue", queue, exchange, routing_key, arguments)
        )

    async def queue_purge(self, queue: str) -> int:
        reply = await self._rpc(commands.Queue.Purge(queue=queue))
        purged: int = reply.message_count
        return purged

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        reply = await self._rpc(
            commands.Queue.Delete(queue=queue, if_unused=if_unused, if_empty=if_empty)
        )
        self.connection.topology.remove_queue(queue)
        deleted: int = reply.message_count
        return deleted
