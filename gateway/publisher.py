"""The gateway's publishing: waits that end, and a bounded buffer for the broker.

Every message the gateway publishes (REST `POST /topics/...`, WebSocket `publish`) goes
through its worker's `Publisher`, on a confirm channel of the worker's own connection:

* while the broker connection is down, a publish is refused at once (`PublishRefused`:
  503 + Retry-After, or an error frame). The gateway takes no new message for a broker
  that is not there, so nothing piles up in it during an outage;
* otherwise a publish waits for room at most `timeout` seconds, then is refused: room in
  the connection (socket writable, broker not blocking us) and in the buffer of published
  messages the broker has not confirmed yet, at most `max_messages` of them and
  `max_bytes` of their bodies and properties (one message larger than that still goes
  when the buffer is empty). The channel keeps exactly those messages, to publish them
  again after a reconnect: they are all the gateway holds for the broker while it is
  away, and `on_change` reports them (the gateway's metrics).

The broker confirms in order, so the buffer is the newest `channel.unconfirmed` of the
messages published here (nothing else publishes on this channel).

Most publishes go on `munggoggo.topic` (or `munggoggo.fanout`, a broadcast) and are done once
the broker has them in its buffer. A direct message (`send_direct`) is published
`mandatory` to its target's inbox and waits for the broker's verdict: the broker returns a
message no queue takes (Basic.Return) before it confirms it, so once the confirm is in, a
return carrying the message's `message_id` says the target has no inbox (`Unroutable`).

`PublishQueue` is one WebSocket client's publishes: in order, each waiting behind the
earlier ones without holding the client's other frames.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from munggoggo import envelope
from munggoggo._speedups import Delivery, Properties, encode_properties
from munggoggo.amqp.errors import AMQPError
from munggoggo.durable import PERSISTENT
from munggoggo.engine import ChannelProtocol, PublishError
from munggoggo.tracing import outgoing_headers
from munggoggo.wire import TOPIC_EXCHANGE

log = logging.getLogger("munggoggo.gateway.publisher")


class PublishRefused(Exception):
    """The broker cannot take the message now: its connection is down, or no room came
    within the publish timeout. Nothing of the message was kept: the client may retry."""


class Unroutable(Exception):
    """The broker returned a direct message: no queue has its target's name."""


class VerdictTimeout(Exception):
    """The broker did not confirm a direct message in time. It holds it (and the channel
    publishes it again after a reconnect): it may still arrive, or come back unroutable."""


