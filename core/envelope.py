"""The codec layer between user values and AMQP messages.

This module owns two translations of the wire contract:

* message metadata: `Meta` (what the runtime talks about: sender, kind, correlation id, ...)
  to and from the wire-level `munggoggo._speedups.Properties` (AMQP basic properties);
* message bodies: `encode_body` turns bytes, str or any msgspec-encodable value into
  ``(body, content_type)``; `decode_body` turns a body and its content type back into a value,
  optionally validated into a type (a msgspec Struct, ``int``, ``list[Point]``, ...).

It does no IO, never imports asyncio and raises only `EncodeError` / `DecodeError` (both
ValueError subclasses) for bad values or bodies, so callers never see a bare msgspec exception.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ._speedups import MunggoggoError, Properties

__all__ = [
    "JSON",
    "KIND_CONTROL",
    "KIND_MESSAGE",
    "KIND_PRESENCE",
    "KIND_RPC",
    "MSGPACK",
    "OCTET",
    "TEXT",
    "X_MSGPACK",
    "DecodeError",
    "EncodeError",
    "Meta",
    "decode_body",
    "decoder_for",
    "encode_body",
    "meta_to_properties",
    "properties_to_meta",
]

# Message kinds, carried in the AMQP `type` property.
KIND_MESSAGE: Final = "message"
KIND_RPC: Final = "rpc"
KIND_CONTROL: Final = "control"
# An agent's presence announcement on munggoggo.fanout (core/presence.py): never a
# behaviour's message.
KIND_PRESENCE: Final = "presence"

# Content types of the wire contract.
JSON: Final = "application/json"
TEXT: Final = "text/plain"
OCTET: Final = "application/octet-stream"
MSGPACK: Final = "application/msgpack"
# Older spelling still sent by many msgpack producers; accepted on decode and encode.
X_MSGPACK: Final = "application/x-msgpack"


class EncodeError(MunggoggoError, ValueError):
    """A value cannot be turned into a message body."""


class DecodeError(MunggoggoError, ValueError):
    """A message body cannot be turned into the requested value."""


class Meta(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Message metadata of the wire contract; each field maps to one AMQP basic property.

    ``sender`` is the AMQP ``app_id`` and ``kind`` the AMQP ``type``; the rest keep their AMQP
    names. ``timestamp`` is whole seconds since the epoch, as AMQP carries it.

    Attributes:
        sender: the sending agent's identity (`app_id`).
        kind: `message`, `rpc` or `control` (`type`).
        content_type: the body's content type.
        correlation_id: an RPC's call id.
        reply_to: where a reply goes (the caller's inbox).
        timestamp: when it was published, in epoch seconds.
        headers: the AMQP headers.
        message_id: the publisher's message id.
        expiration: the per-message TTL in milliseconds, as a string (AMQP's form).
        delivery_mode: 2 for persistent, else None (transient).
        priority: the message priority (0-255).
    """

    sender: str | None = None
    kind: str = KIND_MESSAGE
    content_type: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    timestamp: int | None = None
    headers: dict[str, Any] | None = None
    message_id: str | None = None
    expiration: str | None = None
    delivery_mode: int | None = None
    priority: int | None = None


def meta_to_properties(meta: Meta) -> Properties:
    """The AMQP basic properties that carry `meta` on the wire.

    Args:
        meta: the metadata.

    Returns:
        The properties.
    """
    return Properties(
        app_id=meta.sender,
        type=meta.kind,
        content_type=meta.content_type,
        correlation_id=meta.correlation_id,
        reply_to=meta.reply_to,
        timestamp=meta.timestamp,
        headers=meta.headers,
        message_id=meta.message_id,
        expiration=meta.expiration,
        delivery_mode=meta.delivery_mode,
        priority=meta.priority,
    )


def properties_to_meta(props: Properties) -> Meta:
    """The `Meta` of a delivered message.

    A message without a ``type`` (any plain AMQP client) is a ``message``. Properties that the
    wire contract does not use (content_encoding, user_id, cluster_id) are not carried over.

    Args:
        props: the delivered message's properties.

    Returns:
        Its metadata.
    """
    kind = props.type
    return Meta(
        sender=props.app_id,
        kind=KIND_MESSAGE if kind is None else kind,
        content_type=props.content_type,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        timestamp=props.timestamp,
        headers=props.headers,
        message_id=props.message_id,
        expiration=props.expiration,
        delivery_mode=props.delivery_mode,
        priority=props.priority,
    )


# --- bodies -------------------------------------------------------------------------------

