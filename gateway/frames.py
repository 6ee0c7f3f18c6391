"""The WebSocket's frames (`/ws`, gateway/ws.py documents the protocol): what a client sends
and what the gateway answers, as msgspec tagged unions of Structs (`"op"` is the tag).

Client frames are decoded by one Decoder built once, straight into `Subscribe`,
`Unsubscribe` or `Publish`. Every field is decoded as whatever JSON value it holds and checked
by the op's handler, so a topic of the wrong type gets the same sentence as a missing one. A
frame those Structs do not describe (a JSON-RPC request, which has no "op"; an unknown op;
fields of its own; invalid JSON) is decoded as plain JSON and judged by its value: a `Call`,
an op with its extra fields left out, or a `BadFrame` whose sentence is the answer.

Server frames are Structs encoded in the order their fields are declared; an `id` the client
sent is echoed last, and left out when it sent none.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from msgspec import UNSET, Struct

from munggoggo import envelope
from munggoggo.message import Message

from .http import decode_json

EXAMPLE = '{"op": "subscribe", "topic": "sensors.*"}'

# -- client -> gateway -----------------------------------------------------------------


class ClientFrame(Struct, tag_field="op", forbid_unknown_fields=True):
    """The fields any op may carry."""

    id: Any = UNSET  # echoed by the acknowledgement or error the frame causes
    jsonrpc: Any = UNSET  # present: the frame is a JSON-RPC request, whatever its "op"


class Subscribe(ClientFrame, tag="subscribe"):
    """Deliver messages on topics matching `topic` (`*`, `#`) to this socket; or, with
    `"presence": true` instead of a topic, the agents' presence events."""

    topic: Any = None
    presence: Any = UNSET


class Unsubscribe(ClientFrame, tag="unsubscribe"):
    """Stop a subscription; `topic` is the pattern subscribed to (or `"presence": true`)."""

    topic: Any = None
    presence: Any = UNSET


class Publish(ClientFrame, tag="publish"):
    """Publish `body` (any JSON value) to the concrete `topic`, with optional `headers`."""

    topic: Any = None
    body: Any = UNSET
    headers: Any = None


class Call(Struct, frozen=True):
    """A JSON-RPC 2.0 request or batch (it has no "op"): `body` is the frame as sent, which
    gateway/jsonrpc.py answers by the rules of POST /jsonrpc."""

    body: bytes


Op = Subscribe | Unsubscribe | Publish
Frame = Op | Call
_BY_OP: dict[str, type[Op]] = {
    str(kind.__struct_config__.tag): kind for kind in (Subscribe, Unsubscribe, Publish)
}
OPS = tuple(sorted(_BY_OP))  # the ops a client may send, as error answers list them

_decode_op = msgspec.json.Decoder(Op).decode


class BadFrame(ValueError):
    """A frame the gateway cannot serve; `message` is the answer, `id` the frame's (or UNSET)."""

    def __init__(self, message: str, id: Any = UNSET) -> None:
        super().__init__(message)
        self.message = message
        self.id = id


def decode_frame(body: bytes) -> Frame:
    """The client frame in `body` (a JSON text, already checked for size and depth).

    Raises:
        BadFrame: not valid JSON, not an object, no "op", or an unknown one.
    """
    try:
        frame = _decode_op(body)
    except msgspec.DecodeError:
        # Not an op as its Struct describes it: what the JSON value is decides the answer
        # (the plain decoder also checks what the Struct's decoder skips over).
        return decode_frame_plain(body)
    if frame.jsonrpc is not UNSET:
        return Call(body)
    return frame