class Publisher:
    """Publishes on `munggoggo.topic` for one gateway worker, bounded in time and memory.

    Args:
        channel: a confirm channel of the worker's connection, used by nothing else; its
            `max_unconfirmed` should be `max_messages`.
        app_id: the sender the messages name (the worker's client agent).
        timeout: seconds a publish may wait for room.
        max_messages: published messages awaiting the broker's confirm, at most.
        max_bytes: bytes of them (bodies and properties), at most.
        persistent: mark messages persistent (the agent's durable mode).
    """

    def __init__(
        self,
        channel: ChannelProtocol,
        app_id: str,
        *,
        timeout: float,
        max_messages: int,
        max_bytes: int,
        persistent: bool = False,
    ) -> None:
        self.channel = channel
        self.app_id = app_id
        self.timeout = timeout
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # Called with (messages, bytes) whenever the buffer changed.
        self.on_change: Callable[[int, int], None] | None = None
        self._delivery_mode = PERSISTENT if persistent else None
        self._held: deque[tuple[int, int]] = deque()  # (seq, size) not confirmed, oldest first
        self._held_bytes = 0
        self._watcher: asyncio.Task[None] | None = None
        # message_id -> why the broker returned it (None: not returned, so far), for the
        # direct messages awaiting the broker's verdict.
        self._verdicts: dict[str, str | None] = {}
        self._message_ids = itertools.count(1)
        channel.on_publish_failure = self._on_failure
        channel.on_return = self._on_return

    # -- state ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self.channel.connection.is_open)

    @property
    def buffered(self) -> int:
        """Messages published here that the broker has not confirmed yet."""
        self._settle()
        return len(self._held)

    @property
    def buffered_bytes(self) -> int:
        """Their bytes (bodies and properties)."""
        self._settle()
        return self._held_bytes

    # -- publishing -----------------------------------------------------------------

    def encode(
        self, body: Any, headers: dict[str, Any] | None = None, message_id: str | None = None
    ) -> tuple[bytes, bytes]:
        """The message as it travels: its body and its encoded properties (the sender,
        the content type, a child of the current trace in the headers).

        Args:
            body: the message (bytes, str: text/plain, anything else: JSON).
            headers: AMQP headers to send with it.
            message_id: its `message_id` property (`new_message_id()`), or None.

        Returns:
            The body and the encoded properties.

        Raises:
            ValueError: the body or the headers cannot be encoded.
        """
        data, content_type = envelope.encode_body(body)
        headers = outgoing_headers(headers, envelope.KIND_MESSAGE)
        try:
            props = encode_properties(
                Properties(
                    content_type=content_type,
                    type=envelope.KIND_MESSAGE,
                    app_id=self.app_id,
                    timestamp=int(time.time()),
                    headers=headers or None,
                    delivery_mode=self._delivery_mode,
                    message_id=message_id,
                )
            )
        except TypeError as exc:
            raise ValueError(f"headers cannot be encoded: {exc}") from None
        return data, props

    def publish_now(self, routing_key: str, data: bytes, props: bytes) -> bool:
        """Publish if the broker can take the message without waiting.

        Returns:
            False (nothing sent) when it would have to wait for room.

        Raises:
            PublishRefused: the broker connection is down.
            ValueError: the properties do not fit a frame (PropertiesTooLarge): nothing sent.
        """
        size = len(data) + len(props)
        if not self._has_room(size):
            return False
        self._send(routing_key, data, props, size)
        return True

    async def publish(
        self,
        routing_key: str,
        data: bytes,
        props: bytes,
        *,
        deadline: float | None = None,
        exchange: str = TOPIC_EXCHANGE,
        mandatory: bool = False,
    ) -> int:
        """Publish, waiting for room until `deadline` (loop time; default: `timeout`
        seconds from now).

        Args:
            routing_key: the topic, or the target queue on the default exchange.
            data: the body.
            props: the encoded properties (`encode`).
            deadline: when to give up waiting for room (loop time).
            exchange: where to publish (default `munggoggo.topic`).
            mandatory: have the broker return it when no queue takes it.

        Returns:
            The publish's confirm sequence number.

        Raises:
            PublishRefused: the connection is down (at once), or no room came in time.
            ValueError: the properties do not fit a frame (PropertiesTooLarge): nothing sent.
        """
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout
        size = len(data) + len(props)
        while not self._has_room(size):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PublishRefused(self._refusal())
            await self._wait_for_room(size, remaining)
        return self._send(routing_key, data, props, size, exchange, mandatory)

    def new_message_id(self) -> str:
        """A `message_id` no other message of this worker has (for `send_direct`).

        Returns:
            The id.
        """
        return f"{self.app_id}.{next(self._message_ids)}"

    async def send_direct(
        self, target: str, data: bytes, props: bytes, message_id: str, *, verdict_timeout: float
    ) -> None:
        """Publish to the inbox queue `target` and wait for the broker's verdict.

        Args:
            target: the queue (an agent's identity).
            data: the body.
            props: the encoded properties, with `message_id` in them.
            message_id: the id the broker's return would carry (`new_message_id()`).
            verdict_timeout: seconds to wait for the broker's confirm, once published.

        Raises:
            PublishRefused: not published (connection down, no room in time), or the
                broker nacked it: nothing of it was kept.
            Unroutable: the broker returned it: no queue named `target`.
            VerdictTimeout: no confirm in time: the broker may still deliver it.
            ValueError: the properties do not fit a frame: nothing sent.
        """
        self._verdicts[message_id] = None
        try:
            seq = await self.publish(target, data, props, exchange="", mandatory=True)
            try:
                await self.channel.wait_confirm_of(seq, timeout=verdict_timeout)
            except TimeoutError:
                raise VerdictTimeout(
                    f"the broker did not confirm the message within {verdict_timeout:g}s: "
                    "it may still arrive"
                ) from None
            except PublishError as exc:
                raise PublishRefused(f"the broker did not take the message ({exc})") from None
            # memory:// hands returns over from the event loop: let one in before deciding.
            await asyncio.sleep(0)
            returned = self._verdicts[message_id]
            if returned is not None:
                raise Unroutable(returned)
        finally:
            del self._verdicts[message_id]

    async def close(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the broker to confirm what is buffered."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self._held and self.connected:
            try:
                await self.channel.wait_confirms(timeout=timeout)
            except (PublishError, TimeoutError, AMQPError) as exc:
                log.error("gateway %s: not every publish was confirmed: %s", self.app_id, exc)

    # -- inside ---------------------------------------------------------------------

    def _has_room(self, size: int) -> bool:
        if not self.connected:
            raise PublishRefused(self._down())
        self._settle()
        if not self.channel.writable:
            return False
        return not self._held or self._held_bytes + size <= self.max_bytes

    async def _wait_for_room(self, size: int, remaining: float) -> None:
        channel = self.channel
        try:
            if not channel.writable:
                await channel.drain(timeout=remaining)
            else:
                await channel.wait_confirms(self._seq_freeing(size), timeout=remaining)
        except TimeoutError:  # DrainTimeout included
            raise PublishRefused(self._refusal()) from None
        except PublishError:
            pass  # settled by failing (reported to _on_failure): room all the same
        except AMQPError as exc:  # the connection closed for good meanwhile
            raise PublishRefused(f"not connected to the broker: {exc}") from None

    def _down(self) -> str:
        return (
            f"not connected to the broker (connection {self.channel.connection.state}); "
            "the gateway takes no messages until it is back: retry later"
        )

    def _seq_freeing(self, size: int) -> int:
        """The publish whose confirm (with all before it) makes room for `size` bytes."""
        need = self._held_bytes + size - self.max_bytes
        freed = 0
        for seq, held in self._held:
            freed += held
            if freed >= need:
                return seq
        return self._held[-1][0]

    def _refusal(self) -> str:
        """Why a publish that waited its time is refused."""
        if not self.connected:
            return self._down()
        return (
            f"the broker did not take the message within {self.timeout:g}s "
            f"({len(self._held)} messages, {self._held_bytes} bytes published by this gateway "
            "worker await its confirms); retry later"
        )

    def _send(
        self,
        routing_key: str,
        data: bytes,
        props: bytes,
        size: int,
        exchange: str = TOPIC_EXCHANGE,
        mandatory: bool = False,
    ) -> int:
        seq = self.channel.publish(data, exchange, routing_key, props, mandatory=mandatory)
        self._held.append((seq, size))
        self._held_bytes += size
        self._settle()  # the in-process broker confirms at once
        self._changed()
        if self._held and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return seq

    def _settle(self, through: int = 0) -> None:
        """Forget what the broker settled: every publish up to `through`, and all but the
        newest `channel.unconfirmed`."""
        held = self._held
        excess = len(held) - self.channel.unconfirmed
        while held and (excess > 0 or held[0][0] <= through):
            self._held_bytes -= held.popleft()[1]
            excess -= 1

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self._held), self._held_bytes)

    async def _watch(self) -> None:
        """While something is buffered: note the confirms as they come (the metrics)."""
        try:
            while self._held:
                newest = self._held[-1][0]
                try:
                    await self.channel.wait_confirms(newest)
                except PublishError:
                    pass  # settled by failing (reported to _on_failure)
                except AMQPError:
                    return  # closed for good: nothing more will be confirmed
                self._settle(newest)
                self._changed()
        finally:
            self._watcher = None

    def _on_return(self, delivery: Delivery) -> None:
        message_id = delivery.properties.message_id
        if message_id is not None and message_id in self._verdicts:
            self._verdicts[message_id] = f"{delivery.reply_code} {delivery.reply_text}"
            return
        # A direct message whose sender stopped waiting (its verdict timed out).
        log.warning(
            "gateway %s: message to %r returned by the broker: %d %s",
            self.app_id,
            delivery.routing_key,
            delivery.reply_code,
            delivery.reply_text,
        )

    def _on_failure(self, failures: list[tuple[int, Exception]]) -> None:
        log.error(
            "gateway %s: %d publish(es) not confirmed by the broker: %s",
            self.app_id,
            len(failures),
            failures[0][1],
        )


