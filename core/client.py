"""The asyncio AMQP client connection: handshake, event dispatch, heartbeats, recovery.

Glues the sans-IO `amqp.AMQPConnection` to a socket (`transport.AMQPStream`): each received
buffer is parsed once and its events are dispatched in order, deliveries in per-consumer
batches. Everything queued during a loop tick goes out in one write. When the connection
drops it reconnects with backoff and restores what the application built: exchanges,
queues and bindings (`topology.Topology`), then each channel's qos, confirm mode and
consumers, then republishes unconfirmed messages. Given several broker URLs (failover), every
connect and every reconnect tries them in order and takes the first that works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ._speedups import DELIVER, GET_OK, Delivery
from .amqp import events as ev
from .amqp.connection import AMQPConnection
from .amqp.errors import (
    AMQPConnectError,
    AMQPError,
    AuthenticationError,
    BrokerError,
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
)
from .channel import Channel
from .topology import Topology
from .transport import AMQPStream, Backoff, describe_handshake_loss, open_stream
from .url import BrokerURL, parse_urls

log = logging.getLogger("munggoggo.client")

_NEW, _CONNECTING, _OPEN, _RECOVERING, _CLOSING, _CLOSED = (
    "new",
    "connecting",
    "open",
    "recovering",
    "closing",
    "closed",
)


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when uvloop is installed; returns whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class Connection:
    """An AMQP connection that recovers by itself. Use `await Connection(url).connect()`
    or `async with Connection(url) as conn:`. `url` may be a failover list (a Python list or
    a comma-separated string): `self.url` is then the one connected to (or being tried)."""

    def __init__(
        self,
        url: str | BrokerURL | Sequence[str | BrokerURL] | None = None,
        *,
        reconnect: bool = True,
        republish: bool = True,
        backoff: Backoff | None = None,
        name: str | None = None,
    ) -> None:
        self.urls = parse_urls(url)
        self.url = self.urls[0]
        if self.url.is_memory:
            raise AMQPConnectError(
                "memory:// URLs are served by the in-process broker, not by Connection"
            )
        self.reconnect = reconnect
        self.republish = republish
        self.backoff = backoff or Backoff()
        self.name = name or self.url.name
        self.topology = Topology()
        self.frame_max = self.url.frame_max
        self.heartbeat = 0
        self.server_properties: dict[str, Any] = {}
        self.reconnects = 0
        self.on_reconnect: list[Callable[[Connection], Any]] = []
        self.on_lost: list[Callable[[Connection, BaseException], Any]] = []
        self.loop = asyncio.get_running_loop()
        self._state = _NEW
        self._amqp_conn: AMQPConnection | None = None
        self._stream: AMQPStream | None = None
        self._channels: dict[int, Channel] = {}
        self._next_channel_id = 1
        self._handshake: asyncio.Future[None] | None = None
        self._closed_future: asyncio.Future[None] = self.loop.create_future()
        self._close_ok: asyncio.Future[None] | None = None
        self._close_reason: BaseException | None = None
        self._flush_scheduled = False
        self._ack_channels: list[Channel] = []  # channels with coalesced acks to emit
        self._writable = True
        self._blocked = False
        self._flow = asyncio.Event()  # set while publishing may proceed
        self._recovery: asyncio.Task[None] | None = None
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._last_recv = 0.0
        self._last_send = 0.0

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

    @property
    def is_closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def is_blocked(self) -> bool:
        return self._blocked

    @property
    def state(self) -> str:
        return self._state

    async def __aenter__(self) -> Connection:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> Connection:
        if self._state != _NEW:
            raise LocalProtocolError(f"connect() on a connection that is {self._state}")
        self._state = _CONNECTING
        try:
            await self._establish()
        except BaseException:
            self._state = _CLOSED
            if not self._closed_future.done():
                self._closed_future.set_result(None)
            raise
        self._state = _OPEN
        self._update_flow()
        return self

    async def _establish(self) -> None:
        """Connect to the first broker URL that works, in order; raises AMQPConnectError
        subclasses. With several URLs each failure is logged on one line, and when none
        works the error names every URL and why it failed (never the password)."""
        if len(self.urls) == 1:
            await self._establish_one(self.urls[0])
            return
        failures: list[BaseException] = []
        for index, url in enumerate(self.urls, 1):
            try:
                await self._establish_one(url)
                return
            except (AMQPError, OSError) as exc:
                log.warning("broker URL %d of %d failed: %s", index, len(self.urls), exc)
                failures.append(exc)
        kinds = {type(exc) for exc in failures}
        # One kind of failure keeps its class (AuthenticationError everywhere is still one).
        error_class = kinds.pop() if len(kinds) == 1 else AMQPConnectError
        if not issubclass(error_class, AMQPConnectError):
            error_class = AMQPConnectError
        raise error_class(
            f"no broker URL of {len(self.urls)} works: " + "; ".join(map(str, failures))
        )

    async def _establish_one(self, url: BrokerURL) -> None:
        self.url = url
        self._close_reason = None
        self._handshake = self.loop.create_future()
        stream = await open_stream(url, self)
        self._stream = stream
        self._amqp_conn = AMQPConnection(
            username=url.username,
            password=url.password,
            vhost=url.vhost,
            heartbeat=url.heartbeat,
            frame_max=url.frame_max,
            channel_max=url.channel_max,
            connection_name=self.name,
        )
        self._amqp_conn.initiate()
        self._last_recv = self._last_send = self.loop.time()
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), url.connection_timeout)
        except TimeoutError:
            stream.abort()
            # Let the aborted socket report its loss now (it fails the handshake future),
            # not in the middle of the next URL's attempt.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._handshake), 1.0)
            raise AMQPConnectError(
                f"cannot connect to {url}: no AMQP handshake within {url.connection_timeout:g}s"
            ) from None
        if self._stream is not stream:  # lost between the handshake and now
            raise AMQPConnectError(f"cannot connect to {url}: lost right after the handshake")
        self.frame_max = self._amqp_conn.frame_max
        self.heartbeat = self._amqp_conn.heartbeat
        self.server_properties = self._amqp_conn.server_properties
        self._start_heartbeat()

    async def channel(
        self,
        *,
        confirms: bool = True,
        prefetch_count: int | None = None,
        max_unconfirmed: int = 1024,
    ) -> Channel:
        """Open a new channel (with publisher confirms unless `confirms=False`).

        `max_unconfirmed` bounds the publishes awaiting confirms: `drain()` waits above it.
        A window far larger than the consumers' pace only moves the backlog into the broker,
        which then slows down (see docs/decisions.md).
        """
        if self._state != _OPEN:
            raise ConnectionLost(
                f"cannot open a channel: connection to {self.url} is {self._state}"
            )
        channel_id = self._allocate_channel_id()
        ch = Channel(self, channel_id, confirms=confirms, max_unconfirmed=max_unconfirmed)
        self._channels[channel_id] = ch
        try:
            await ch._open()
            ch._mark_ready()
            if prefetch_count is not None:
                await ch.basic_qos(prefetch_count)
        except BaseException:
            self._channels.pop(channel_id, None)
            raise
        return ch

    def _allocate_channel_id(self) -> int:
        limit = self._amqp().channel_max
        for _ in range(limit):
            cid = self._next_channel_id
            self._next_channel_id = cid % limit + 1
            if cid not in self._channels:
                return cid
        raise LocalProtocolError(f"all {limit} channels of the connection are in use")

    def _forget_channel(self, ch: Channel) -> None:
        if self._channels.get(ch.id) is ch:
            del self._channels[ch.id]

    async def close(self, timeout: float = 5.0) -> None:
        """Close cleanly: Connection.Close, wait for CloseOk, drop the socket."""
        if self._state in (_CLOSED, _NEW):
            self._state = _CLOSED
            return
        previous = self._state
        self._state = _CLOSING
        self._update_flow()
        if self._recovery is not None:
            self._recovery.cancel()
        if previous == _OPEN and self._amqp_conn is not None and self._stream is not None:
            self._close_ok = self.loop.create_future()
            # The broker ignores what follows Connection.Close: acks made this tick go first,
            # or the messages they settle would be delivered again.
            self._emit_due_acks()
            self._amqp_conn.close()
            self._flush()
            with contextlib.suppress(TimeoutError, AMQPError):
                await asyncio.wait_for(asyncio.shield(self._close_ok), timeout)
        if self._stream is not None:
            self._stream.close()
        self._finish(ConnectionLost(f"connection to {self.url} was closed"))

    def _finish(self, reason: BaseException) -> None:
        self._state = _CLOSED
        self._stop_heartbeat()
        self._update_flow()
        for ch in list(self._channels.values()):
            if ch._reopen_task is not None:
                ch._reopen_task.cancel()
            ch._fail_forever(reason)
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future)

    # ------------------------------------------------------------------ I/O glue

    def _amqp(self) -> AMQPConnection:
        conn = self._amqp_conn
        if conn is None:
            raise ConnectionLost(f"not connected to {self.url}")
        return conn

    def _amqp_open_channel(self, channel_id: int) -> None:
        self._amqp().open_channel(channel_id)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _acks_due(self, ch: Channel) -> None:
        self._ack_channels.append(ch)
        self._schedule_flush()

    def _emit_due_acks(self) -> None:
        """Queue the coalesced acks of every channel that has some, ahead of what follows."""
        if self._ack_channels:
            channels, self._ack_channels = self._ack_channels, []
            for ch in channels:
                ch._emit_acks()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._ack_channels:
            self._emit_due_acks()
        conn = self._amqp_conn
        stream = self._stream
        if conn is None or stream is None:
            return
        data = conn.data_to_send()
        if data:
            stream.write(data)
            self._last_send = self.loop.time()

    # StreamOwner interface -------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        self._last_recv = self.loop.time()
        conn = self._amqp_conn
        if conn is None:
            return
        try:
            events = conn.receive_data(data)
        except RemoteProtocolError as exc:
            log.error("protocol error from %s: %s; dropping the connection", self.url, exc)
            self._close_reason = exc
            self._flush()  # the Connection.Close explaining why, best effort
            if self._stream is not None:
                self._stream.abort()
            return
        self._dispatch(events)
        if conn.has_data_to_send:
            self._schedule_flush()

    def stream_writable(self, writable: bool) -> None:
        self._writable = writable
        self._update_flow()

    def stream_lost(self, exc: Exception | None) -> None:
        # Open on the wire (handshake done) when lost, even if its recovery was still
        # restoring channels: what was sent on it is lost with it (on_lost).
        handshake = self._handshake
        established = (
            handshake is not None
            and handshake.done()
            and not handshake.cancelled()
            and handshake.exception() is None
        )
        self._stream = None
        self._amqp_conn = None
        self._stop_heartbeat()
        reason = self._close_reason or ConnectionLost(
            f"connection to {self.url} lost: {exc or 'closed by the broker'}"
        )
        if self._close_ok is not None and not self._close_ok.done():
            self._close_ok.set_result(None)
        if self._handshake is not None and not self._handshake.done():
            if isinstance(reason, AuthenticationError):
                # The sans-IO layer knows the user and vhost, not which broker refused them.
                named = AuthenticationError(f"cannot connect to {self.url}: {reason}")
                named.reply_code = getattr(reason, "reply_code", 0)  # type: ignore[attr-defined]
                reason = named
            elif not isinstance(reason, AMQPConnectError):
                reason = AMQPConnectError(
                    f"cannot connect to {self.url}: "
                    f"{describe_handshake_loss(self.url, self._close_reason or exc)}"
                )
            self._handshake.set_exception(reason)
            self._handshake.exception()
        for ch in self._channels.values():
            ch._on_closed(reason, by_broker=False)
        if self._state == _OPEN:
            recovering = self.reconnect and not isinstance(reason, AuthenticationError)
            text = str(reason)
            if str(self.url) not in text:
                text = f"connection to {self.url} lost: {text}"
            log.warning("%s%s", text, "; recovering" if recovering else "")
            for cb in self.on_lost:
                cb(self, reason)
            if self.reconnect and not isinstance(reason, AuthenticationError):
                self._state = _RECOVERING
                self._update_flow()
                self._recovery = self.loop.create_task(self._recover())
            else:
                self._finish(reason)
        elif self._state in (_CLOSING, _CONNECTING, _RECOVERING):
            # close(), connect() (which may try the next URL) or the recovery goes on. A
            # recovery lost after its handshake had channels ready (RPC requests may have
            # gone out on them): the loss is reported like that of an open connection.
            if self._state == _RECOVERING and established:
                for cb in self.on_lost:
                    cb(self, reason)
        else:
            self._finish(reason)

    # ------------------------------------------------------------------ event dispatch

    def _dispatch(self, events: list[Any]) -> None:
        channels = self._channels
        batch: list[Delivery] | None = None
        batch_key: tuple[int, str] | None = None
        for e in events:
            if type(e) is Delivery:
                if e.kind == DELIVER:
                    key = (e.channel, e.consumer_tag)
                    if key == batch_key:
                        batch.append(e)  # type: ignore[union-attr]
                        continue
                    if batch:
                        self._deliver(batch_key, batch)  # type: ignore[arg-type]
                    batch_key, batch = key, [e]
                    continue
                if batch:
                    self._deliver(batch_key, batch)  # type: ignore[arg-type]
                    batch = batch_key = None
                ch = channels.get(e.channel)
                if ch is not None:
                    if e.kind == GET_OK:
                        ch._on_reply(e)
                    else:
                        ch._on_return(e)
                continue
            if batch:
                self._deliver(batch_key, batch)  # type: ignore[arg-type]
                batch = batch_key = None
            self._event(e)
        if batch:
            self._deliver(batch_key, batch)  # type: ignore[arg-type]

    def _deliver(self, key: tuple[int, str], batch: list[Delivery]) -> None:
        ch = self._channels.get(key[0])
        if ch is not None:
            ch._dispatch(key[1], batch)

    def _event(self, e: Any) -> None:
        t = type(e)
        if t is ev.ConfirmsSettled:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch._on_confirms(e.confirmed_through, e.failed)
        elif t is ev.MethodReply or t is ev.ChannelOpened:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch._on_reply(getattr(e, "method", None))
        elif t is ev.GetEmpty:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch._on_reply(None)
        elif t is ev.ChannelClosed:
            self._on_channel_closed(e.channel, e.error)
        elif t is ev.ConsumerCancelled:
            ch = self._channels.get(e.channel)
            if ch is not None:
                ch._on_consumer_cancelled(e.consumer_tag)
        elif t is ev.ConnectionOpened:
            if self._handshake is not None and not self._handshake.done():
                self._handshake.set_result(None)
        elif t is ev.ConnectionClosed:
            if e.error is not None:
                self._close_reason = e.error
                # Only a debug line: a refusal during the handshake is the connect error its
                # caller reports (one line per URL), and the loss of an open connection gets
                # its one line (with the URL and what happens next) where it is handled.
                log.debug("broker closed the connection to %s: %s", self.url, e.error)
            self._flush()  # CloseOk
            if self._stream is not None:
                self._stream.close()
        elif t is ev.Blocked:
            log.warning("broker blocked publishing on %s: %s", self.url, e.reason)
            self._blocked = True
            self._update_flow()
        elif t is ev.Unblocked:
            log.info("broker unblocked publishing on %s", self.url)
            self._blocked = False
            self._update_flow()

    def _on_channel_closed(self, channel_id: int, error: BrokerError | None) -> None:
        ch = self._channels.get(channel_id)
        if ch is None:
            return
        if error is None:  # the CloseOk to our close
            ch._on_reply(None)
            ch._on_closed(None, by_broker=False)
            return
        # A refused method raises to its caller, who decides whether it matters (an agent
        # turns 405 on its inbox into IdentityInUse); otherwise nobody else would hear of it.
        level = logging.DEBUG if ch._replies else logging.WARNING
        log.log(level, "channel %d: %s", channel_id, error)
        ch._on_closed(error, by_broker=True)
        if self._state == _OPEN and not ch._closed_by_user and not ch._recovering:
            ch._reopen_task = self.loop.create_task(self._reopen_channel(ch))

    async def _reopen_channel(self, ch: Channel) -> None:
        try:
            # Republish only what was published while it was closed: what was unconfirmed
            # at the close was failed to the publisher.
            await ch._recover(republish=True)
        except AMQPError as exc:
            if self._state == _OPEN:  # while closing or recovering this is expected
                log.warning("channel %d could not be reopened: %s", ch.id, exc)

    # ------------------------------------------------------------------ flow control

    def _update_flow(self) -> None:
        if self._state == _OPEN and self._writable and not self._blocked:
            self._flow.set()
        else:
            self._flow.clear()

    async def _wait_flow(self) -> None:
        if self._state == _CLOSED:
            raise ConnectionLost(f"connection to {self.url} is closed")
        waiter = asyncio.ensure_future(self._flow.wait())
        try:
            await asyncio.wait([waiter, self._closed_future], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller gave up (a drain with a timeout): no waiter left
            waiter.cancel()
            raise
        if not waiter.done():
            waiter.cancel()
            raise ConnectionLost(f"connection to {self.url} is closed")

    # ------------------------------------------------------------------ heartbeats

    def _start_heartbeat(self) -> None:
        self._stop_heartbeat()
        if self.heartbeat:
            self._heartbeat_timer = self.loop.call_later(self.heartbeat / 2, self._heartbeat_tick)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat_timer is not None:
            self._heartbeat_timer.cancel()
            self._heartbeat_timer = None

    def _heartbeat_tick(self) -> None:
        conn, stream = self._amqp_conn, self._stream
        if conn is None or stream is None:
            return
        now = self.loop.time()
        interval = self.heartbeat / 2
        if now - self._last_recv > self.heartbeat * 2:
            self._close_reason = ConnectionLost(
                f"connection to {self.url} lost: no heartbeat from the broker for "
                f"{now - self._last_recv:.0f}s"
            )
            stream.abort()
            return
        if now - self._last_send >= interval:
            conn.heartbeat_frame()
            self._flush()
        self._heartbeat_timer = self.loop.call_later(interval, self._heartbeat_tick)

    # ------------------------------------------------------------------ recovery

    async def _recover(self) -> None:
        while self._state == _RECOVERING:
            await asyncio.sleep(self.backoff.next_delay())
            if self._state != _RECOVERING:
                return
            try:
                await self._establish()
            except (AMQPError, OSError) as exc:
                if len(self.urls) == 1:  # with several, _establish logged each URL's failure
                    log.warning("reconnect to %s failed: %s", self.url, exc)
                if self._stream is not None:
                    self._stream.abort()
                continue
            try:
                await self._restore()
            except (AMQPError, OSError) as exc:
                log.warning("reconnect to %s failed: %s", self.url, exc)
                if self._stream is not None:
                    self._stream.abort()
                continue
            self.backoff.reset()
            self.reconnects += 1
            self._state = _OPEN
            self._update_flow()
            log.info("reconnected to %s (recovery #%d)", self.url, self.reconnects)
            for cb in self.on_reconnect:
                try:
                    result = cb(self)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("on_reconnect callback failed")
            return

    async def _restore(self) -> None:
        """Reopen channels, replay topology, restore consumers, then republish."""
        channels = sorted(self._channels.values(), key=lambda c: c.id)
        for ch in channels:
            await ch._open()
        await self._replay_topology(channels)
        # Channels without consumers first: a delivery to a restored consumer may be
        # handled at once and publish (an RPC reply, a handoff) on one of them.
        consuming = [ch for ch in channels if ch.has_consumers]
        for ch in channels:
            if not ch.has_consumers:
                ch._mark_ready()
                ch._republish_or_fail(self.republish)
        for ch in consuming:
            await ch._restore_consumers()
        for ch in consuming:
            ch._mark_ready()
            ch._republish_or_fail(self.republish)

    async def _replay_topology(self, channels: list[Channel]) -> None:
        if not len(self.topology):
            return
        helper = Channel(self, self._allocate_channel_id(), confirms=False)
        self._channels[helper.id] = helper
        try:
            await helper._open()
            helper._mark_ready()
            topo = self.topology
            for ex in list(topo.exchanges.values()):
                await self._replay(
                    helper,
                    helper.exchange_declare(
                        ex.name,
                        ex.type,
                        durable=ex.durable,
                        auto_delete=ex.auto_delete,
                        internal=ex.internal,
                        arguments=ex.arguments,
                    ),
                    f"exchange {ex.name!r}",
                )
            for q in list(topo.queues.values()):
                ok = await self._replay(
                    helper,
                    helper.queue_declare(
                        "" if q.server_named else q.name,
                        durable=q.durable,
                        exclusive=q.exclusive,
                        auto_delete=q.auto_delete,
                        arguments=q.arguments,
                    ),
                    f"queue {q.name!r}",
                )
                if ok is not None and q.server_named and ok.queue != q.name:
                    topo.renamed(q.name, ok.queue)
                    for ch in channels:
                        for consumer in ch._consumers.values():
                            if consumer.queue == q.name:
                                consumer.queue = ok.queue
            for b in list(topo.bindings):
                if b.kind == "queue":
                    coro = helper.queue_bind(b.destination, b.source, b.routing_key, b.arguments)
                else:
                    coro = helper.exchange_bind(b.destination, b.source, b.routing_key, b.arguments)
                await self._replay(helper, coro, f"binding {b.source!r} -> {b.destination!r}")
        finally:
            self._channels.pop(helper.id, None)
            if helper.is_open and self._amqp_conn is not None:
                self._amqp_conn.close_channel(helper.id)
                self._schedule_flush()

    @staticmethod
    async def _replay(helper: Channel, coro: Any, what: str) -> Any:
        """Redeclare one thing; a broker refusal is logged and skipped, not fatal."""
        try:
            return await coro
        except BrokerError as exc:
            log.error("could not restore %s after reconnect: %s", what, exc)
            if not helper.is_open:
                await helper._open()
                helper._mark_ready()
            return None