# Body formats a content type selects. Plain strings: they key the decoder cache and are
# compared on every message.
_FMT_JSON: Final = "json"
_FMT_MSGPACK: Final = "msgpack"
_FMT_TEXT: Final = "text"
_FMT_OPAQUE: Final = "opaque"  # octet-stream and any media type we do not interpret

# Built once: constructing msgspec encoders/decoders per message costs more than encoding.
_json_encoder: Final = msgspec.json.Encoder()
_json_decoder: Final = msgspec.json.Decoder()
_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_msgpack_decoder: Final = msgspec.msgpack.Decoder()

_BYTES_LIKE: Final = (bytes, bytearray, memoryview)

# Content type string -> (format, charset). Wire traffic uses a handful of distinct content
# types, so parsing each once keeps the per-message cost at one dict lookup. The bound keeps
# a peer that sends ever-new content types from growing the cache without limit.
_CONTENT_TYPES: dict[str, tuple[str, str]] = {}
_CONTENT_TYPES_MAX: Final = 256

# (type, format) -> typed msgspec Decoder; msgspec compiles a decoder per type, so reuse it.
_TYPED_DECODERS: dict[
    tuple[Any, str], msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]
] = {}


def _classify(content_type: str) -> tuple[str, str]:
    """(format, charset) of a content type; parameters such as ``charset`` may follow ``;``."""
    cached = _CONTENT_TYPES.get(content_type)
    if cached is not None:
        return cached
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = "utf-8"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    if media_type == JSON or media_type.endswith("+json"):
        fmt = _FMT_JSON
    elif media_type in (MSGPACK, X_MSGPACK):
        fmt = _FMT_MSGPACK
    elif media_type.startswith("text/"):
        fmt = _FMT_TEXT
    else:
        fmt = _FMT_OPAQUE
    result = (fmt, charset)
    if len(_CONTENT_TYPES) < _CONTENT_TYPES_MAX:
        _CONTENT_TYPES[content_type] = result
    return result


def _encode_error(value: Any, cause: object) -> EncodeError:
    return EncodeError(f"cannot encode body of type {type(value)!r}: {cause}")


def encode_body(value: Any, content_type: str | None = None) -> tuple[bytes, str]:
    """Encode `value` as a message body.

    Without `content_type` the value picks it: bytes-like -> octet-stream as is, str -> UTF-8
    text/plain, anything else (dict, list, numbers, None, msgspec Structs, dataclasses, ...) ->
    JSON. An explicit `content_type` is returned unchanged (parameters included) and decides
    the encoding: JSON or msgpack for any encodable value (a str becomes a JSON string),
    ``text/*`` for str (in its ``charset``, UTF-8 by default), any other media type for
    bytes-like values only.

    Args:
        value: what to send.
        content_type: the content type to encode it as (None: chosen by the value).

    Returns:
        ``(body, content_type)``.

    Raises:
        EncodeError: a value the content type cannot carry, or msgspec cannot encode (an
            unsupported type, an int beyond msgpack's 64 bits, a value containing itself).
    """
    if content_type is None:
        cls = value.__class__
        if cls is bytes:
            return value, OCTET
        if cls is str:
            return value.encode(), TEXT
        if isinstance(value, _BYTES_LIKE):
            return bytes(value), OCTET
        if isinstance(value, str):
            return str.encode(value), TEXT
        # _encode_structured inlined: this is the path of most messages.
        try:
            return _json_encoder.encode(value), JSON
        except _ENCODE_ERRORS as exc:
            raise _encode_error(value, exc) from exc

    fmt, charset = _classify(content_type)
    if fmt is _FMT_JSON:
        return _encode_structured(value, _json_encoder), content_type
    if fmt is _FMT_MSGPACK:
        return _encode_structured(value, _msgpack_encoder), content_type
    if fmt is _FMT_TEXT:
        if not isinstance(value, str):
            raise _encode_error(value, f"{content_type} takes a str")
        try:
            return value.encode(charset), content_type
        except (LookupError, UnicodeEncodeError) as exc:
            raise _encode_error(value, f"not encodable as {content_type} ({exc})") from exc
    if not isinstance(value, _BYTES_LIKE):
        raise _encode_error(value, f"{content_type} takes bytes, bytearray or memoryview")
    return bytes(value), content_type


def _encode_structured(
    value: Any, encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder
) -> bytes:
    try:
        return encoder.encode(value)
    except _ENCODE_ERRORS as exc:
        raise _encode_error(value, exc) from exc


# What msgspec raises for a value it cannot encode. TypeError: unsupported type or dict key;
# OverflowError: int beyond 64 bits (msgpack); RecursionError: a value that contains itself.
_ENCODE_ERRORS: Final = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)