class PublishQueue:
    """One client's publishes, in order. Each goes at once when the broker can take it,
    else waits behind the earlier ones, at most the publisher's `timeout` from its
    arrival. `submit` never waits, so the client's other frames are never held behind a
    publish; `done(ticket, error)` reports each outcome (error None: published). At most
    `max_messages` publishes and `max_bytes` of them wait per client (one larger than
    that still waits when nothing else does); beyond, a publish is refused at once.
    """

    def __init__(
        self,
        publisher: Publisher,
        done: Callable[[Any, Exception | None], None],
        *,
        max_messages: int,
        max_bytes: int,
    ) -> None:
        self.publisher = publisher
        self.done = done
        self.max_messages = max(1, max_messages)
        self.max_bytes = max(1, max_bytes)
        self._waiting: deque[tuple[str, bytes, bytes, Any, float, int]] = deque()
        self._bytes = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, routing_key: str, data: bytes, props: bytes, ticket: Any) -> None:
        """Publish now or queue it; `done` hears of it now or later."""
        if not self._waiting:
            try:
                if self.publisher.publish_now(routing_key, data, props):
                    self.done(ticket, None)
                    return
            except (PublishRefused, ValueError) as exc:
                self.done(ticket, exc)
                return
        size = len(data) + len(props)
        waiting = self._waiting
        if waiting and (len(waiting) >= self.max_messages or self._bytes + size > self.max_bytes):
            refused = PublishRefused(
                f"{len(waiting)} publishes of this connection ({self._bytes} bytes) already "
                "wait for the broker; retry later"
            )
            self.done(ticket, refused)
            return
        deadline = asyncio.get_running_loop().time() + self.publisher.timeout
        waiting.append((routing_key, data, props, ticket, deadline, size))
        self._bytes += size
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        waiting = self._waiting
        try:
            while waiting:
                routing_key, data, props, ticket, deadline, size = waiting[0]
                error: Exception | None = None
                try:
                    await self.publisher.publish(routing_key, data, props, deadline=deadline)
                except (PublishRefused, ValueError) as exc:
                    error = exc
                waiting.popleft()
                self._bytes -= size
                self.done(ticket, error)
        finally:
            self._task = None

    async def close(self) -> None:
        """Stop: what still waits is dropped (its client is gone)."""
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._waiting.clear()
        self._bytes = 0
