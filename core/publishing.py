"""Publishing: the publish surface Agent and Behaviour share, and the agent's emit path.

`PublishSurface` holds the one implementation of `publish`, `send` and `broadcast`; both
`Agent` and `Behaviour` mix it in. Each names the agent that publishes (`_publisher`) and
the behaviour label its publishes are counted under in metrics (`_publish_label`: "" for
the agent itself, the behaviour's short name for a behaviour).

`Publisher` is the agent's role behind it: encoding a body and its properties (cached per
second for messages without headers), the confirmed publish on the agent's publish channel
(`emit_message`), waiting for confirms (`flush`) and reporting publishes the broker will never
confirm. With batching on (`AgentConfig.batching`, `Behaviour.batching`), `publish` hands
the messages it batches to the surface's lane (core/batching.py) instead of `emit_message`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import envelope, tracing
from ._speedups import Properties, encode_properties
from .agent_base import AgentBase
from .batching import Batching, BatchLane
from .delays import delay_ms
from .engine import ChannelProtocol
from .envelope import KIND_MESSAGE, encode_body
from .tracing import TRACEPARENT, outgoing_headers
from .wire import DELAY_EXCHANGE, DELAY_HEADER, FANOUT_EXCHANGE, TOPIC_EXCHANGE

log = logging.getLogger("munggoggo.agent")

_monotonic = time.monotonic


class PublishSurface:
    """`publish`, `send` and `broadcast` for agents and behaviours.

    The class mixing it in sets `_publisher` (the agent whose `emit_message` publishes),
    `_publish_label` (the behaviour label of the `published` metric) and `_batch_lane`
    (where its batched publishes go, None: none are; `Publisher.batch_lane`) at
    construction.
    """

    # Slots, not instance-dict entries: a behaviour keeps the attribute count of its
    # __dict__ (CPython's fast shared-key instance layout holds at most 30 attributes,
    # and a user's Behaviour subclass adds its own on top of ours).
    __slots__ = ("_batch_lane", "_publish_label", "_publisher")
    _publisher: AgentBase
    _publish_label: str
    _batch_lane: BatchLane | None

    async def publish(
        self,
        body: Any,
        routing_key: str,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str | None = None,
        delay: float | None = None,
    ) -> int:
        """Publish to `munggoggo.topic` (pub/sub), confirmed by the broker.

        Args:
            body: bytes, str, or any msgspec-encodable value (sent as JSON).
            routing_key: the topic.
            headers: AMQP headers to send with it.
            content_type: overrides the content type chosen for the body.
            delay: seconds the message waits in the broker before it is routed to the
                topic's subscribers (None or 0: at once; core/delays.py).

        With batching on (`AgentConfig.batching`, `Behaviour.batching`) and a routing key
        its topics match, the message joins a batch to that routing key instead of being
        published now (no delay: a delayed publish goes alone); the batch is published,
        confirmed, within its `linger` (docs/performance.md, "Micro-batching"). Its headers
        are checked as a plain publish checks them, and raise the same errors; headers AMQP
        carries but a batch item cannot (a name that is no str) make it go alone.

        Returns:
            The publish's sequence number (what `Agent.on_publish_failure` reports). A
            batched message has a number of its own, from 2**48 on, +1 per batched message
            of the agent: it names the logical message, not the AMQP message carrying it.

        Raises:
            ValueError: a negative or too long delay.
            TypeError: a delay that is not a number.
            ValueError: headers or a content type AMQP cannot carry.
            PropertiesTooLarge: properties over one content header frame (`frame_max`).
            AMQPError: the connection closed for good (ConnectionLost).
        """
        lane = self._batch_lane
        if lane is not None and not delay and lane.takes(routing_key):
            seq = lane.add(body, routing_key, headers, content_type, self._publish_label)
            if lane.must_drain:  # a batch went out: let it be written, respect backpressure
                await lane.drain()
            if seq is not None:
                return seq
        publisher = self._publisher
        if delay:
            return await publisher.emit_message(
                body, TOPIC_EXCHANGE, routing_key, headers, content_type, self._publish_label, delay
            )
        # Most publishes: queued here, without a second coroutine (`emit_message`'s).
        seq, writable = publisher.publish_now(
            body, TOPIC_EXCHANGE, routing_key, headers, content_type, self._publish_label
        )
        if not writable:
            await publisher.publish_channel.drain()
        return seq

    async def send(
        self,
        target: str,
        body: Any,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str | None = None,
        delay: float | None = None,
    ) -> int:
        """Send a direct message to agent `target`'s inbox, confirmed by the broker. An
        unknown target is returned by the broker and logged (not when delayed: the target
        is only looked up when the delay is over, and a message for none is dropped).

        Args:
            target: the receiving agent's identity.
            body: bytes, str, or any msgspec-encodable value (sent as JSON).
            headers: AMQP headers to send with it.
            content_type: overrides the content type chosen for the body.
            delay: seconds the message waits in the broker before it reaches the inbox
                (None or 0: at once; core/delays.py).

        Returns:
            The publish's sequence number.

        Raises:
            ValueError: a negative or too long delay.
            TypeError: a delay that is not a number.
        """
        publisher = self._publisher
        if delay:
            return await publisher.emit_message(
                body, "", target, headers, content_type, self._publish_label, delay
            )
        seq, writable = publisher.publish_now(
            body, "", target, headers, content_type, self._publish_label
        )
        if not writable:
            await publisher.publish_channel.drain()
        return seq

    async def broadcast(
        self, body: Any, *, headers: dict[str, Any] | None = None, content_type: str | None = None
    ) -> int:
        """Send to every agent's inbox through `munggoggo.fanout`, confirmed by the broker.

        Args:
            body: bytes, str, or any msgspec-encodable value (sent as JSON).
            headers: AMQP headers to send with it.
            content_type: overrides the content type chosen for the body.

        Returns:
            The publish's sequence number.
        """
        return await self._publisher.emit_message(
            body, FANOUT_EXCHANGE, "", headers, content_type, self._publish_label
        )


class Publisher(AgentBase):
    """The agent's publishing role: encoding, the confirmed publish, confirms."""

    def _properties(self, content_type: str) -> bytes:
        """Encoded properties of our own messages without headers, cached until the wall
        clock's next second (their timestamp): `_props_until` is that moment on the
        monotonic clock, so a publish reads one clock and no wall time.
        """
        now = time.time()
        second = int(now)
        if second != self._props_second:
            self._props_second = second
            self._props_cache.clear()
            # The monotonic clock does not follow the wall clock: after a suspend (it
            # stands still meanwhile) or a step of the wall clock, messages published in
            # the rest of this monotonic second carry the old second's timestamp, off by
            # the jump for at most 1 s. Checking the wall clock instead would cost a
            # second comparison per publish; an AMQP timestamp is informational.
            self._props_until = _monotonic() + (second + 1 - now)
        props = self._props_cache.get(content_type)
        if props is None:
            props = self._props_cache[content_type] = encode_properties(
                Properties(
                    content_type=content_type,
                    type=envelope.KIND_MESSAGE,
                    app_id=self.identity,
                    timestamp=second,
                    delivery_mode=self._delivery_mode,
                )
            )
        return props

    def _encode(
        self, body: Any, content_type: str | None, headers: dict[str, Any] | None
    ) -> tuple[bytes, bytes]:
        data, ctype = envelope.encode_body(body, content_type)
        if TRACEPARENT.get() is not None or tracing.hooks is not None:
            headers = outgoing_headers(headers, envelope.KIND_MESSAGE)
        if headers:
            props = encode_properties(
                Properties(
                    content_type=ctype,
                    type=envelope.KIND_MESSAGE,
                    app_id=self.identity,
                    timestamp=int(time.time()),
                    headers=headers,
                    delivery_mode=self._delivery_mode,
                )
            )
        else:
            props = self._properties(ctype)
        return data, props

    async def emit_message(
        self,
        body: Any,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any] | None,
        content_type: str | None,
        origin: str = "",
        delay: float | None = None,
    ) -> int:
        """Publish one message (confirmed): what `publish`, `send` and `broadcast` do.

        Direct messages (the default exchange "") are mandatory: an unknown target comes
        back as a return. A delayed message goes to `munggoggo.delay` with the header that
        names its delay queue (declared first, once per connection; core/delays.py).

        Args:
            body: bytes, str, or any msgspec-encodable value.
            exchange: the exchange ("" for an agent's inbox).
            routing_key: the topic, or the target's identity.
            headers: AMQP headers, or None.
            content_type: overrides the content type chosen for the body, or None.
            origin: the publishing behaviour's short name ("" for the agent): the
                behaviour label of the `published` metric.
            delay: seconds it waits in the broker first (None or 0: none).

        Returns:
            The publish's sequence number.

        Raises:
            AMQPError: the connection is down and the publish cannot be queued.
            ValueError: a negative or too long delay.
            TypeError: a delay that is not a number.
        """
        route, mandatory = exchange, not exchange
        if delay and (ms := delay_ms(delay)):
            queue = await self._delays.ensure(ms, exchange)
            headers = {**headers, DELAY_HEADER: queue} if headers else {DELAY_HEADER: queue}
            # Mandatory: a delay queue deleted under us comes back as a return, not lost.
            route, mandatory = DELAY_EXCHANGE, True
        seq, writable = self.publish_now(
            body, exchange, routing_key, headers, content_type, origin, route, mandatory
        )
        if not writable:
            await self._pub.drain()
        return seq

    def publish_now(
        self,
        body: Any,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any] | None,
        content_type: str | None,
        origin: str = "",
        route: str | None = None,
        mandatory: bool | None = None,
    ) -> tuple[int, bool]:
        """Queue one confirmed publish for this tick's write, without waiting: what
        `emit_message` does before it respects flow control.

        Args:
            body: bytes, str, or any msgspec-encodable value.
            exchange: the exchange ("" for an agent's inbox): the trace's peer.
            routing_key: the topic, or the target's identity.
            headers: AMQP headers, or None.
            content_type: overrides the content type chosen for the body, or None.
            origin: the publishing behaviour's short name ("" for the agent): the
                behaviour label of the `published` metric.
            route: the exchange it is published to (None: `exchange`).
            mandatory: whether an unroutable message comes back as a return (None: for
                direct messages, exchange "").

        Returns:
            The publish's sequence number, and whether publishing may go on without
            waiting (False: `await publish_channel.drain()` before the caller returns,
            as `emit_message` does, to respect flow control and the unconfirmed window).

        Raises:
            AMQPError: the connection is down and the publish cannot be queued.
            ValueError: headers or a content type AMQP cannot carry.
            PropertiesTooLarge: properties over one content header frame (`frame_max`).
        """
        if route is None:
            route = exchange
        if mandatory is None:
            mandatory = not exchange
        if (
            headers is None
            and content_type is None
            and TRACEPARENT.get() is None
            and tracing.hooks is None
        ):
            # The plain message (most of them): cached properties, while their second lasts.
            data, ctype = encode_body(body)
            props = self._props_cache.get(ctype) if _monotonic() < self._props_until else None
            if props is None:
                props = self._properties(ctype)
        else:
            data, props = self._encode(body, content_type, headers)
        ch = self._pub
        seq = ch.publish(data, route, routing_key, props, mandatory=mandatory)
        published = self.stats.published
        key = (origin, KIND_MESSAGE)
        published[key] = published.get(key, 0) + 1
        if self.records_traces:
            self.trace.record_out(
                KIND_MESSAGE, exchange or routing_key, routing_key, len(data), None
            )
        return seq, ch.writable

    async def flush(self, timeout: float | None = None) -> None:
        """Send the batches being filled (`AgentConfig.batching`) at once, then wait until
        the broker confirmed everything this agent published.

        Args:
            timeout: seconds to wait (None: no limit).

        Raises:
            TimeoutError: not everything was confirmed in time.
            PublishError: the broker refused a publish, or the connection was lost (it
                names channel sequence numbers: `on_publish_failure` names the batched
                messages).
        """
        if self._pub is not None:  # nothing published before it connected
            self._batcher.send_all()
            await self._pub.wait_confirms(timeout=timeout)
            self._batcher.prune_all_confirmed()

    def batch_lane(self, setting: Batching | bool | None) -> BatchLane | None:
        """Where a publisher's batched publishes go, for its `batching` setting.

        Args:
            setting: None: the agent's own (`AgentConfig.batching`); False: none (every
                publish goes alone); True: `Batching()`; a `Batching`: its own (publishers
                of equal settings share batches).

        Returns:
            The lane, or None when its publishes are not batched.

        Raises:
            ValueError: a setting of another type.
        """
        if setting is None:
            return self._batch_lane
        if setting is False:
            return None
        if setting is True:
            setting = Batching()
        if not isinstance(setting, Batching):
            raise ValueError(f"batching must be a Batching, True, False or None, got {setting!r}")
        return self._batcher.lane(setting)

    @property
    def publish_channel(self) -> ChannelProtocol:
        """The channel confirmed publishes go out on (None before the agent connected):
        its `unconfirmed` count and `confirm_seconds` are what status and metrics show.
        """
        return self._pub

    def _on_publish_failure(self, failures: list[tuple[int, Exception]]) -> None:
        # A failed batch is reported as the failure of each message it carried.
        failures = self._batcher.logical(failures)
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
