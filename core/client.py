"""The asyncio AMQP client connection: handshake, channels, flushing, flow control, heartbeats.

Glues the sans-IO `amqp.AMQPConnection` to a socket (`transport.AMQPStream`): each received
buffer is parsed once and its events are dispatched in order, deliveries in per-consumer
batches (`client_dispatch`). Everything queued during a loop tick goes out in one write.
When the connection drops it reconnects with backoff and restores what the application
built (`client_recovery`). Given several broker URLs (failover), every connect and every
reconnect tries them in order and takes the first that works. Its states: `client_state`.

What its channels use of it is a small public interface (`protocol`, `schedule_flush()`,
`acks_due()`, `acks_held()`, `flow`, `wait_until()`, `forget_channel()`); what it calls on
its channels is listed in `channel`'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from . import client_state as states
from .amqp.connection import AMQPConnection
from .amqp.errors import (
    AMQPConnectError,
    AMQPError,
    AuthenticationError,
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
)
from .channel import Channel, FlagEvent
from .channel_acks import ChannelAcks
from .client_dispatch import ConnectionDispatch
from .client_recovery import ConnectionRecovery
from .topology import Topology
from .transport import AMQPStream, Backoff, describe_handshake_loss, open_stream
from .url import BrokerURL, parse_urls

log = logging.getLogger("munggoggo.client")


class NotConnected:
    """`Connection.protocol` while there is no connection to the broker: every use raises
    ConnectionLost, as a method queued now could never be sent."""

    __slots__ = ("connection",)

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (copy, hasattr) gets the usual answer
            raise AttributeError(name)
        raise ConnectionLost(f"not connected to {self.connection.url}")


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when uvloop is installed; returns whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class Connection(ConnectionDispatch, ConnectionRecovery):
    """An AMQP connection that recovers by itself. Use `await Connection(url).connect()`
    or `async with Connection(url) as conn:`. `url` may be a failover list (a Python list or
    a comma-separated string): `self.url` is then the one connected to (or being tried).

    Its channels read three attributes: `protocol`, the sans-IO AMQP connection they queue
    methods and publishes on (sent at the next flush, see `schedule_flush`; whether one is
    scheduled already is `flush_scheduled`), which while not connected is a stand-in whose
    every use raises ConnectionLost; and `flow`, an asyncio.Event set while publishing may
    proceed (open, socket writable, broker not blocking us; `flow.value` is its state as a
    plain bool). The connection sets them; its channels only read them.
    """

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
        self._state = states.NEW
        self._amqp_conn: AMQPConnection | None = None
        # Read per publish and per ack: a plain attribute, never None (see `protocol`).
        self._not_connected = cast(AMQPConnection, NotConnected(self))
        self.protocol: AMQPConnection = self._not_connected
        self._stream: AMQPStream | None = None
        self._channels: dict[int, Channel] = {}
        self._next_channel_id = 1
        self._handshake: asyncio.Future[None] | None = None
        self._closed_future: asyncio.Future[None] = self.loop.create_future()
        self._close_ok: asyncio.Future[None] | None = None
        self._close_reason: BaseException | None = None
        # A write of what `protocol` queued is scheduled for the end of this tick (channels
        # read it per publish to skip calling `schedule_flush` again).
        self.flush_scheduled = False
        self._ack_channels: list[ChannelAcks] = []  # channels with coalesced acks to emit
        self._writable = True
        self._blocked = False
        self.flow = FlagEvent()  # set while publishing may proceed
        self._recovery: asyncio.Task[None] | None = None
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._last_recv = 0.0
        self._last_send = 0.0

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_open(self) -> bool:
        return self._state == states.OPEN

    @property
    def is_closed(self) -> bool:
        return self._state == states.CLOSED

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
        if self._state != states.NEW:
            raise LocalProtocolError(f"connect() on a connection that is {self._state}")
        self._state = states.CONNECTING
        try:
            await self._establish()
        except BaseException:
            self._state = states.CLOSED
            if not self._closed_future.done():
                self._closed_future.set_result(None)
            raise
        self._state = states.OPEN
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
        amqp = AMQPConnection(
            username=url.username,
            password=url.password,
            vhost=url.vhost,
            heartbeat=url.heartbeat,
            frame_max=url.frame_max,
            channel_max=url.channel_max,
            connection_name=self.name,
        )
        self._use_protocol(amqp)
        amqp.initiate()
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
        self.frame_max = amqp.frame_max
        self.heartbeat = amqp.heartbeat
        self.server_properties = amqp.server_properties
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
        if self._state != states.OPEN:
            raise ConnectionLost(
                f"cannot open a channel: connection to {self.url} is {self._state}"
            )
        channel_id = self._allocate_channel_id()
        ch = Channel(self, channel_id, confirms=confirms, max_unconfirmed=max_unconfirmed)
        self._channels[channel_id] = ch
        try:
            await ch.open_on_wire()
            ch.mark_ready()
            if prefetch_count is not None:
                await ch.basic_qos(prefetch_count)
        except BaseException:
            self._channels.pop(channel_id, None)
            raise
        return ch

    def _allocate_channel_id(self) -> int:
        limit = self.protocol.channel_max
        for _ in range(limit):
            cid = self._next_channel_id
            self._next_channel_id = cid % limit + 1
            if cid not in self._channels:
                return cid
        raise LocalProtocolError(f"all {limit} channels of the connection are in use")

    def forget_channel(self, channel: Channel) -> None:
        """Drop a channel its user closed from this connection's channels (its id becomes
        free, and it is no longer restored after a reconnect).

        Args:
            channel: a channel of this connection; another one with the same id is kept.
        """
        if self._channels.get(channel.id) is channel:
            del self._channels[channel.id]

    async def close(self, timeout: float = 5.0) -> None:
        """Close cleanly: Connection.Close, wait for CloseOk, drop the socket."""
        if self._state in (states.CLOSED, states.NEW):
            self._state = states.CLOSED
            return
        previous = self._state
        self._state = states.CLOSING
        self._update_flow()
        if self._recovery is not None:
            self._recovery.cancel()
        if previous == states.OPEN and self._amqp_conn is not None and self._stream is not None:
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
        self._state = states.CLOSED
        self._stop_heartbeat()
        self._update_flow()
        for ch in list(self._channels.values()):
            ch.fail_forever(reason)
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future)

    # ------------------------------------------------------------------ I/O glue

    def _use_protocol(self, amqp: AMQPConnection | None) -> None:
        """Connected to the broker with `amqp` (None: not connected): sets `protocol`."""
        self._amqp_conn = amqp
        self.protocol = amqp if amqp is not None else self._not_connected

    def schedule_flush(self) -> None:
        """Write what was queued on `protocol` at the end of this loop tick: one write for
        everything queued meanwhile."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def acks_due(self, channel: ChannelAcks) -> None:
        """`channel` has coalesced acks: call its `emit_acks()` right before the next write
        (once per tick however many it settled), and schedule that write."""
        self._ack_channels.append(channel)
        self.schedule_flush()

    def acks_held(self, channel: ChannelAcks) -> None:
        """`channel` holds coalesced acks: call its `emit_acks()` right before the next
        write, without scheduling one (the channel does when its hold is over).

        Args:
            channel: a channel of this connection.
        """
        self._ack_channels.append(channel)

    def _emit_due_acks(self) -> None:
        """Queue the coalesced acks of every channel that has some, ahead of what follows."""
        if self._ack_channels:
            channels, self._ack_channels = self._ack_channels, []
            for ch in channels:
                ch.emit_acks()

    def _flush(self) -> None:
        self.flush_scheduled = False
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
        self._dispatch(events, conn.one_consumer)
        if conn.has_data_to_send:
            self.schedule_flush()

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
        self._use_protocol(None)
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
            ch.handle_closed(reason, by_broker=False)
        if self._state == states.OPEN:
            recovering = self.reconnect and not isinstance(reason, AuthenticationError)
            text = str(reason)
            if str(self.url) not in text:
                text = f"connection to {self.url} lost: {text}"
            log.warning("%s%s", text, "; recovering" if recovering else "")
            for cb in self.on_lost:
                cb(self, reason)
            if self.reconnect and not isinstance(reason, AuthenticationError):
                self._state = states.RECOVERING
                self._update_flow()
                self._recovery = self.loop.create_task(self._recover())
            else:
                self._finish(reason)
        elif self._state in (states.CLOSING, states.CONNECTING, states.RECOVERING):
            # close(), connect() (which may try the next URL) or the recovery goes on. A
            # recovery lost after its handshake had channels ready (RPC requests may have
            # gone out on them): the loss is reported like that of an open connection.
            if self._state == states.RECOVERING and established:
                for cb in self.on_lost:
                    cb(self, reason)
        else:
            self._finish(reason)

    # ------------------------------------------------------------------ flow control

    def _update_flow(self) -> None:
        if self._state == states.OPEN and self._writable and not self._blocked:
            self.flow.set()
        else:
            self.flow.clear()

    async def wait_until(self, event: asyncio.Event) -> None:
        """Wait until `event` is set (`flow`, or a channel's own), unless this connection
        closes for good first.

        Args:
            event: an event of this connection or of one of its channels.

        Raises:
            ConnectionLost: the connection is closed, or closed while waiting.
        """
        if self._state == states.CLOSED:
            raise ConnectionLost(f"connection to {self.url} is closed")
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
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
