"""Tests for munggoggo.envelope: body codecs and Meta <-> Properties (no broker needed)."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from munggoggo import envelope
from munggoggo._speedups import Properties
from munggoggo.envelope import (
    JSON,
    KIND_CONTROL,
    KIND_MESSAGE,
    KIND_RPC,
    MSGPACK,
    OCTET,
    TEXT,
    X_MSGPACK,
    DecodeError,
    EncodeError,
    Meta,
    decode_body,
    decoder_for,
    encode_body,
    meta_to_properties,
    properties_to_meta,
)


class Point(msgspec.Struct):
    x: int
    y: int


class Line(msgspec.Struct):
    start: Point
    end: Point
    label: str | None = None


class Get(msgspec.Struct, tag=True):
    key: str


class Put(msgspec.Struct, tag=True):
    key: str
    value: int


Request = Get | Put


def assert_chained(error: Exception, prefix: str, cause_type: type[BaseException]) -> None:
    """`error` reads ``<prefix>: <cause>``: our prefix, then the text of the error it chains.

    The cause's own wording belongs to msgspec or Python's codecs and changes between releases;
    only its kind and that it says something are asserted.
    """
    cause = error.__cause__
    assert isinstance(cause, cause_type), repr(cause)
    assert str(cause).strip()
    assert str(error) == f"{prefix}: {cause}"


@dataclasses.dataclass
class Sample:
    name: str
    values: list[float]


# --- encode_body: content type chosen by the value ----------------------------------------


@pytest.mark.parametrize("value", [b"\x00raw\xff", bytearray(b"abc"), memoryview(b"mv")])
def test_bytes_like_is_octet_stream_and_round_trips(value: bytes | bytearray | memoryview) -> None:
    body, content_type = encode_body(value)
    assert content_type == OCTET
    assert type(body) is bytes
    assert body == bytes(value)
    decoded = decode_body(body, content_type)
    assert type(decoded) is bytes
    assert decoded == bytes(value)


def test_bytes_body_is_not_copied() -> None:
    value = b"x" * 1000
    body, _ = encode_body(value)
    assert body is value


@pytest.mark.parametrize("value", ["", "hello", "grüße 🐍"])
def test_str_is_utf8_text_and_round_trips(value: str) -> None:
    body, content_type = encode_body(value)
    assert content_type == TEXT
    assert body == value.encode("utf-8")
    assert decode_body(body, content_type) == value


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2.5, None, True]},
        [1, "two", 3.0],
        42,
        -7,
        2.5,
        True,
        False,
        None,
        {},
        [],
    ],
)
def test_builtins_are_json_and_round_trip(value: object) -> None:
    body, content_type = encode_body(value)
    assert content_type == JSON
    assert json.loads(body) == value  # plain JSON that any client can read
    decoded = decode_body(body, content_type)
    assert decoded == value
    assert type(decoded) is type(value)


def test_struct_is_json_and_decodes_to_builtins_without_type() -> None:
    body, content_type = encode_body(Point(1, 2))
    assert content_type == JSON
    assert decode_body(body, content_type) == {"x": 1, "y": 2}


def test_dataclass_is_json() -> None:
    body, content_type = encode_body(Sample("s", [1.0, 2.5]))
    assert content_type == JSON
    assert decode_body(body, content_type, Sample) == Sample("s", [1.0, 2.5])


# --- typed decode ---------------------------------------------------------------------------


def test_typed_decode_struct() -> None:
    body, content_type = encode_body(Point(3, 4))
    point = decode_body(body, content_type, Point)
    assert isinstance(point, Point)
    assert point == Point(3, 4)


def test_typed_decode_nested_struct() -> None:
    line = Line(Point(0, 0), Point(5, 6), label="diag")
    body, content_type = encode_body(line)
    assert decode_body(body, content_type, Line) == line
    assert decode_body(body, content_type, list[int] | Line) == line


def test_typed_decode_tagged_union() -> None:
    get_body, content_type = encode_body(Get("k"))
    put_body, _ = encode_body(Put("k", 9))
    assert json.loads(put_body) == {"type": "Put", "key": "k", "value": 9}
    assert decode_body(get_body, content_type, Request) == Get("k")
    assert decode_body(put_body, content_type, Request) == Put("k", 9)
    assert decode_body(b"[" + get_body + b"," + put_body + b"]", JSON, list[Request]) == [
        Get("k"),
        Put("k", 9),
    ]


def test_tagged_union_unknown_tag_is_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode_body(b'{"type": "Delete", "key": "k"}', JSON, Request)
    assert_chained(
        info.value, f"cannot decode application/json body as {Request!r}", msgspec.ValidationError
    )


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        (5, int),
        (2.5, float),
        ({"a": 1}, dict),
        ({"a": [1, 2]}, dict[str, list[int]]),
        ([1, 2, 3], list[int]),
        (None, type(None)),
        ([Point(1, 2)], list[Point]),
    ],
)
def test_typed_decode_builtins(value: object, tp: object) -> None:
    body, content_type = encode_body(value)
    assert decode_body(body, content_type, tp) == value


def test_typed_decode_validates() -> None:
    with pytest.raises(DecodeError) as info:
        decode_body(b'{"x": "a", "y": 2}', JSON, Point)
    assert_chained(
        info.value, "cannot decode application/json body as Point", msgspec.ValidationError
    )
    assert isinstance(info.value, ValueError)


def test_typed_decode_names_generic_type() -> None:
    with pytest.raises(DecodeError) as info:
        decode_body(b'[1, "2"]', JSON, list[int])
    assert_chained(
        info.value, "cannot decode application/json body as list[int]", msgspec.ValidationError
    )


def test_typed_decode_missing_field() -> None:
    with pytest.raises(DecodeError) as info:
        decode_body(b'{"x": 1}', JSON, Point)
    assert_chained(
        info.value, "cannot decode application/json body as Point", msgspec.ValidationError
    )


def test_json_str_and_bytes_round_trip_through_explicit_json() -> None:
    body, content_type = encode_body("hi", JSON)
    assert (body, content_type) == (b'"hi"', JSON)
    assert decode_body(body, content_type, str) == "hi"
    body, content_type = encode_body(b"\x00\x01", JSON)
    assert json.loads(body) == "AAE="  # msgspec's base64 for bytes in JSON
    assert decode_body(body, content_type, bytes) == b"\x00\x01"


def test_text_and_octet_decode_to_str_or_bytes() -> None:
    assert decode_body(b"abc", TEXT, bytes) == b"abc"
    assert decode_body(b"abc", TEXT, str) == "abc"
    assert decode_body(b"abc", OCTET, str) == "abc"
    assert decode_body(b"abc", OCTET, bytes) == b"abc"
    assert decode_body(b"abc", None, str) == "abc"
    assert decode_body(b"abc", None, bytes) == b"abc"


def test_text_body_does_not_decode_into_other_types() -> None:
    with pytest.raises(DecodeError, match=r"cannot decode text/plain body as int: .*bytes or str"):
        decode_body(b"3", TEXT, int)
    with pytest.raises(DecodeError, match="cannot decode application/octet-stream body as Point"):
        decode_body(b'{"x": 1, "y": 2}', OCTET, Point)


def test_body_without_content_type() -> None:
    assert decode_body(b"\xffraw", None) == b"\xffraw"
    # Plain AMQP clients often omit content_type on JSON bodies.
    assert decode_body(b'{"x": 1, "y": 2}', None, Point) == Point(1, 2)
    with pytest.raises(DecodeError, match="cannot decode body without content type as Point"):
        decode_body(b"not json", None, Point)


def test_unsupported_decode_type_is_type_error() -> None:
    with pytest.raises(TypeError, match="cannot decode message bodies into"):
        decode_body(b"{}", JSON, object())


# --- msgpack --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [{"a": 1, "b": [1.5, None]}, "text", b"\x00bin", 2**63, [True, False]]
)
def test_msgpack_round_trip(value: object) -> None:
    body, content_type = encode_body(value, MSGPACK)
    assert content_type == MSGPACK
    assert body == msgspec.msgpack.encode(value)
    assert decode_body(body, content_type) == value


def test_msgpack_typed_and_x_msgpack_alias() -> None:
    line = Line(Point(1, 2), Point(3, 4))
    body, _ = encode_body(line, MSGPACK)
    assert decode_body(body, MSGPACK, Line) == line
    assert decode_body(body, X_MSGPACK, Line) == line
    body, content_type = encode_body(Put("k", 1), X_MSGPACK)
    assert content_type == X_MSGPACK
    assert decode_body(body, content_type, Request) == Put("k", 1)


def test_msgpack_garbage_is_decode_error() -> None:
    with pytest.raises(DecodeError, match="cannot decode application/msgpack body as Point: "):
        decode_body(b"\xc1", MSGPACK, Point)
    with pytest.raises(DecodeError, match="cannot decode application/msgpack body: "):
        decode_body(b"\x92\x01", MSGPACK)  # truncated array


# --- explicit content types and parameters ---------------------------------------------------


def test_explicit_json_for_str() -> None:
    body, content_type = encode_body("3", JSON)
    assert body == b'"3"'
    assert decode_body(body, content_type) == "3"


def test_explicit_text_requires_str() -> None:
    assert encode_body("x", TEXT) == (b"x", TEXT)
    with pytest.raises(EncodeError, match=r"of type <class 'bytes'>: text/plain takes a str"):
        encode_body(b"x", TEXT)


def test_explicit_octet_requires_bytes() -> None:
    assert encode_body(bytearray(b"x"), OCTET) == (b"x", OCTET)
    with pytest.raises(EncodeError, match="of type <class 'str'>: application/octet-stream takes"):
        encode_body("x", OCTET)


def test_other_media_types_take_bytes_as_is() -> None:
    assert encode_body(b"\x89PNG", "image/png") == (b"\x89PNG", "image/png")
    assert decode_body(b"\x89PNG", "image/png") == b"\x89PNG"
    with pytest.raises(EncodeError, match="image/png takes bytes"):
        encode_body({"a": 1}, "image/png")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        " application/json ",
        "application/problem+json",
    ],
)
def test_json_content_type_with_parameters(content_type: str) -> None:
    body, returned = encode_body({"x": 1, "y": 2}, content_type)
    assert returned == content_type  # an explicit content type travels unchanged
    assert json.loads(body) == {"x": 1, "y": 2}
    assert decode_body(body, content_type) == {"x": 1, "y": 2}
    assert decode_body(body, content_type, Point) == Point(1, 2)


def test_text_content_type_parameters_and_charset() -> None:
    assert decode_body("grüße".encode(), "text/plain; charset=utf-8") == "grüße"
    assert decode_body("grüße".encode("latin-1"), 'text/plain; charset="ISO-8859-1"') == "grüße"
    body, content_type = encode_body("grüße", "text/plain; charset=latin-1")
    assert body == "grüße".encode("latin-1")
    assert decode_body(body, content_type) == "grüße"
    assert decode_body(b"<p>", "text/html") == "<p>"


def test_unknown_charset_is_decode_error() -> None:
    with pytest.raises(DecodeError, match="text/plain; charset=klingon body"):
        decode_body(b"x", "text/plain; charset=klingon")


def test_octet_content_type_with_parameters_stays_bytes() -> None:
    assert decode_body(b"\xff", "application/octet-stream; foo=bar") == b"\xff"


# --- error messages ---------------------------------------------------------------------------


def test_unencodable_value_names_type() -> None:
    with pytest.raises(EncodeError) as info:
        encode_body(object())
    assert_chained(info.value, "cannot encode body of type <class 'object'>", TypeError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "content_type", "cause_type"),
    [
        ({(1, 2): 3}, None, TypeError),  # a dict key JSON cannot carry
        ({1j}, JSON, TypeError),  # an unsupported type nested inside the value
        (2**64, MSGPACK, OverflowError),  # beyond msgpack's 64-bit integers
    ],
)
def test_encode_errors(
    value: object, content_type: str | None, cause_type: type[BaseException]
) -> None:
    with pytest.raises(EncodeError) as info:
        encode_body(value, content_type)
    assert_chained(info.value, f"cannot encode body of type {type(value)!r}", cause_type)


def test_self_containing_value_is_encode_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(EncodeError) as info:
        encode_body(loop)
    assert_chained(info.value, "cannot encode body of type <class 'list'>", RecursionError)


def test_garbage_json_is_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode_body(b"{not json", JSON)
    assert_chained(info.value, "cannot decode application/json body", msgspec.DecodeError)
    with pytest.raises(DecodeError) as info:
        decode_body(b"", JSON, Point)
    assert_chained(info.value, "cannot decode application/json body as Point", msgspec.DecodeError)


@pytest.mark.parametrize(
    ("body", "content_type", "tp", "prefix", "cause_type"),
    [
        # A text body always decodes into str, so its error says so even when no type was asked.
        (b"ab\xffcd", TEXT, None, "cannot decode text/plain body as str", UnicodeDecodeError),
        (b"ab\xffcd", TEXT, str, "cannot decode text/plain body as str", UnicodeDecodeError),
        (
            b"ab\xffcd",
            OCTET,
            str,
            "cannot decode application/octet-stream body as str",
            UnicodeDecodeError,
        ),
        # Invalid UTF-8 inside a JSON string is msgspec's to report, as some ValueError.
        (b'"ab\xffcd"', JSON, None, "cannot decode application/json body", ValueError),
        (b'"ab\xffcd"', JSON, str, "cannot decode application/json body as str", ValueError),
    ],
)
def test_invalid_utf8_is_decode_error(
    body: bytes,
    content_type: str,
    tp: type | None,
    prefix: str,
    cause_type: type[BaseException],
) -> None:
    with pytest.raises(DecodeError) as info:
        decode_body(body, content_type, tp)
    assert_chained(info.value, prefix, cause_type)


# --- decoder cache ----------------------------------------------------------------------------


def test_decoder_cache_returns_same_decoder() -> None:
    assert decoder_for(Point) is decoder_for(Point)
    assert decoder_for(list[int]) is decoder_for(list[int])
    assert decoder_for(Point, MSGPACK) is decoder_for(Point, X_MSGPACK)
    assert decoder_for(Point, "application/json; charset=utf-8") is decoder_for(Point, JSON)
    assert decoder_for(Point) is not decoder_for(Point, MSGPACK)
    assert isinstance(decoder_for(Point), msgspec.json.Decoder)
    assert isinstance(decoder_for(Point, MSGPACK), msgspec.msgpack.Decoder)
    assert decoder_for(Point).type is Point


def test_decode_body_reuses_cached_decoder() -> None:
    class Fresh(msgspec.Struct):
        n: int

    assert decode_body(b'{"n": 1}', JSON, Fresh) == Fresh(1)
    cached = decoder_for(Fresh)
    assert decode_body(b'{"n": 2}', JSON, Fresh) == Fresh(2)
    assert decoder_for(Fresh) is cached
    assert envelope._TYPED_DECODERS[(Fresh, "json")] is cached


def test_decoder_for_rejects_unstructured_content_type() -> None:
    with pytest.raises(ValueError, match="no msgspec decoder for content type 'text/plain'"):
        decoder_for(Point, TEXT)


# --- Meta <-> Properties ----------------------------------------------------------------------


def test_kinds() -> None:
    assert (KIND_MESSAGE, KIND_RPC, KIND_CONTROL) == ("message", "rpc", "control")
    assert Meta().kind == KIND_MESSAGE


def test_meta_to_properties_maps_wire_names() -> None:
    meta = Meta(
        sender="ping-1",
        kind=KIND_RPC,
        content_type=JSON,
        correlation_id="c-1",
        reply_to="amq.rabbitmq.reply-to",
        timestamp=1_700_000_000,
        headers={"x-trace": "abc", "n": 1},
        message_id="m-1",
        expiration="60000",
        delivery_mode=2,
        priority=5,
    )
    props = meta_to_properties(meta)
    assert isinstance(props, Properties)
    assert props.app_id == "ping-1"
    assert props.type == "rpc"
    assert props.content_type == JSON
    assert props.correlation_id == "c-1"
    assert props.reply_to == "amq.rabbitmq.reply-to"
    assert props.timestamp == 1_700_000_000
    assert props.headers == {"x-trace": "abc", "n": 1}
    assert props.message_id == "m-1"
    assert props.expiration == "60000"
    assert props.delivery_mode == 2
    assert props.priority == 5
    assert (props.content_encoding, props.user_id, props.cluster_id) == (None, None, None)
    assert properties_to_meta(props) == meta


def test_default_meta_sends_kind_message() -> None:
    props = meta_to_properties(Meta())
    assert props.type == "message"
    assert props.app_id is None
    assert properties_to_meta(props) == Meta()


def test_properties_without_type_are_a_message() -> None:
    meta = properties_to_meta(Properties(app_id="pika-client", content_type=TEXT))
    assert meta == Meta(sender="pika-client", kind=KIND_MESSAGE, content_type=TEXT)


def test_meta_is_frozen_and_omits_defaults() -> None:
    meta = Meta(sender="a", correlation_id="c")
    with pytest.raises(AttributeError):
        meta.sender = "b"  # type: ignore[misc]
    assert json.loads(msgspec.json.encode(meta)) == {"sender": "a", "correlation_id": "c"}


_short = st.text(max_size=20)
_header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_short, inner, max_size=3),
    max_leaves=8,
)
_metas = st.builds(
    Meta,
    sender=st.none() | _short,
    kind=st.sampled_from([KIND_MESSAGE, KIND_RPC, KIND_CONTROL]) | _short,
    content_type=st.none() | st.sampled_from([JSON, TEXT, OCTET, MSGPACK]) | _short,
    correlation_id=st.none() | _short,
    reply_to=st.none() | _short,
    timestamp=st.none() | st.integers(0, 2**64 - 1),
    headers=st.none() | st.dictionaries(_short, _header_values, max_size=4),
    message_id=st.none() | _short,
    expiration=st.none() | st.integers(0, 10**9).map(str),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
)


@given(_metas)
def test_meta_properties_round_trip(meta: Meta) -> None:
    props = meta_to_properties(meta)
    assert properties_to_meta(props) == meta
    # and back again: a Properties built from a Meta survives the trip unchanged
    assert meta_to_properties(properties_to_meta(props)) == props


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=16,
    )
)
def test_any_json_value_round_trips(value: object) -> None:
    body, content_type = encode_body(value)
    if isinstance(value, str):
        assert content_type == TEXT
    else:
        assert content_type == JSON
    assert decode_body(body, content_type) == value
    body, content_type = encode_body(value, MSGPACK)
    assert decode_body(body, content_type) == value


# --- fuzzing: whatever arrives, decoding fails only with DecodeError -----------------------

# Charsets a peer may name: real text codecs, codecs that are not text encodings, codecs
# that raise their own UnicodeError subclasses, and nonsense.
_CHARSETS = [
    "utf-8",
    "latin-1",
    "utf-16",
    "utf-7",
    "ascii",
    "cp037",
    "idna",
    "punycode",
    "undefined",
    "unicode_escape",
    "base64",
    "rot13",
    "zlib",
    "hex",
    "uu",
    "mbcs",
    "no-such-charset",
    "",
]
_MEDIA_TYPES = [JSON, "application/vnd.x+json", MSGPACK, X_MSGPACK, TEXT, "text/csv", OCTET, "x/y"]

content_types = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.sampled_from(_MEDIA_TYPES),
    st.builds(
        lambda media, charset, sep: f"{media}{sep}charset={charset}",
        st.sampled_from(_MEDIA_TYPES),
        st.sampled_from(_CHARSETS) | st.text(max_size=12),
        st.sampled_from(["; ", ";", " ; ", ';charset="x";']),
    ),
)
decode_types = st.sampled_from(
    [None, bytes, str, int, float, bool, dict, list[int], dict[str, Point], Point, Line, Request]
)
nested = st.integers(0, 20_000).flatmap(
    lambda depth: st.sampled_from(
        [
            b"[" * depth + b"]" * depth,  # JSON arrays
            b'{"a":' * depth + b"1" + b"}" * depth,  # JSON objects
            b"\x91" * depth + b"\xc0",  # msgpack fixarrays of one
            b"\x81\xa1a" * depth + b"\x01",  # msgpack fixmaps of one
        ]
    )
)
bodies = st.one_of(
    st.binary(max_size=500),
    nested,
    st.text(max_size=200).map(str.encode),
    st.builds(lambda v: json.dumps(v).encode(), st.recursive(st.integers() | st.text(), st.lists)),
)


@settings(max_examples=300)
@given(body=bodies, content_type=content_types, tp=decode_types)
def test_any_body_decodes_or_raises_decode_error(body: bytes, content_type: str | None, tp) -> None:
    try:
        decode_body(body, content_type, tp)
    except DecodeError as exc:
        assert str(exc).startswith("cannot decode")


@given(
    body=st.binary(max_size=200),
    media=st.sampled_from(["text/plain", "text/csv"]),
    charset=st.sampled_from(_CHARSETS),
    tp=st.sampled_from([None, str, bytes, int]),
)
def test_any_charset_decodes_or_raises_decode_error(body, media, charset, tp) -> None:
    try:
        decode_body(body, f"{media}; charset={charset}", tp)
    except DecodeError as exc:
        assert str(exc).startswith("cannot decode")


@pytest.mark.parametrize("depth", [100, 1_000, 10_000, 200_000])
@pytest.mark.parametrize(
    ("content_type", "open_", "close"),
    [
        (JSON, b"[", b"]"),
        (JSON, b'{"a":', b"}"),
        (MSGPACK, b"\x91", b""),
        (MSGPACK, b"\x81\xa1a", b""),
    ],
    ids=["json-array", "json-object", "msgpack-array", "msgpack-map"],
)
@pytest.mark.parametrize("tp", [None, dict, list])
def test_deeply_nested_bodies_are_decode_errors_or_values(depth, content_type, open_, close, tp):
    leaf = b"1" if content_type == JSON else b"\x01"
    body = open_ * depth + leaf + close * depth
    try:
        decode_body(body, content_type, tp)
    except DecodeError as exc:
        assert str(exc).startswith(f"cannot decode {content_type} body")


@given(body=bodies, content_type=content_types, tp=decode_types)
def test_any_body_decodes_the_same_from_a_memoryview(body, content_type, tp) -> None:
    """Bodies arrive as bytes or memoryview slices of a receive buffer: same outcome."""

    def outcome(data):
        try:
            value = decode_body(data, content_type, tp)
        except DecodeError as exc:
            return ("error", str(exc))
        return ("ok", bytes(value) if isinstance(value, memoryview) else value)

    assert outcome(body) == outcome(memoryview(body))


@given(
    properties=st.builds(
        Properties,
        content_type=st.none() | st.text(max_size=40),
        headers=st.none()
        | st.dictionaries(
            st.text(max_size=20),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4)
                ),
                max_leaves=10,
            ),
            max_size=5,
        ),
        type=st.none() | st.text(max_size=20),
        app_id=st.none() | st.text(max_size=20),
        timestamp=st.none() | st.integers(0, 2**63),
    ),
    body=bodies,
    tp=decode_types,
)
def test_any_delivered_message_gives_meta_and_decodes_or_raises_decode_error(
    properties, body, tp
) -> None:
    meta = properties_to_meta(properties)
    assert meta.kind == (properties.type if properties.type is not None else KIND_MESSAGE)
    assert meta.headers == properties.headers
    with contextlib.suppress(DecodeError):
        decode_body(body, meta.content_type, tp)