def decode_frame_plain(body: bytes) -> Frame:
    """What `decode_frame` answers, from a plain JSON decode of `body`: its path for the
    frames the op Structs do not describe, and the reference it agrees with on every input.

    Raises:
        BadFrame: as `decode_frame`.
    """
    try:
        value = decode_json(body)
    except msgspec.DecodeError as exc:
        raise BadFrame(f"that frame is not valid JSON ({exc}); send e.g. {EXAMPLE}") from None
    if isinstance(value, list) or (isinstance(value, dict) and "jsonrpc" in value):
        return Call(body)
    if not isinstance(value, dict):
        raise BadFrame("send a JSON object such as " + EXAMPLE)
    op = value.get("op")
    kind = _BY_OP.get(op) if isinstance(op, str) else None
    if kind is None:
        ops = ", ".join(OPS)
        if op is None:
            raise BadFrame(f'a frame needs an "op" ({ops}) or must be JSON-RPC 2.0')
        raise BadFrame(f"unknown op {op!r}: use one of {ops}", value.get("id", UNSET))
    # A known op with fields of its own besides: those are ignored.
    return kind(**{name: value[name] for name in kind.__struct_fields__ if name in value})


# -- gateway -> client -----------------------------------------------------------------


class ServerFrame(Struct, tag_field="op", omit_defaults=True):
    """A frame the gateway sends."""


class Subscribed(ServerFrame, tag="subscribed"):
    topic: str
    id: Any = UNSET


class Unsubscribed(ServerFrame, tag="unsubscribed"):
    topic: str
    id: Any = UNSET


# The acknowledgements of a presence (un)subscription: the same ops, about presence.
class PresenceSubscribed(ServerFrame, tag="subscribed"):
    """`{"op": "subscribed", "presence": true}`: presence events follow."""

    presence: bool  # always true (a default would be left out of the frame)
    id: Any = UNSET


class PresenceUnsubscribed(ServerFrame, tag="unsubscribed"):
    """`{"op": "unsubscribed", "presence": true}`: no more presence events."""

    presence: bool  # always true
    id: Any = UNSET


class Published(ServerFrame, tag="published"):
    """The broker took a publish that carried an id."""

    topic: str
    id: Any = UNSET


class ErrorFrame(ServerFrame, tag="error"):
    error: str  # a sentence for a person
    id: Any = UNSET


class Dropped(ServerFrame, tag="dropped"):
    """`count` messages were dropped here (the client's buffer was full)."""

    count: int


class MessageFrame(ServerFrame, tag="message"):
    """A mesh message on a subscribed topic. `body`: the decoded JSON (or msgpack) value,
    else the text; a body that is not UTF-8 is base64 with `encoding` "base64"."""

    topic: str
    sender: str | None
    body: Any
    encoding: str | None = None


class PresenceFrame(ServerFrame, tag="presence"):
    """An agent of the mesh started or stopped (`state` "started" or "stopped"), sent to the
    sockets subscribed to presence."""

    identity: str
    state: str


_encode = msgspec.json.Encoder().encode


def encode(frame: ServerFrame) -> str:
    """A server frame as the text of a WebSocket message."""
    return _encode(frame).decode()


# The last message encoded: the mesh hands the same Message to every subscribed client in
# turn, so 50 clients cost one encoding, not 50.
_cached_message: Message | None = None
_cached_encoding: tuple[str, int] = ("", 0)


def encoded_message(msg: Message) -> tuple[str, int]:
    """The `{"op": "message", ...}` frame for a mesh message and its size in bytes (UTF-8,
    what the client's buffer is bounded by). The last one is cached."""
    global _cached_message, _cached_encoding
    if msg is _cached_message:
        return _cached_encoding
    body, encoding = _body_value(msg)
    data = _encode(MessageFrame(msg.routing_key, msg.sender, body, encoding))
    _cached_encoding = (data.decode(), len(data))
    _cached_message = msg
    return _cached_encoding


def message_frame(msg: Message) -> str:
    """The `{"op": "message", ...}` text frame for a mesh message (cached like
    `encoded_message`)."""
    return encoded_message(msg)[0]


def _body_value(msg: Message) -> tuple[Any, str | None]:
    raw = msg.body
    content_type = msg.content_type
    if content_type is None:
        # Plain AMQP clients often send JSON without saying so.
        try:
            return decode_json(raw), None
        except (msgspec.DecodeError, UnicodeDecodeError):
            value: Any = raw
    else:
        try:
            value = msg.decode()
        except envelope.DecodeError:
            value = bytes(raw)
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8"), None
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii"), "base64"
    return value, None
