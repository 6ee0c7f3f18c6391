"""The sans-IO AMQP 0-9-1 client connection: bytes in, events out; calls in, bytes out.

No sockets, no event loop, no clock (h11's shape): the owner feeds `receive_data()` and
writes whatever `data_to_send()` returns. Rare methods (handshake, declare, bind, qos, close)
are marshalled by pamqp; the hot frames (publish, deliver, ack, confirms) go through
`munggoggo._speedups`.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp.exceptions import PAMQPException

from .. import _speedups
from .._speedups import R_CONFIRM, R_HEARTBEAT, R_METHOD, FrameError
from . import events as ev
from .errors import (
    AccessRefused,
    LocalProtocolError,
    NotAllowed,
    RemoteProtocolError,
    broker_error,
)
from .handshake import (
    DEFAULT_FRAME_MAX,
    auth_error,
    plain_response,
    tune,
)
from .handshake import client_properties as build_client_properties
from .state import ChanState, ConnState, advance_channel, advance_connection

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
DEFAULT_CHANNEL_MAX = 2047

# Broker-initiated methods: they are not replies to anything we sent.
_CHANNEL_CLOSE = 0x00140028
_CHANNEL_CLOSE_OK = 0x00140029
_CHANNEL_OPEN_OK = 0x0014000B
_CHANNEL_FLOW = 0x00140014
_BASIC_CANCEL = 0x003C001E
_BASIC_GET_EMPTY = 0x003C0048
_CONFIRM_SELECT_OK = 0x0055000B
_GET_OK = _speedups.GET_OK


@dataclass(slots=True)
class ChannelState:
    """What the protocol needs to know about one channel.

    Attributes:
        id: the channel number.
        state: its state.
        expected: names of the replies it waits for, oldest first.
        confirms: its ConfirmTracker once Confirm.Select was sent, else None.
        publisher: its publishes' path to the out buffer (cached method frames, packing,
            confirm numbering); open exactly while `state` is OPEN.
    """

    id: int
    publisher: _speedups.ChannelPublisher
    state: ChanState = ChanState.CLOSED
    # Names of replies we wait for, oldest first (AMQP answers sync methods in order).
    expected: deque[tuple[str, ...]] = field(default_factory=deque)
    confirms: _speedups.ConfirmTracker | None = None  # once Confirm.Select was sent

    def advance(self, event: str) -> None:
        """Move to the state `event` leads to (publishing follows it).

        Args:
            event: the state table's event name ("->Channel.Open", "<-Channel.OpenOk", ...).

        Raises:
            LocalProtocolError: we may not send that method now.
            RemoteProtocolError: the broker may not send that method now.
        """
        self.state = advance_channel(self.id, self.state, event)
        self.publisher.is_open = self.state is ChanState.OPEN


class AMQPConnection:
    """One AMQP connection's protocol state; feed it bytes, send what it gives back.

    Args:
        username: the login (PLAIN).
        password: the password.
        vhost: the virtual host to open.
        heartbeat: the heartbeat interval proposed, in seconds (the broker's may be lower).
        frame_max: the largest frame proposed, in bytes.
        channel_max: the most channels proposed.
        connection_name: the name the broker shows for the connection.
        client_properties: more client properties, added to ours.
    """

    def __init__(
        self,
        *,
        username: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        heartbeat: int = 60,
        frame_max: int = DEFAULT_FRAME_MAX,
        channel_max: int = DEFAULT_CHANNEL_MAX,
        connection_name: str | None = None,
        client_properties: dict[str, Any] | None = None,
    ) -> None:
        self.username = username
        self._password = password
        self.vhost = vhost
        self.requested_heartbeat = heartbeat
        self.requested_frame_max = frame_max
        self.requested_channel_max = channel_max
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.server_properties: dict[str, Any] = {}
        self.state = ConnState.IDLE
        self.blocked = False
        self.closed_by: Exception | None = None
        self.channels: dict[int, ChannelState] = {}
        self._reader = _speedups.FrameReader(DEFAULT_FRAME_MAX)
        # One buffer for the connection's life: channel publishers append to it directly.
        self._out = bytearray()
        self._client_properties = build_client_properties(connection_name, client_properties)

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytearray:
        """Everything queued for the wire since the last call.

        Returns:
            The bytes to write (possibly empty); the caller owns them.
        """
        out = self._out
        if not out:
            return bytearray()  # never hand out the live buffer
        # A copy: the live buffer stays the one the channel publishers append to (one
        # memcpy per write, a few µs for ~100 publishes, less than a Python call each).
        data = out[:]
        out.clear()
        return data

    @property
    def has_data_to_send(self) -> bool:
        """Whether bytes wait to be taken by `data_to_send()`."""
        return bool(self._out)

    def send_raw(self, data: bytes) -> None:
        """Queue pre-encoded frames (republishing after a reconnect).

        Args:
            data: the frames.
        """
        self._out += data

    # ------------------------------------------------------------------ connection

    def initiate(self) -> None:
        """Start the handshake: queue the protocol header.

        Raises:
            LocalProtocolError: it was started before.
        """
        self.state = advance_connection(self.state, "initiate")
        self._out += PROTOCOL_HEADER

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        """Queue Connection.Close; mid-handshake the connection is just marked closed.

        Nothing happens when it is closing or closed already.

        Args:
            reply_code: the close reason's code (200: a normal close).
            reply_text: the close reason.
        """
        if self.state in (ConnState.CLOSING, ConnState.CLOSED):
            return
        if self.state is not ConnState.OPEN:
            # Closing mid-handshake: nothing to negotiate, the owner just drops the socket.
            self.state = ConnState.CLOSED
            return
        self.state = advance_connection(self.state, "->Connection.Close")
        self._send(0, commands.Connection.Close(reply_code, reply_text, 0, 0))

    def heartbeat_frame(self) -> None:
        """Queue a heartbeat frame."""
        self._out += _speedups.HEARTBEAT_FRAME

    def abort_protocol(self, error: Exception) -> None:
        """We received garbage: tell the broker why (best effort) and stop.

        Args:
            error: what was wrong (RemoteProtocolError: code 501, else 541).
        """
        if self.state is ConnState.OPEN:
            code = 501 if isinstance(error, RemoteProtocolError) else 541
            self._send(0, commands.Connection.Close(code, str(error)[:200], 0, 0))
        self.state = ConnState.CLOSED

    # ------------------------------------------------------------------ channels

    def open_channel(self, channel_id: int) -> None:
        """Queue Channel.Open (a ChannelOpened event answers it).

        Args:
            channel_id: the channel number, 1 to `channel_max`; a closed one may be reused.

        Raises:
            LocalProtocolError: the connection is not open, the number is out of range,
                or the channel is not closed.
        """
        if self.state is not ConnState.OPEN:
            raise LocalProtocolError(
                f"cannot open channel {channel_id}: connection is {self.state.value}"
            )
        if not 0 < channel_id <= self.channel_max:
            raise LocalProtocolError(f"channel id {channel_id} outside 1..{self.channel_max}")
        ch = self.channels.get(channel_id)
        if ch is None:
            publisher = _speedups.ChannelPublisher(channel_id, self._out, self.frame_max)
            ch = self.channels[channel_id] = ChannelState(channel_id, publisher)
        ch.advance("->Channel.Open")
        ch.expected.clear()
        ch.confirms = ch.publisher.confirms = None
        ch.expected.append(("Channel.OpenOk",))
        self._send(channel_id, commands.Channel.Open())

    def close_channel(
        self, channel_id: int, reply_code: int = 200, text: str = "Normal shutdown"
    ) -> None:
        """Queue Channel.Close (a ChannelClosed event answers it).

        Args:
            channel_id: the channel number.
            reply_code: the close reason's code (200: a normal close).
            text: the close reason.

        Raises:
            LocalProtocolError: the channel was never opened, or is not open or opening.
        """
        ch = self._channel(channel_id)
        ch.advance("->Channel.Close")
        self._send(channel_id, commands.Channel.Close(reply_code, text, 0, 0))

    def send_method(self, channel_id: int, method: Any) -> bool:
        """Queue a (rare) method, marshalled by pamqp.

        Args:
            channel_id: the channel number.
            method: a pamqp method frame (Queue.Declare, Basic.Qos, ...).

        Returns:
            True when a MethodReply event will answer it (a synchronous method without
            nowait).

        Raises:
            LocalProtocolError: the channel was never opened, or is not open.
        """
        ch = self._channel(channel_id)
        if ch.state is not ChanState.OPEN:
            raise LocalProtocolError(
                f"cannot send {method.name}: channel {channel_id} is {ch.state.value}"
            )
        waits = method.synchronous and not getattr(method, "nowait", False)
        # Marshal first: a method that cannot be encoded (a binding argument of a type the
        # wire has not) raises here with nothing registered, and the channel goes on.
        data = pamqp_frame.marshal(method, channel_id)
        if waits:
            ch.expected.append(tuple(method.valid_responses))
        self._out += data
        return waits

    def enable_confirms(self, channel_id: int, tracker: Any) -> None:
        """Confirm.Select with `tracker` (a ConfirmTracker) counting publishes from now on.

        Args:
            channel_id: the channel number.
            tracker: the ConfirmTracker that numbers and settles its publishes.

        Raises:
            LocalProtocolError: the channel was never opened, or is not open.
        """
        self.send_method(channel_id, commands.Confirm.Select())
        ch = self._channel(channel_id)
        ch.confirms = ch.publisher.confirms = tracker

    def channel_publisher(self, channel_id: int) -> _speedups.ChannelPublisher:
        """The publish path of channel `channel_id`: what `publish` calls, for callers that
        publish often on one channel (its `publish` returns -1 while the channel is not
        open, where `publish` raises).

        Args:
            channel_id: the channel number.

        Returns:
            The channel's ChannelPublisher, the same one for the life of this connection.

        Raises:
            LocalProtocolError: the channel was never opened.
        """
        return self._channel(channel_id).publisher

    def publish(
        self,
        channel_id: int,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: bytes,
        mandatory: bool = False,
    ) -> int:
        """Queue one publish.

        Args:
            channel_id: the channel number.
            exchange: the exchange ("": the default exchange).
            routing_key: the routing key.
            body: the message body (split into frames of `frame_max`).
            properties: the basic properties, pre-encoded (`_speedups.encode_properties`).
            mandatory: have the broker return it when no queue takes it.

        Returns:
            Its confirm sequence number (0 without confirms).

        Raises:
            LocalProtocolError: the channel is not open.
            PropertiesTooLarge: the properties do not fit one content header frame.
        """
        ch = self.channels.get(channel_id)
        seq = (
            -1
            if ch is None
            else ch.publisher.publish(exchange, routing_key, properties, body, mandatory)
        )
        if seq < 0:
            state = ch.state.value if ch else "not open"
            raise LocalProtocolError(f"cannot publish: channel {channel_id} is {state}")
        return seq

    def ack(self, channel_id: int, delivery_tag: int, multiple: bool = False) -> None:
        """Queue Basic.Ack.

        Args:
            channel_id: the channel number.
            delivery_tag: the delivery's tag.
            multiple: ack every unacked delivery up to it too.
        """
        self._out += _speedups.pack_ack(channel_id, delivery_tag, multiple)

    def nack(
        self, channel_id: int, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        """Queue Basic.Nack.

        Args:
            channel_id: the channel number.
            delivery_tag: the delivery's tag.
            multiple: nack every unsettled delivery up to it too.
            requeue: put it back in its queue (False: drop or dead-letter it).
        """
        self._out += _speedups.pack_ack(channel_id, delivery_tag, multiple, True, requeue)

    def reject(self, channel_id: int, delivery_tag: int, requeue: bool = True) -> None:
        """Queue Basic.Reject.

        Args:
            channel_id: the channel number.
            delivery_tag: the delivery's tag.
            requeue: put it back in its queue (False: drop or dead-letter it).
        """
        self._send(channel_id, commands.Basic.Reject(delivery_tag, requeue))

    # ------------------------------------------------------------------ input

    @property
    def one_consumer(self) -> bool:
        """Whether the events of the last `receive_data` call are all deliveries of
        Basic.Deliver for one consumer (one channel, one consumer tag): the usual buffer of
        a consuming connection, which then goes to that consumer as it is.
        """
        return self._reader.one_consumer

    def receive_data(self, data: bytes) -> list[Any]:
        """Parse bytes from the broker, split anywhere.

        Args:
            data: what the socket read.

        Returns:
            The events, in wire order: `events` classes and `Delivery` records.

        Raises:
            RemoteProtocolError: malformed input, or a method the state does not allow
                (a Connection.Close is queued first when the connection was open).
        """
        reader = self._reader
        try:
            records = reader.feed(data)
        except FrameError as exc:
            error = RemoteProtocolError(f"malformed data from broker: {exc}")
            if self.state is ConnState.AWAIT_START and data[:1] in (b"\x15", b"\x16"):
                # A TLS record (alert / handshake) where Connection.Start belongs.
                error = RemoteProtocolError(
                    "the broker answered with TLS, not AMQP: use an amqps:// URL for this port"
                )
            self.abort_protocol(error)
            raise error from None
        if reader.one_consumer:
            return records  # deliveries only: nothing to check, nothing to pick out
        out: list[Any] = []
        # channel id -> its confirm tracker, for channels whose confirms all were acks
        settled: dict[int, _speedups.ConfirmTracker] | None = None
        for rec in records:
            if not isinstance(rec, tuple):  # a Delivery
                if rec.kind == _GET_OK:
                    ch = self.channels.get(rec.channel)
                    if ch is None:
                        self._fail(f"Basic.GetOk on channel {rec.channel}, which was never opened")
                    self._pop_expected(ch, "Basic.GetOk")
                out.append(rec)  # a Delivery
                continue
            kind = rec[0]
            if kind == R_CONFIRM:
                ch = self.channels.get(rec[1])
                if ch is None or ch.confirms is None:
                    self._fail(f"Basic.Ack/Nack on channel {rec[1]} without confirm mode")
                failed = ch.confirms.settle(rec[2], rec[3], rec[4])
                if failed:
                    out.append(ev.ConfirmsSettled(ch.id, ch.confirms.confirmed_through, failed))
                else:
                    if settled is None:
                        settled = {}
                    settled[ch.id] = ch.confirms
            elif kind == R_METHOD:
                # Confirms before a method keep wire order: a ChannelClosed must follow them.
                if settled:
                    self._flush_settled(settled, out)
                    settled = None
                self._method(rec[1], rec[2], out)
            elif kind == R_HEARTBEAT and rec[1] != 0:
                self._fail(f"heartbeat frame on channel {rec[1]}")
        if settled:
            self._flush_settled(settled, out)
        return out

    @staticmethod
    def _flush_settled(settled: dict[int, _speedups.ConfirmTracker], out: list[Any]) -> None:
        for channel_id, confirms in settled.items():
            out.append(ev.ConfirmsSettled(channel_id, confirms.confirmed_through, []))

    def _method(self, channel_id: int, payload: bytes, out: list[Any]) -> None:
        try:
            index = int.from_bytes(payload[:4], "big")
            method = commands.INDEX_MAPPING[index]()
            try:
                method.unmarshal(payload[4:])
            except UnicodeDecodeError:
                # A close whose reply text is not UTF-8 (RabbitMQ 3.x quotes a client's
                # bytes raw) is still a close: read it leniently rather than fail the
                # connection over its wording.
                method = _lenient_close(index, payload) or method
                if method.__class__ not in _CLOSE_METHODS:
                    raise
        except KeyError:
            self._fail(f"unknown method {payload[:4].hex()} on channel {channel_id}")
        except (PAMQPException, ValueError, IndexError, TypeError) as exc:
            self._fail(f"cannot decode method {payload[:4].hex()} on channel {channel_id}: {exc}")
        except Exception as exc:  # struct.error and friends from pamqp internals
            self._fail(f"cannot decode method {payload[:4].hex()} on channel {channel_id}: {exc}")
        try:
            if channel_id == 0:
                self._connection_method(method, out)
            else:
                self._channel_method(channel_id, index, method, out)
        except RemoteProtocolError as exc:
            # The state tables raise without telling the broker; the connection is over.
            if self.state is not ConnState.CLOSED:
                self.abort_protocol(exc)
            raise

    def _connection_method(self, method: Any, out: list[Any]) -> None:
        name = method.name
        if name == "Connection.Close":
            error: Exception = broker_error(
                method.reply_code,
                method.reply_text,
                method.class_id,
                method.method_id,
                "connection",
            )
            during_handshake = (
                self.state is not ConnState.OPEN and self.state is not ConnState.CLOSING
            )
            self.state = advance_connection(self.state, "<-Connection.Close")
            self._send(0, commands.Connection.CloseOk())
            if during_handshake and isinstance(error, AccessRefused | NotAllowed):
                error = auth_error(error, self.username, self.vhost)
            self.closed_by = error
            out.append(ev.ConnectionClosed(error))
        elif name == "Connection.CloseOk":
            self.state = advance_connection(self.state, "<-Connection.CloseOk")
            out.append(ev.ConnectionClosed(None))
        elif name == "Connection.Blocked":
            self.blocked = True
            out.append(ev.Blocked(method.reason or ""))
        elif name == "Connection.Unblocked":
            self.blocked = False
            out.append(ev.Unblocked())
        elif name == "Connection.Start":
            self.state = advance_connection(self.state, "<-Connection.Start")
            self._on_start(method)
        elif name == "Connection.Secure":
            self.state = advance_connection(self.state, "<-Connection.Secure")
            self._send(
                0,
                commands.Connection.SecureOk(
                    response=plain_response(self.username, self._password)
                ),
            )
        elif name == "Connection.Tune":
            self.state = advance_connection(self.state, "<-Connection.Tune")
            self._on_tune(method)
        elif name == "Connection.OpenOk":
            self.state = advance_connection(self.state, "<-Connection.OpenOk")
            out.append(
                ev.ConnectionOpened(
                    self.server_properties, self.channel_max, self.frame_max, self.heartbeat
                )
            )
        elif name == "Connection.UpdateSecretOk":
            pass
        else:
            self._fail(f"unexpected {name} on channel 0")

    def _on_start(self, method: Any) -> None:
        mechanisms = method.mechanisms.split() if method.mechanisms else []
        if "PLAIN" not in mechanisms:
            self._fail(f"broker offers no PLAIN authentication (it offers {method.mechanisms!r})")
        self.server_properties = dict(method.server_properties or {})
        self._send(
            0,
            commands.Connection.StartOk(
                client_properties=self._client_properties,
                mechanism="PLAIN",
                response=plain_response(self.username, self._password),
                locale="en_US",
            ),
        )

    def _on_tune(self, method: Any) -> None:
        tuned = tune(
            self.requested_channel_max, self.requested_frame_max, self.requested_heartbeat, method
        )
        self.channel_max, self.frame_max = tuned.channel_max, tuned.frame_max
        self.heartbeat = tuned.heartbeat
        self._reader.frame_max = self.frame_max
        self._send(0, commands.Connection.TuneOk(self.channel_max, self.frame_max, self.heartbeat))
        self._send(0, commands.Connection.Open(virtual_host=self.vhost))

    def _channel_method(self, channel_id: int, index: int, method: Any, out: list[Any]) -> None:
        ch = self.channels.get(channel_id)
        if ch is None:
            self._fail(f"{method.name} on channel {channel_id}, which was never opened")
        if index == _CHANNEL_CLOSE:
            ch.advance("<-Channel.Close")
            self._send(channel_id, commands.Channel.CloseOk())
            self._reader.discard_channel(channel_id)
            ch.expected.clear()
            error = broker_error(
                method.reply_code, method.reply_text, method.class_id, method.method_id
            )
            out.append(ev.ChannelClosed(channel_id, error))
        elif index == _CHANNEL_CLOSE_OK:
            ch.advance("<-Channel.CloseOk")
            self._reader.discard_channel(channel_id)
            ch.expected.clear()
            out.append(ev.ChannelClosed(channel_id, None))
        elif ch.state is ChanState.CLOSING:
            pass  # in flight before our Channel.Close; the spec says discard it
        elif index == _CHANNEL_OPEN_OK:
            self._pop_expected(ch, method.name)
            ch.advance("<-Channel.OpenOk")
            out.append(ev.ChannelOpened(channel_id))
        elif index == _BASIC_CANCEL:
            if not method.nowait:
                self._send(channel_id, commands.Basic.CancelOk(method.consumer_tag))
            out.append(ev.ConsumerCancelled(channel_id, method.consumer_tag))
        elif index == _CHANNEL_FLOW:
            self._send(channel_id, commands.Channel.FlowOk(method.active))
            out.append(ev.ChannelFlow(channel_id, method.active))
        elif index == _BASIC_GET_EMPTY:
            self._pop_expected(ch, method.name)
            out.append(ev.GetEmpty(channel_id))
        else:
            self._pop_expected(ch, method.name)
            out.append(ev.MethodReply(channel_id, method))

    def _pop_expected(self, ch: ChannelState, name: str) -> None:
        if not ch.expected or name not in ch.expected[0]:
            wanted = " or ".join(ch.expected[0]) if ch.expected else "nothing"
            self._fail(f"broker sent {name} on channel {ch.id}, expected {wanted}")
        ch.expected.popleft()

    # ------------------------------------------------------------------ helpers

    def _channel(self, channel_id: int) -> ChannelState:
        ch = self.channels.get(channel_id)
        if ch is None:
            raise LocalProtocolError(f"channel {channel_id} was never opened")
        return ch

    def _send(self, channel_id: int, method: Any) -> None:
        self._out += pamqp_frame.marshal(method, channel_id)

    def _fail(self, message: str) -> NoReturn:
        error = RemoteProtocolError(message)
        self.abort_protocol(error)
        raise error


_CLOSE_METHODS = (commands.Channel.Close, commands.Connection.Close)
_CLOSE_INDEXES: dict[int, Any] = {cls.index: cls for cls in _CLOSE_METHODS}


def _lenient_close(index: int, payload: bytes) -> Any:
    """Channel.Close or Connection.Close from `payload`, its reply text decoded with
    replacement characters; None for any other method or a malformed payload.
    """
    cls = _CLOSE_INDEXES.get(index)
    if cls is None:
        return None
    try:
        (reply_code,) = struct.unpack_from(">H", payload, 4)
        size = payload[6]
        text = payload[7 : 7 + size].decode("utf-8", "replace")
        class_id, method_id = struct.unpack_from(">HH", payload, 7 + size)
    except (struct.error, IndexError):
        return None
    return cls(reply_code=reply_code, reply_text=text, class_id=class_id, method_id=method_id)
