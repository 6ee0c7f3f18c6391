"""The agent's consumers: its inbox, its behaviours' queues, the prefetch budget, and
consuming again after the broker cancelled one.

The inbox `<identity>` is consumed exclusively on the agent's `_sub` channel (the exclusive
consumer is the identity lock). Each behaviour with binding keys gets its own channel and
queue (`<identity>.<short name>`, or the shared `queue=` it names), bound to
`munggoggo.topic`, with a per-consumer qos: its share of the agent's prefetch budget.
Deliveries arrive in batches and go to the behaviour's mailbox (`Behaviour.deliver_batch`);
an AMQP message that is itself a batch of messages (core/batch_format.py) goes there as one
message per item (core/batch_consume.py).

When the broker cancels a consumer (its queue deleted, or not restorable after a
reconnect), the agent consumes again through a `ConsumerRestorer` (core/consumer_restore.py)
until it works; the inbox restore also tells our own stale consumer from another agent that
took our identity.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from .agent_base import RUNNING, AgentBase
from .batch_format import BATCH_CONTENT_TYPE
from .durable import declare_behaviour_queue, declare_inbox
from .message import Message
from .undecodable import reject_undecodable
from .wire import FANOUT_EXCHANGE, TOPIC_EXCHANGE

if TYPE_CHECKING:
    from .behaviour import Behaviour

log = logging.getLogger("munggoggo.agent")


class Consumers(AgentBase):
    """The agent's consuming role: inbox and behaviour consumers, restored when cancelled."""

    # -- the inbox -----------------------------------------------------------------

    async def _consume_inbox(self) -> None:
        tag = await self._sub.consume(
            self.identity, self._on_inbox, exclusive=True, on_cancel=self._on_inbox_cancelled
        )
        self._consumers[""] = (self._sub, tag)

    def _on_inbox_cancelled(self, tag: str) -> None:
        """The broker cancelled the inbox consumer (the inbox was deleted), or could not
        restore it after a reconnect (the broker still held the old connection's
        exclusive consumer): consume again until it works, so the agent never goes deaf.
        """
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

    # -- behaviour queues ------------------------------------------------------------

    async def _consume_behaviour(self, behaviour: Behaviour[Any]) -> None:
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

    def _prefetch_share(self, behaviour: Behaviour[Any]) -> int:
        """This behaviour's part of the agent's prefetch budget (never above its own
        prefetch, never below 16). Consumers keep the share they started with.
        """
        # add_behaviour adds a behaviour once it started: count those it is starting too.
        starting = list(self._adding.values())
        consuming = sum(1 for b in [*self.behaviours.values(), *starting] if b.binding_keys)
        share = max(16, self.config.prefetch_budget // max(1, consuming))
        return min(behaviour.prefetch, share)

    def _behaviour_consumer(self, behaviour: Behaviour[Any], queue: str, sub: Any) -> Any:
        """The delivery callback of a behaviour's consumer: counts a batch, hands it to
        the behaviour's mailbox.
        """
        consumed = self.stats.consumed
        redelivered = self.stats.redelivered
        label = behaviour.short_name
        key = (label, "message")

        rejected = functools.partial(self.stats.count, self.stats.dead_lettered, label)
        batch_type = BATCH_CONTENT_TYPE
        unbatch = functools.partial(self._unbatch, sub, queue, label)

        def on_batch(batch: list[Any]) -> None:
            # One pass over the batch for the usual case: every delivery is a plain message
            # with decodable properties. Anything else takes the careful path below.
            again = 0
            for d in batch:
                if d.properties_error is not None or d.properties.content_type == batch_type:
                    break
                if d.redelivered:
                    again += 1
            else:
                if batch:
                    delivered(Message.batch(batch, sub, queue), again)
                return
            batch = reject_undecodable(batch, sub, queue, rejected)
            if not batch:
                return
            for d in batch:
                if d.properties.content_type == batch_type:  # items, one message each
                    messages = unbatch(batch)
                    break
            else:
                messages = Message.batch(batch, sub, queue)
            again = 0
            for d in batch:
                if d.redelivered:
                    again += 1
            delivered(messages, again)

        def delivered(messages: list[Message], again: int) -> None:
            consumed[key] = consumed.get(key, 0) + len(messages)
            if again:
                redelivered[label] = redelivered.get(label, 0) + again
            try:
                behaviour.deliver_batch(messages)
            except Exception as exc:  # a bug: still, each message is settled, none is lost
                for msg in messages:
                    self.reject_failed(msg, exc, label)

        return on_batch

    def _on_behaviour_cancelled(self, behaviour: Behaviour[Any], tag: str) -> None:
        """The broker cancelled a behaviour's consumer (its queue was deleted): declare,
        bind and consume again until it works.
        """
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

    async def _consume_behaviour_again(self, behaviour: Behaviour[Any]) -> bool:
        if self.state != RUNNING or not behaviour.is_running:
            return True
        await self._consume_behaviour(behaviour)
        log.info("agent %s: behaviour %s consumes again", self.identity, behaviour.short_name)
        return True

    async def release_consumer(self, behaviour: Behaviour[Any]) -> None:
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

    # -- what others read --------------------------------------------------------------

    @property
    def restoring_consumers(self) -> frozenset[str]:
        """Consumers the broker cancelled that are not consuming again yet: behaviour short
        names, "" for the inbox. The agent is not ready while any is.
        """
        return self._restorer.restoring

    def consumers(self) -> dict[str, tuple[Any, str]]:
        """The active consumers: behaviour short name ("" for the inbox) -> (channel,
        consumer tag). A copy: changing it changes nothing.

        Returns:
            The consumers, by behaviour short name.
        """
        return dict(self._consumers)

    def settling_channels(self) -> list[tuple[str, Any]]:
        """Every consuming channel, whose acked/nacked counts the metrics export.

        Returns:
            (behaviour short name, or "" for the inbox, channel) pairs.
        """
        pairs = [("", self._sub)] if self._sub is not None else []
        pairs.extend(self._behaviour_channels.items())
        return pairs