def decoder_for(
    type: Any, content_type: str = JSON
) -> msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]:
    """The cached msgspec decoder that validates `content_type` bodies into `type`.

    Args:
        type: the type to validate into (anything msgspec decodes into).
        content_type: a JSON or msgpack content type.

    Returns:
        The decoder, built once per (type, format).

    Raises:
        ValueError: a content type that is neither JSON nor msgpack.
        TypeError: msgspec cannot decode into `type` (a programming error, not a bad body).
    """
    fmt = _classify(content_type)[0]
    if fmt is not _FMT_JSON and fmt is not _FMT_MSGPACK:
        raise ValueError(f"no msgspec decoder for content type {content_type!r}")
    return _typed_decoder(type, fmt)


def _typed_decoder(type: Any, fmt: str) -> msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]:
    key = (type, fmt)
    try:
        return _TYPED_DECODERS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable type annotation: build a decoder, do not cache it
        return _new_decoder(type, fmt)
    decoder = _TYPED_DECODERS[key] = _new_decoder(type, fmt)
    return decoder


def _new_decoder(type: Any, fmt: str) -> msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]:
    try:
        if fmt is _FMT_JSON:
            return msgspec.json.Decoder(type)
        return msgspec.msgpack.Decoder(type)
    except TypeError as exc:
        raise TypeError(f"cannot decode message bodies into {type!r}: {exc}") from None


def _type_name(tp: Any) -> str:
    # Classes by bare name ("Point"); generic aliases and unions as written ("list[int]").
    return tp.__name__ if isinstance(tp, type) else repr(tp)


def _decode_error(content_type: str | None, tp: Any, cause: object) -> DecodeError:
    what = f"{content_type} body" if content_type else "body without content type"
    target = "" if tp is None else f" as {_type_name(tp)}"
    return DecodeError(f"cannot decode {what}{target}: {cause}")


def decode_body(body: bytes, content_type: str | None, type: Any = None) -> Any:
    """Decode a message body by its content type, validated into `type` if given.

    Without `type`: JSON and msgpack bodies become builtins (dict, list, str, int, ...),
    ``text/*`` bodies str (in their ``charset``, UTF-8 by default), anything else stays bytes.

    With `type`: JSON and msgpack bodies are decoded and validated into it by msgspec (so
    ``str`` expects a JSON string, as `encode_body` produces for an explicit JSON content type).
    Text and opaque bodies decode only into ``bytes`` (the body as is) or ``str``. A body
    without content type decodes into any other `type` as JSON: plain AMQP clients often send
    JSON without saying so.

    Args:
        body: the message body.
        content_type: its content type (None: not given).
        type: the type to validate into (None: builtins, str or bytes as above).

    Returns:
        The decoded value.

    Raises:
        DecodeError: a body that is malformed, nested too deeply, invalid for `type`, or
            in a charset it cannot be decoded in; or a `type` its content type cannot
            decode into.
        TypeError: msgspec cannot decode into `type` (a programming error).
    """
    if content_type is None:
        fmt, charset = _FMT_OPAQUE, "utf-8"
        if type is not None and type is not bytes and type is not str:
            fmt = _FMT_JSON
    else:
        fmt, charset = _classify(content_type)

    if fmt is _FMT_JSON or fmt is _FMT_MSGPACK:
        if type is None:
            decoder = _json_decoder if fmt is _FMT_JSON else _msgpack_decoder
        else:
            decoder = _typed_decoder(type, fmt)
        try:
            return decoder.decode(body)
        # msgspec.DecodeError (malformed or invalid) is a ValueError, and so is the
        # UnicodeDecodeError msgspec lets through for invalid UTF-8 inside JSON strings.
        except ValueError as exc:
            raise _decode_error(content_type, type, exc) from exc
        except RecursionError:
            # msgspec recurses per nesting level: ~1000 levels of [[[... exhaust the stack.
            raise _decode_error(content_type, type, "nested too deeply") from None

    if type is bytes or (type is None and fmt is _FMT_OPAQUE):
        return body if body.__class__ is bytes else bytes(body)
    if type is str or type is None:
        try:
            return str(body, charset)
        # Any codec the peer names may run: besides UnicodeDecodeError, some raise a plain
        # UnicodeError ("idna", "undefined") or another ValueError.
        except (LookupError, ValueError) as exc:
            raise _decode_error(content_type, str, exc) from exc
    raise _decode_error(content_type, type, f"{content_type} bodies decode only into bytes or str")
