"""Pure-Python twin of the AMQP 0-9-1 hot paths.

Owns what every message passes through: splitting a byte stream into frames, assembling
deliveries (method + content header + body frames) into records, the basic-properties and
field-table codec, and packing publishes from pre-encoded method frames.

Written to be Cython-friendly: the compiled twin (`_frames.pyx`) keeps the same names and
behaviour, and tests hold both to identical output. Standard library only.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, NoReturn, Self

from ._errors import MunggoggoError

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_OVERHEAD = 8  # 7-byte header + frame-end octet
# RabbitMQ itself sends content header frames over frame_max: dead-lettering adds an
# x-death table to headers that were already close to the limit, and a header cannot be
# split. Such a frame is read (up to this much over the limit) rather than taken for a
# broken stream, which would drop the connection and get the same message again.
HEADER_SLACK = 65536

# Record kinds produced by FrameReader.feed (Delivery objects are records of their own).
R_METHOD = 0
R_CONFIRM = 1
R_HEARTBEAT = 2

# Delivery kinds: content-carrying methods of class Basic.
DELIVER = 0
GET_OK = 1
RETURN = 2

HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

_BASIC = 60
_FRAME_HEAD = struct.Struct(">BHI")
_CLASS_METHOD = struct.Struct(">HH")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_I8 = struct.Struct(">b")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_CONTENT_HEAD = struct.Struct(">HHQH")  # class, weight, body size, property flags


# Field tables and arrays nested deeper than this are refused (FrameError on decode,
# ValueError on encode): far below the interpreter's recursion limit, far above any real
# use, and one message's headers must never be able to exhaust the parser's stack.
MAX_TABLE_DEPTH = 64

# A content header frame is its 7-byte frame header, class id, weight and body size
# (12 bytes), the encoded properties, and the frame-end octet.
CONTENT_HEADER_OVERHEAD = 20
# Basic.Publish method frames a ChannelPublisher keeps (routing keys may be unbounded).
MAX_CACHED_FRAMES = 4096
# Property flags of the fields that change from one message to the next by nature: a header
# table, a correlation id, a message id. A FrameReader hands out one Properties object for
# consecutive deliveries whose encoded properties are identical, unless they hold one.
PER_MESSAGE_FLAGS = 0x2000 | 0x0400 | 0x0080


class FrameError(MunggoggoError, ValueError):
    """The peer sent bytes that are not valid AMQP 0-9-1 framing."""


class PropertiesTooLarge(MunggoggoError, ValueError):
    """A publish's encoded properties do not fit one content header frame of frame_max.

    AMQP 0-9-1 cannot split a content header over frames: the broker would close the
    connection with 501 FRAME_ERROR, so the publish is refused before anything is sent.
    `size` is the content header frame's size in bytes, `frame_max` the negotiated limit.

    Args:
        size: the content header frame's size, in bytes.
        frame_max: the connection's negotiated frame_max.

    Attributes:
        size: the content header frame's size, in bytes.
        frame_max: the connection's negotiated frame_max.
    """

    def __init__(self, size: int, frame_max: int) -> None:
        self.size = size
        self.frame_max = frame_max
        super().__init__(
            f"message properties (headers included) need a content header frame of {size} "
            f"bytes, more than the negotiated frame_max of {frame_max} bytes"
        )

    def __reduce__(self) -> tuple[type[PropertiesTooLarge], tuple[int, int]]:
        # Exception pickles its message alone; rebuild from the sizes instead.
        return (type(self), (self.size, self.frame_max))


def check_header_fits(properties_len: int, frame_max: int) -> None:
    """Raise PropertiesTooLarge when `properties_len` encoded property bytes do not fit
    one content header frame of `frame_max` bytes (0 means no limit)."""
    if frame_max and properties_len + CONTENT_HEADER_OVERHEAD > frame_max:
        raise PropertiesTooLarge(properties_len + CONTENT_HEADER_OVERHEAD, frame_max)


PROPERTY_NAMES = (
    "app_id",
    "cluster_id",
    "content_encoding",
    "content_type",
    "correlation_id",
    "delivery_mode",
    "expiration",
    "headers",
    "message_id",
    "priority",
    "reply_to",
    "timestamp",
    "type",
    "user_id",
)


class Properties:
    """AMQP basic properties, as they travel on the wire."""

    __slots__ = (
        "app_id",
        "cluster_id",
        "content_encoding",
        "content_type",
        "correlation_id",
        "delivery_mode",
        "expiration",
        "headers",
        "message_id",
        "priority",
        "reply_to",
        "timestamp",
        "type",
        "user_id",
    )

    def __init__(
        self,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery_mode: int | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: str | None = None,
        message_id: str | None = None,
        timestamp: int | None = None,
        type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.type = type
        self.user_id = user_id
        self.app_id = app_id
        self.cluster_id = cluster_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Properties):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in PROPERTY_NAMES)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{n}={getattr(self, n)!r}" for n in PROPERTY_NAMES if getattr(self, n) is not None
        )
        return f"Properties({fields})"


class Delivery:
    """One assembled message: Basic.Deliver, Basic.GetOk or Basic.Return with its content.

    `properties_raw` is the encoded properties exactly as received (property flags and
    fields), kept when they hold a header table (or the broker is memory://), else None:
    a copy of the message (a retry, a dead letter) carries that table on byte for byte
    instead of re-encoding what was decoded (which would change types, or fail).

    `properties_error` is None for a normal delivery. When the content header's properties
    could not be decoded (headers nested deeper than MAX_TABLE_DEPTH, an unknown field
    type, ...) it holds the reason, and `properties` is an empty Properties: the message
    is still delivered (its delivery tag can be acked or rejected), only its properties
    are unknown. One message's content never costs the connection.
    """

    __slots__ = (
        "body",
        "channel",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "kind",
        "message_count",
        "properties",
        "properties_error",
        "properties_raw",
        "redelivered",
        "reply_code",
        "reply_text",
        "routing_key",
    )

    def __init__(self, channel: int, kind: int) -> None:
        self.channel = channel
        self.kind = kind
        self.consumer_tag = ""
        self.delivery_tag = 0
        self.redelivered = False
        self.exchange = ""
        self.routing_key = ""
        # Set by the content header, before the delivery is handed out.
        self.properties: Properties = None  # type: ignore[assignment]
        self.properties_error: str | None = None
        self.properties_raw: bytes | None = None
        self.body = b""
        self.reply_code = 0
        self.reply_text = ""
        self.message_count = 0

    def __repr__(self) -> str:
        return (
            f"Delivery(channel={self.channel}, kind={self.kind}, tag={self.delivery_tag}, "
            f"exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"body={self.body[:32]!r}{'...' if len(self.body) > 32 else ''})"
        )


# --------------------------------------------------------------------------- decoding


def _shortstr(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data):
        raise FrameError("short string runs past the end of its frame")
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise FrameError("short string runs past the end of its frame")
    return data[pos + 1 : end].decode("utf-8", "surrogateescape"), end


def _bounded_shortstr(data: bytes, pos: int, end: int) -> tuple[str, int]:
    """A short string that must end by `end` (the end of its frame)."""
    if pos >= end or pos + 1 + data[pos] > end:
        raise FrameError("short string runs past the end of its frame")
    stop = pos + 1 + data[pos]
    return data[pos + 1 : stop].decode("utf-8", "surrogateescape"), stop


def _longstr(data: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = _U32.unpack_from(data, pos)
    end = pos + 4 + n
    if end > len(data):
        raise FrameError("long string runs past the end of its frame")
    return data[pos + 4 : end], end


def _field_value(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    kind = data[pos]
    pos += 1
    if kind == 0x53:  # S long string
        raw, pos = _longstr(data, pos)
        try:
            return raw.decode("utf-8"), pos
        except UnicodeDecodeError:
            return raw, pos
    if kind == 0x49:  # I signed 32
        return _I32.unpack_from(data, pos)[0], pos + 4
    if kind == 0x74:  # t boolean
        return data[pos] != 0, pos + 1
    if kind == 0x46:  # F table
        return _table(data, pos, depth + 1)
    if kind == 0x6C:  # l signed 64
        return _I64.unpack_from(data, pos)[0], pos + 8
    if kind == 0x41:  # A array
        if depth >= MAX_TABLE_DEPTH:
            raise FrameError(_too_deep())
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        end = pos + n
        if end > len(data):
            raise FrameError("field array runs past the end of its frame")
        items = []
        while pos < end:
            value, pos = _field_value(data, pos, depth + 1)
            items.append(value)
        if pos != end:
            raise FrameError("field array length does not match its content")
        return items, pos
    if kind == 0x54:  # T timestamp (seconds)
        return _U64.unpack_from(data, pos)[0], pos + 8
    if kind == 0x56:  # V void
        return None, pos
    if kind == 0x62:  # b signed 8
        return _I8.unpack_from(data, pos)[0], pos + 1
    if kind == 0x42:  # B unsigned 8
        return data[pos], pos + 1
    if kind == 0x73:  # s signed 16
        return _I16.unpack_from(data, pos)[0], pos + 2
    if kind == 0x75:  # u unsigned 16
        return _U16.unpack_from(data, pos)[0], pos + 2
    if kind == 0x69:  # i unsigned 32
        return _U32.unpack_from(data, pos)[0], pos + 4
    if kind == 0x66:  # f float
        return _F32.unpack_from(data, pos)[0], pos + 4
    if kind == 0x64:  # d double
        return _F64.unpack_from(data, pos)[0], pos + 8
    if kind == 0x44:  # D decimal: scale octet + signed 32; kept as a float-free tuple
        scale = data[pos]
        (value,) = _I32.unpack_from(data, pos + 1)
        return (scale, value), pos + 5
    if kind == 0x78:  # x byte array
        return _longstr(data, pos)
    raise FrameError(f"unknown field table value type {kind!r}")


def _too_deep() -> str:
    return f"field tables or arrays nested deeper than {MAX_TABLE_DEPTH} levels"


def _table(data: bytes, pos: int, depth: int = 0) -> tuple[dict[str, Any], int]:
    """Decode the field table at `pos`; `depth` counts the tables and arrays around it."""
    if depth > MAX_TABLE_DEPTH:
        raise FrameError(_too_deep())
    (n,) = _U32.unpack_from(data, pos)
    pos += 4
    end = pos + n
    if end > len(data):
        raise FrameError("field table runs past the end of its frame")
    table = {}
    while pos < end:
        key, pos = _shortstr(data, pos)
        table[key], pos = _field_value(data, pos, depth)
    if pos != end:
        raise FrameError("field table length does not match its content")
    return table, pos


def decode_table(data: bytes) -> dict[str, Any]:
    """Decode a complete encoded field table (length prefix included) into a dict."""
    try:
        table, _ = _table(data, 0)
    except (struct.error, IndexError) as exc:
        raise FrameError(f"truncated field table: {exc}") from None
    return table


def _decode_properties(data: bytes, pos: int, flags: int) -> tuple[Properties, int]:
    props = Properties()
    if flags & 0x8000:
        props.content_type, pos = _shortstr(data, pos)
    if flags & 0x4000:
        props.content_encoding, pos = _shortstr(data, pos)
    end = len(data)
    if flags & 0x2000:
        if pos + 4 > end:
            raise FrameError("truncated content header: field table")
        props.headers, pos = _table(data, pos)
    if flags & 0x1000:
        if pos + 1 > end:
            raise FrameError("truncated content header: delivery mode")
        props.delivery_mode = data[pos]
        pos += 1
    if flags & 0x0800:
        if pos + 1 > end:
            raise FrameError("truncated content header: priority")
        props.priority = data[pos]
        pos += 1
    if flags & 0x0400:
        props.correlation_id, pos = _shortstr(data, pos)
    if flags & 0x0200:
        props.reply_to, pos = _shortstr(data, pos)
    if flags & 0x0100:
        props.expiration, pos = _shortstr(data, pos)
    if flags & 0x0080:
        props.message_id, pos = _shortstr(data, pos)
    if flags & 0x0040:
        if pos + 8 > end:
            raise FrameError("truncated content header: timestamp")
        (props.timestamp,) = _U64.unpack_from(data, pos)
        pos += 8
    if flags & 0x0020:
        props.type, pos = _shortstr(data, pos)
    if flags & 0x0010:
        props.user_id, pos = _shortstr(data, pos)
    if flags & 0x0008:
        props.app_id, pos = _shortstr(data, pos)
    if flags & 0x0004:
        props.cluster_id, pos = _shortstr(data, pos)
    return props, pos


def decode_properties(payload: bytes) -> tuple[int, Properties]:
    """Decode a content-header payload (class, weight, size, flags, properties).

    Returns (body_size, Properties).
    """
    if len(payload) < _CONTENT_HEAD.size:
        raise FrameError("truncated content header: shorter than its fixed fields")
    try:
        class_id, _weight, body_size, flags = _CONTENT_HEAD.unpack_from(payload, 0)
        if class_id != _BASIC:
            raise FrameError(f"content header for class {class_id}, expected Basic (60)")
        if flags & 1:
            raise FrameError("property flags continuation is not used by class Basic")
        props, pos = _decode_properties(payload, _CONTENT_HEAD.size, flags)
    except (struct.error, IndexError) as exc:
        raise FrameError(f"truncated content header: {exc}") from None
    if pos != len(payload):
        raise FrameError("content header length does not match its properties")
    return body_size, props


# --------------------------------------------------------------------------- reader

# What FrameReader.feed returns: a Delivery, or a (R_..., channel, ...) tuple.
_Record = Delivery | tuple[Any, ...]


def _one_consumer(records: list[_Record]) -> bool:
    """Whether `records` (not empty) are all Basic.Deliver deliveries of one channel and
    one consumer tag."""
    if not records:
        return False
    first = records[0]
    if not isinstance(first, Delivery) or first.kind != DELIVER:
        return False
    return all(
        isinstance(d, Delivery)
        and d.kind == DELIVER
        and d.channel == first.channel
        and d.consumer_tag == first.consumer_tag
        for d in records
    )


class FrameReader:
    """Turns a byte stream into records, keeping partial frames and content between calls.

    `feed(data)` returns a list, in wire order, of:
      - Delivery objects (deliver / get-ok / return, body fully assembled),
      - (R_CONFIRM, channel, delivery_tag, multiple, is_nack) for broker Basic.Ack/Nack,
      - (R_HEARTBEAT, channel),
      - (R_METHOD, channel, payload) for every other method frame (payload starts with
        class and method ids; the protocol layer decodes these rare ones with pamqp).

    Deliveries whose encoded properties are identical to the last ones decoded share one
    `Properties` object (read it, never change it), unless they hold one of the
    PER_MESSAGE_FLAGS fields: a stream of messages from one publisher decodes its
    properties once.
    """

    def __init__(self, frame_max: int = 131072) -> None:
        self.frame_max = frame_max
        self._buf = b""
        # channel -> [Delivery, body_size or -1, chunks, received]
        self._partial: dict[int, list[Any]] = {}
        # Whether the records of the last feed() are all Basic.Deliver deliveries for one
        # consumer (one channel, one consumer tag): the connection then hands them on as
        # they are, without sorting them one by one (read through `one_consumer`).
        self._last_one_consumer = False
        # The last properties decoded that may be shared (see PER_MESSAGE_FLAGS), and their
        # encoded bytes (flags onwards): identical bytes give that same object again.
        self._last_encoded: bytes | None = None
        self._last_properties: Properties | None = None

    def pending_content(self) -> list[int]:
        """Channels with a delivery still waiting for its header or body frames."""
        return sorted(self._partial)

    def discard_channel(self, channel: int) -> None:
        """Forget partial content of a channel that was closed."""
        self._partial.pop(channel, None)

    def feed(self, data: bytes) -> list[_Record]:
        if self._buf:
            data = self._buf + data
        n = len(data)
        pos = 0
        out: list[_Record] = []
        frame_limit = self.frame_max
        try:
            while n - pos >= 7:
                ftype, channel, size = _FRAME_HEAD.unpack_from(data, pos)
                if ftype == 0x41 and data[pos : pos + 4] == b"AMQP":
                    raise FrameError(
                        "the peer rejected AMQP 0-9-1 and answered with protocol header "
                        + repr(bytes(data[pos : pos + 8]))
                    )
                if (
                    frame_limit
                    and size + FRAME_OVERHEAD > frame_limit
                    and (
                        ftype != FRAME_HEADER or size + FRAME_OVERHEAD > frame_limit + HEADER_SLACK
                    )
                ):
                    raise FrameError(
                        f"frame of {size + FRAME_OVERHEAD} bytes exceeds frame_max {frame_limit}"
                    )
                end = pos + 7 + size
                if end >= n:
                    break
                if data[end] != FRAME_END:
                    raise FrameError(f"frame end octet is {data[end]:#04x}, expected 0xce")
                start = pos + 7
                if ftype == FRAME_METHOD:
                    self._method(data, start, end, channel, out)
                elif ftype == FRAME_BODY:
                    self._body(data[start:end], channel, out)
                elif ftype == FRAME_HEADER:
                    self._header(data[start:end], channel, out)
                elif ftype == FRAME_HEARTBEAT:
                    out.append((R_HEARTBEAT, channel))
                else:
                    raise FrameError(f"unknown frame type {ftype}")
                pos = end + 1
        except (struct.error, IndexError) as exc:
            raise FrameError(f"malformed frame: {exc}") from None
        self._buf = data[pos:]
        self._last_one_consumer = _one_consumer(out)
        return out

    @property
    def one_consumer(self) -> bool:
        """Whether the records of the last feed() are all Basic.Deliver deliveries for
        one consumer (one channel, one consumer tag)."""
        return self._last_one_consumer

    def _method(self, data: bytes, start: int, end: int, channel: int, out: list[_Record]) -> None:
        # Every field is read within [start, end): a short string may not run into the
        # next frame. The checks and messages match the compiled twin's one for one.
        if end - start < 4:
            raise FrameError("method frame shorter than its class and method ids")
        class_id, method_id = _CLASS_METHOD.unpack_from(data, start)
        if class_id == _BASIC:
            pos = start + 4
            if method_id == 60:  # deliver
                self._expect_no_content(channel)
                d = Delivery(channel, DELIVER)
                d.consumer_tag, pos = _bounded_shortstr(data, pos, end)
                if pos + 9 > end:
                    raise FrameError("Basic.Deliver frame length does not match its fields")
                (d.delivery_tag,) = _U64.unpack_from(data, pos)
                d.redelivered = data[pos + 8] & 1 == 1
                d.exchange, pos = _bounded_shortstr(data, pos + 9, end)
                d.routing_key, pos = _bounded_shortstr(data, pos, end)
                self._check_end(pos, end, "Basic.Deliver")
                self._partial[channel] = [d, -1, [], 0]
                return
            if method_id == 80 or method_id == 120:  # ack / nack from the broker (confirms)
                if end - pos != 9:
                    raise FrameError("Basic.Ack frame length does not match its fields")
                (tag,) = _U64.unpack_from(data, pos)
                out.append((R_CONFIRM, channel, tag, data[pos + 8] & 1 == 1, method_id == 120))
                return
            if method_id == 71:  # get-ok
                self._expect_no_content(channel)
                d = Delivery(channel, GET_OK)
                if pos + 9 > end:
                    raise FrameError("Basic.GetOk frame length does not match its fields")
                (d.delivery_tag,) = _U64.unpack_from(data, pos)
                d.redelivered = data[pos + 8] & 1 == 1
                d.exchange, pos = _bounded_shortstr(data, pos + 9, end)
                d.routing_key, pos = _bounded_shortstr(data, pos, end)
                if pos + 4 != end:
                    raise FrameError("Basic.GetOk frame length does not match its fields")
                (d.message_count,) = _U32.unpack_from(data, pos)
                self._partial[channel] = [d, -1, [], 0]
                return
            if method_id == 50:  # return
                self._expect_no_content(channel)
                d = Delivery(channel, RETURN)
                if pos + 2 > end:
                    raise FrameError("Basic.Return frame length does not match its fields")
                (d.reply_code,) = _U16.unpack_from(data, pos)
                d.reply_text, pos = _bounded_shortstr(data, pos + 2, end)
                d.exchange, pos = _bounded_shortstr(data, pos, end)
                d.routing_key, pos = _bounded_shortstr(data, pos, end)
                self._check_end(pos, end, "Basic.Return")
                self._partial[channel] = [d, -1, [], 0]
                return
        out.append((R_METHOD, channel, data[start:end]))

    @staticmethod
    def _check_end(pos: int, end: int, name: str) -> None:
        if pos != end:
            raise FrameError(f"{name} frame length does not match its fields")

    def _expect_no_content(self, channel: int) -> None:
        if channel in self._partial:
            raise FrameError(f"channel {channel}: new content method before the last one completed")

    def _header(self, payload: bytes, channel: int, out: list[_Record]) -> None:
        state = self._partial.get(channel)
        if state is None or state[1] != -1:
            raise FrameError(f"channel {channel}: unexpected content header frame")
        # The fixed fields frame the content: without them the stream cannot go on. The
        # properties only concern this message: if they cannot be decoded, the delivery
        # still goes out, marked, so that it can be settled as one bad message.
        if len(payload) < _CONTENT_HEAD.size:
            raise FrameError("truncated content header: shorter than its fixed fields")
        class_id, _weight, body_size, flags = _CONTENT_HEAD.unpack_from(payload, 0)
        if class_id != _BASIC:
            raise FrameError(f"content header for class {class_id}, expected Basic (60)")
        if flags & 1:
            raise FrameError("property flags continuation is not used by class Basic")
        if flags & 0x2000:  # a header table: keep it as it came, for copies
            state[0].properties_raw = payload[12:]
        encoded = None if flags & PER_MESSAGE_FLAGS else bytes(payload[12:])
        try:
            if encoded is not None and encoded == self._last_encoded:
                state[0].properties = self._last_properties
            else:
                state[0].properties = decode_properties(payload)[1]
                if encoded is not None:
                    self._last_encoded = encoded
                    self._last_properties = state[0].properties
        except FrameError as exc:
            state[0].properties = Properties()
            state[0].properties_error = str(exc)
        if body_size == 0:
            del self._partial[channel]
            out.append(state[0])
        else:
            state[1] = body_size

    def _body(self, payload: bytes, channel: int, out: list[_Record]) -> None:
        state = self._partial.get(channel)
        if state is None or state[1] == -1:
            raise FrameError(f"channel {channel}: unexpected content body frame")
        received = state[3] + len(payload)
        if received > state[1]:
            raise FrameError(
                f"channel {channel}: body frames carry {received} bytes, header said {state[1]}"
            )
        if received == state[1]:
            d = state[0]
            if state[2]:
                state[2].append(payload)
                d.body = b"".join(state[2])
            else:
                d.body = payload
            del self._partial[channel]
            out.append(d)
        else:
            state[2].append(payload)
            state[3] = received


# --------------------------------------------------------------------------- encoding


def _enc_shortstr(value: str | bytes) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if len(raw) > 255:
        raise ValueError(f"short string longer than 255 bytes: {raw[:40]!r}...")
    return _U8.pack(len(raw)) + raw


def _enc_field_value(value: Any, depth: int) -> bytes:
    if value is None:
        return b"V"
    if value is True or value is False:
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            return b"I" + _I32.pack(value)
        if -(1 << 63) <= value < (1 << 63):
            return b"l" + _I64.pack(value)
        raise ValueError(f"integer {value} does not fit a 64-bit field")
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"S" + _U32.pack(len(raw)) + raw
    if isinstance(value, float):
        return b"d" + _F64.pack(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"x" + _U32.pack(len(raw)) + raw
    if isinstance(value, dict):
        return b"F" + _enc_table(value, depth + 1)
    if isinstance(value, list | tuple):
        if depth >= MAX_TABLE_DEPTH:
            raise ValueError(_too_deep())
        items = b"".join([_enc_field_value(v, depth + 1) for v in value])
        return b"A" + _U32.pack(len(items)) + items
    raise ValueError(f"cannot encode {type(value).__name__} in an AMQP field table")


class EncodedTable(dict[str, Any]):
    """A header table that travels as `wire`, its exact encoding (length prefix included),
    while it reads as the dict of its decoded values.

    Copies of received messages carry their headers this way: every field keeps the type
    and bytes it came with (a decimal, a uint16, a timestamp beyond 2^63, a string that is
    not UTF-8), which decoding and re-encoding would change or refuse. Read-only: a change
    would not reach the wire, so changing it raises TypeError; build a new one instead.
    """

    __slots__ = ("wire",)

    def __init__(self, values: Mapping[str, Any], wire: bytes) -> None:
        dict.__init__(self, values)
        self.wire = bytes(wire)

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("an EncodedTable is read-only: its wire form would not change")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    def __repr__(self) -> str:
        return f"EncodedTable({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[type[EncodedTable], tuple[dict[str, Any], bytes]]:
        return (EncodedTable, (dict(self), self.wire))

    def __copy__(self) -> Self:
        return self  # read-only: a copy would be the same

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self


def encode_table(table: Mapping[str, Any]) -> bytes:
    """Encode a dict as an AMQP field table, length prefix included.

    An EncodedTable is sent as its `wire` bytes, unchanged.

    Raises ValueError for a value the wire cannot carry, and for tables or arrays nested
    deeper than MAX_TABLE_DEPTH (what no munggoggo peer would decode).
    """
    if type(table) is EncodedTable:
        return table.wire
    return _enc_table(table, 0)


def _enc_table(table: Mapping[str, Any], depth: int) -> bytes:
    if depth > MAX_TABLE_DEPTH:
        raise ValueError(_too_deep())
    if not table:
        return b"\x00\x00\x00\x00"
    parts = []
    for key, value in table.items():
        parts.append(_enc_shortstr(key))
        parts.append(_enc_field_value(value, depth))
    raw = b"".join(parts)
    return _U32.pack(len(raw)) + raw


def encode_properties(props: Properties | None) -> bytes:
    """Encode Properties as property flags followed by the present fields.

    Raises ValueError for values the wire cannot carry (priority > 255, a negative
    timestamp, a short string over 255 bytes, an unencodable header value).
    """
    if props is None:
        return b"\x00\x00"
    try:
        return _encode_properties(props)
    except struct.error as exc:
        raise ValueError(f"property out of range for AMQP: {exc}") from None


def _encode_properties(props: Properties) -> bytes:
    flags = 0
    parts = [b""]
    if props.content_type is not None:
        flags |= 0x8000
        parts.append(_enc_shortstr(props.content_type))
    if props.content_encoding is not None:
        flags |= 0x4000
        parts.append(_enc_shortstr(props.content_encoding))
    if props.headers is not None:
        flags |= 0x2000
        parts.append(encode_table(props.headers))
    if props.delivery_mode is not None:
        flags |= 0x1000
        parts.append(_U8.pack(props.delivery_mode))
    if props.priority is not None:
        flags |= 0x0800
        parts.append(_U8.pack(props.priority))
    if props.correlation_id is not None:
        flags |= 0x0400
        parts.append(_enc_shortstr(props.correlation_id))
    if props.reply_to is not None:
        flags |= 0x0200
        parts.append(_enc_shortstr(props.reply_to))
    if props.expiration is not None:
        flags |= 0x0100
        parts.append(_enc_shortstr(props.expiration))
    if props.message_id is not None:
        flags |= 0x0080
        parts.append(_enc_shortstr(props.message_id))
    if props.timestamp is not None:
        flags |= 0x0040
        parts.append(_U64.pack(props.timestamp))
    if props.type is not None:
        flags |= 0x0020
        parts.append(_enc_shortstr(props.type))
    if props.user_id is not None:
        flags |= 0x0010
        parts.append(_enc_shortstr(props.user_id))
    if props.app_id is not None:
        flags |= 0x0008
        parts.append(_enc_shortstr(props.app_id))
    if props.cluster_id is not None:
        flags |= 0x0004
        parts.append(_enc_shortstr(props.cluster_id))
    parts[0] = _U16.pack(flags)
    return b"".join(parts)


def publish_method_frame(
    channel: int, exchange: str, routing_key: str, mandatory: bool = False
) -> bytes:
    """A complete Basic.Publish method frame; callers cache it per (exchange, routing key)."""
    payload = (
        b"\x00\x3c\x00\x28\x00\x00"  # class 60, method 40, reserved ticket
        + _enc_shortstr(exchange)
        + _enc_shortstr(routing_key)
        + (b"\x01" if mandatory else b"\x00")
    )
    return _FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


def pack_publish(
    method_frame: bytes, channel: int, properties: bytes, body: bytes, frame_max: int
) -> bytes:
    """Frames of one publish: the cached method frame, a content header, body frames.

    `properties` is the output of encode_properties (flags included); bodies larger
    than frame_max are split into several body frames. Raises PropertiesTooLarge when the
    content header frame alone exceeds frame_max (it cannot be split), TypeError when
    `method_frame` or `properties` is not bytes (as the compiled version does).
    """
    if type(properties) is not bytes or type(method_frame) is not bytes:
        raise TypeError(
            "method_frame and properties must be bytes, got "
            f"{type(method_frame).__name__} and {type(properties).__name__}"
        )
    if frame_max and len(properties) + CONTENT_HEADER_OVERHEAD > frame_max:
        check_header_fits(len(properties), frame_max)
    size = len(body)
    header_len = 12 + len(properties)
    parts: list[bytes | memoryview] = [
        method_frame,
        _FRAME_HEAD.pack(FRAME_HEADER, channel, header_len),
        b"\x00\x3c\x00\x00",
        _U64.pack(size),
        properties,
        b"\xce",
    ]
    chunk = frame_max - FRAME_OVERHEAD if frame_max else size
    if size <= chunk:
        if size:
            parts.append(_FRAME_HEAD.pack(FRAME_BODY, channel, size))
            parts.append(body)
            parts.append(b"\xce")
    else:
        view = memoryview(body)
        for start in range(0, size, chunk):
            piece = view[start : start + chunk]
            parts.append(_FRAME_HEAD.pack(FRAME_BODY, channel, len(piece)))
            parts.append(piece)
            parts.append(b"\xce")
    return b"".join(parts)


class ChannelPublisher:
    """Basic.Publish on one channel of one connection in one call.

    The method frame is cached per (exchange, routing key, mandatory), up to
    `MAX_CACHED_FRAMES` of them; the publish's frames (`pack_publish`) are appended to the
    connection's out buffer, and the channel's ConfirmTracker (`confirms`, once confirm mode
    was asked for) numbers them. The connection keeps `is_open` in step with the channel's
    state: nothing is queued on a channel that is not open.

    Args:
        channel: the channel number.
        out: the connection's out buffer (appended to; the connection owns it).
        frame_max: the negotiated frame_max (bodies are split to fit it).
    """

    __slots__ = ("_frames", "_out", "channel", "confirms", "frame_max", "is_open")

    def __init__(self, channel: int, out: bytearray, frame_max: int) -> None:
        self.channel = channel
        self._out = out
        self._frames: dict[tuple[str, str, bool], bytes] = {}
        self.frame_max = frame_max
        self.is_open = False
        self.confirms: Any = None

    def publish(
        self,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
        mandatory: bool = False,
    ) -> int:
        """Queue one publish.

        Args:
            exchange: the exchange ("": the default exchange).
            routing_key: the routing key.
            properties: the basic properties, pre-encoded (`encode_properties`).
            body: the message body.
            mandatory: have the broker return it when no queue takes it.

        Returns:
            Its confirm sequence number (0 without confirms), or -1 when the channel is
            not open (nothing is queued then).

        Raises:
            PropertiesTooLarge: the properties do not fit one content header frame.
            TypeError: `properties` is not bytes, or an exchange or routing key is None.
            ValueError: an exchange or routing key longer than 255 bytes.
        """
        if not self.is_open:
            return -1
        key = (exchange, routing_key, mandatory)
        method_frame = self._frames.get(key)
        if method_frame is None:
            method_frame = publish_method_frame(self.channel, exchange, routing_key, mandatory)
            if len(self._frames) < MAX_CACHED_FRAMES:
                self._frames[key] = method_frame
        data = pack_publish(method_frame, self.channel, properties, body, self.frame_max)
        self._out += data
        confirms = self.confirms
        if confirms is not None:
            seq: int = confirms.add(data)
            return seq
        return 0


def pack_ack(
    channel: int, delivery_tag: int, multiple: bool, nack: bool = False, requeue: bool = True
) -> bytes:
    """A Basic.Ack (or Basic.Nack) method frame from the client."""
    if nack:
        bits = (1 if multiple else 0) | (2 if requeue else 0)
        return (
            b"\x01"
            + _U16.pack(channel)
            + b"\x00\x00\x00\x0d\x00\x3c\x00\x78"
            + _U64.pack(delivery_tag)
            + _U8.pack(bits)
            + b"\xce"
        )
    return (
        b"\x01"
        + _U16.pack(channel)
        + b"\x00\x00\x00\x0d\x00\x3c\x00\x50"
        + _U64.pack(delivery_tag)
        + (b"\x01" if multiple else b"\x00")
        + b"\xce"
    )
