"""memory:// - an in-process broker with RabbitMQ's semantics, behind the client's own API.

`MemoryConnection` and `MemoryChannel` have the methods, signatures and return types of
`client.Connection` and `channel.Channel` (the engine contract, engine.py), so the runtime
does not care which one it holds. Behaviour follows RabbitMQ (checked against 3.10 and 4.3
with the real client; where they differ, 4.x). Pure asyncio, the standard library and
pamqp's argument encoder: no sockets, no threads.

The modules, from the client's side inwards:

- connection.py: `MemoryConnection`; channel.py: `MemoryChannel`, with unacked.py (its
  unsettled deliveries), confirms.py (its publisher confirms) and topology.py (the
  broker side of its declare/bind/delete methods);
- broker.py: `MemoryBroker`, the named registry of brokers, routing, dead-lettering and
  the per-tick dispatch; queue.py: queues (TTL, overflow, x-expires) and their
  consumers; exchange.py: exchanges and binding matching; replyto.py: direct reply-to;
- the rules, with no event loop: errors.py (RabbitMQ's error replies), arguments.py
  (declare arguments), deaths.py (x-death), publish.py (what a publish's properties
  may say: expiration, CC/BCC, user_id), headers.py (the headers exchange),
  priority.py (priority queues), fields.py (encoded field tables as RabbitMQ reads
  them), content.py (a message inside the broker).
"""

from .broker import MemoryBroker
from .channel import MemoryChannel
from .connection import MemoryConnection

__all__ = ["MemoryBroker", "MemoryChannel", "MemoryConnection"]
