"""Tests for munggoggo._speedups frames: FrameReader, the properties and table codec, publish
and ack packing, held against pamqp as the independent reference.

Every test runs against each available implementation (the pure-Python twin today, the
compiled `_frames` too once it exists), through the `impl` fixture.
"""

from __future__ import annotations

import datetime
import importlib
import os
import pathlib
import struct
from decimal import Decimal

import pytest
from amqp_peer import body_chunks, content_frames, method_frame, method_payload, split
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pamqp import commands, frame, header
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode
from twins import FRAME_TWINS, twin_id

from munggoggo import _speedups
from munggoggo._speedups import DELIVER, GET_OK, RETURN, _frames_py

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=FRAME_TWINS, ids=twin_id, scope="module")
def impl(request):
    return request.param


# --------------------------------------------------------------------------- chooser


def test_compiled_twin_loaded_when_expected():
    source = pathlib.Path(_speedups.__file__).with_name("_frames.pyx")
    if not source.exists():
        pytest.skip("no compiled twin in this tree yet")
    if os.environ.get("MUNGGOGGO_NO_EXTENSIONS"):
        pytest.skip("MUNGGOGGO_NO_EXTENSIONS forces the pure-Python twin")
    assert _speedups.USING_EXTENSIONS, "_frames.pyx exists but the extension did not load"
    assert (
        _speedups.FrameReader is importlib.import_module("munggoggo._speedups._frames").FrameReader
    )


def test_no_extensions_switch_picks_the_twin():
    if not os.environ.get("MUNGGOGGO_NO_EXTENSIONS"):
        pytest.skip("only meaningful with MUNGGOGGO_NO_EXTENSIONS=1")
    assert not _speedups.USING_EXTENSIONS
    assert _speedups.FrameReader is _frames_py.FrameReader
    assert _speedups.encode_properties is _frames_py.encode_properties


def test_frame_error_is_a_value_error(impl):
    assert issubclass(impl.FrameError, ValueError)


# --------------------------------------------------------------------------- strategies

shortstr = st.text(max_size=40)  # at most 160 UTF-8 bytes, well inside a short string
# pamqp encodes delivery tags as signed 64-bit; the wire field is unsigned
pamqp_tags = st.integers(0, 2**63 - 1)
# pamqp refuses exchange names outside this alphabet
exchange_names = st.text("abcXYZ019-_.:@#,/+ ", max_size=30)
table_keys = st.text(max_size=12)


def _same(value):
    return (value, value)


# (what pamqp is asked to encode, what our decoder must return for it)
pamqp_scalars = st.one_of(
    st.none().map(_same),
    st.booleans().map(_same),
    st.integers(-(2**63), 2**63 - 1).map(_same),  # pamqp picks b, s, u, I, i or l
    st.floats(width=32, allow_nan=False).map(_same),  # pamqp sends f (single precision)
    st.text(max_size=20).map(_same),
    st.binary(max_size=20).map(lambda b: (bytearray(b), b)),
    st.tuples(st.integers(0, 9), st.integers(-(2**31), 2**31 - 1)).map(
        lambda sv: (Decimal(sv[1]).scaleb(-sv[0]), sv)
    ),
    st.integers(0, 2**32 - 1).map(lambda s: (datetime.datetime.fromtimestamp(s, datetime.UTC), s)),
)


def _pamqp_containers(children):
    return st.one_of(
        st.lists(children, max_size=4).map(
            lambda items: ([p for p, _ in items], [e for _, e in items])
        ),
        st.dictionaries(table_keys, children, max_size=4).map(
            lambda d: ({k: p for k, (p, _) in d.items()}, {k: e for k, (_, e) in d.items()})
        ),
    )


pamqp_values = st.recursive(pamqp_scalars, _pamqp_containers, max_leaves=12)
pamqp_tables = st.dictionaries(table_keys, pamqp_values, max_size=5).map(
    lambda d: ({k: p for k, (p, _) in d.items()}, {k: e for k, (_, e) in d.items()})
)

# Values our encoder takes and gives back unchanged.
our_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
our_values = st.recursive(
    our_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(table_keys, children, max_size=4)
    ),
    max_leaves=12,
)
our_tables = st.dictionaries(table_keys, our_values, max_size=5)

PROPERTY_NAMES = _frames_py.PROPERTY_NAMES


@st.composite
def our_properties(draw, headers=our_tables):
    fields = {
        "content_type": shortstr,
        "content_encoding": shortstr,
        "headers": headers,
        "delivery_mode": st.integers(0, 255),
        "priority": st.integers(0, 255),
        "correlation_id": shortstr,
        "reply_to": shortstr,
        "expiration": shortstr,
        "message_id": shortstr,
        "timestamp": st.integers(0, 2**64 - 1),
        "type": shortstr,
        "user_id": shortstr,
        "app_id": shortstr,
        "cluster_id": shortstr,
    }
    return {name: draw(st.none() | strategy) for name, strategy in fields.items()}


@st.composite
def pamqp_properties(draw):
    """(pamqp Basic.Properties, the field dict our decoder must produce for it)."""
    strings = {}
    for name in (
        "content_type",
        "content_encoding",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "message_type",
        "user_id",
        "app_id",
        "cluster_id",
    ):
        strings[name] = draw(st.none() | shortstr)
    headers = draw(st.none() | pamqp_tables)
    delivery_mode = draw(st.sampled_from([None, 1, 2]))
    priority = draw(st.none() | st.integers(0, 255))
    seconds = draw(st.none() | st.integers(0, 2**32 - 1))
    cluster_id = strings.pop("cluster_id")
    props = commands.Basic.Properties(
        headers=headers[0] if headers else None,
        delivery_mode=delivery_mode,
        priority=priority,
        timestamp=(
            None if seconds is None else datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        ),
        **strings,
    )
    props.cluster_id = cluster_id or ""  # the constructor refuses it; the wire allows it
    expected = {n: None for n in PROPERTY_NAMES}
    # pamqp leaves empty strings out of the header
    for name, value in {**strings, "cluster_id": cluster_id}.items():
        expected["type" if name == "message_type" else name] = value or None
    expected.update(
        headers=headers[1] if headers else None,
        delivery_mode=delivery_mode,
        priority=priority,
        timestamp=seconds,
    )
    return props, expected


def props_dict(props):
    if props is None:
        return None
    return {name: getattr(props, name) for name in PROPERTY_NAMES}


def header_payload(encoded_properties, body_size=0):
    """A content-header payload (class 60) around encoded property flags + fields."""
    return struct.pack(">HHQ", 60, 0, body_size) + encoded_properties


# --------------------------------------------------------------------------- field tables


@SETTINGS
@given(table=our_tables)
def test_table_round_trip(impl, table):
    assert impl.decode_table(impl.encode_table(table)) == table


@SETTINGS
@given(pair=pamqp_tables)
def test_decode_table_reads_pamqp_encoding(impl, pair):
    sent, expected = pair
    assert impl.decode_table(pamqp_encode.field_table(sent)) == expected


@SETTINGS
@given(table=our_tables)
def test_pamqp_reads_our_table_encoding(impl, table):
    encoded = impl.encode_table(table)
    consumed, decoded = pamqp_decode.field_table(encoded)
    assert consumed == len(encoded)
    assert decoded == table  # pamqp gives bytearray for x; it compares equal to bytes


FIELD_CODES = [c.encode() for c in "tbBsuIilfdDSxTVAF"]


def _field(key, code, raw):
    return bytes([len(key)]) + key.encode() + code + raw


@pytest.mark.parametrize(
    ("code", "raw", "expected"),
    [
        (b"t", b"\x01", True),
        (b"t", b"\x00", False),
        (b"b", b"\xff", -1),
        (b"B", b"\xff", 255),
        (b"s", b"\x80\x00", -32768),
        (b"u", b"\xff\xff", 65535),
        (b"I", b"\xff\xff\xff\xfe", -2),
        (b"i", b"\xff\xff\xff\xfe", 2**32 - 2),
        (b"l", b"\x80" + b"\x00" * 7, -(2**63)),
        (b"f", struct.pack(">f", 1.5), 1.5),
        (b"d", struct.pack(">d", -0.1), -0.1),
        (b"D", b"\x02" + struct.pack(">i", -12345), (2, -12345)),
        (b"S", b"\x00\x00\x00\x03h\xc3\xa9", "hé"),
        (b"S", b"\x00\x00\x00\x02\xff\xfe", b"\xff\xfe"),  # not UTF-8: kept as bytes
        (b"x", b"\x00\x00\x00\x02\x00\x01", b"\x00\x01"),
        (b"T", struct.pack(">Q", 1700000000), 1700000000),
        (b"V", b"", None),
        (b"A", b"\x00\x00\x00\x06I\x00\x00\x00\x01V", [1, None]),
        (b"F", b"\x00\x00\x00\x07\x01kI\x00\x00\x00\x09", {"k": 9}),
    ],
    ids=lambda v: v.decode() if v in FIELD_CODES else None,
)
def test_decode_every_field_type(impl, code, raw, expected):
    body = _field("key", code, raw)
    table = struct.pack(">I", len(body)) + body
    assert impl.decode_table(table) == {"key": expected}
    # pamqp agrees wherever its types are ours (it decodes D and T to richer objects)
    if code not in (b"D", b"T"):
        assert pamqp_decode.field_table(table)[1] == {"key": expected}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x00\x06\x01kZ\x00\x00\x00", "unknown field table value type"),
        (b"\x00\x00\x00\x09\x01kI\x00\x00", "runs past"),
        (b"\x00\x00", "truncated"),
        (b"\x00\x00\x00\x05\x01kI\x00\x00\x00\x01", "does not match"),
        (b"\x00\x00\x00\x03\x09kk", "short string"),
        (b"\x00\x00\x00\x07\x01kS\x00\x00\x00\x09", "long string"),
        # the array says 1 byte, its item takes 5: must not silently eat the following bytes
        (b"\x00\x00\x00\x0c\x01kA\x00\x00\x00\x01I\x00\x00\x00\x05", "array"),
    ],
)
def test_decode_table_rejects_malformed(impl, data, message):
    with pytest.raises(impl.FrameError, match=message):
        impl.decode_table(data)


def test_deeply_nested_table_is_a_frame_error(impl):
    table = b"\x00\x00\x00\x00"
    for _ in range(5000):
        table = struct.pack(">I", len(table) + 2) + b"\x00F" + table
    with pytest.raises(impl.FrameError):
        impl.decode_table(table)
    with pytest.raises(impl.FrameError):
        impl.decode_properties(header_payload(b"\x20\x00" + table))


def nested_table(levels, inner=b""):
    """Raw bytes of a field table with `levels` tables nested inside it, one in another;
    `inner` is the innermost table's content (encoded independently of our encoder)."""
    table = struct.pack(">I", len(inner)) + inner
    for _ in range(levels):
        table = struct.pack(">I", len(table) + 3) + b"\x01hF" + table
    return table


def nested_array(levels):
    """Raw bytes of a field table holding `levels` arrays, one in another."""
    value = b"A\x00\x00\x00\x00"
    for _ in range(levels - 1):
        value = b"A" + struct.pack(">I", len(value)) + value
    content = b"\x01a" + value
    return struct.pack(">I", len(content)) + content


def test_nesting_limit_is_max_table_depth(impl):
    limit = impl.MAX_TABLE_DEPTH
    assert 16 <= limit <= 100  # far below the interpreter's recursion limit
    deepest = impl.decode_table(nested_table(limit, b"\x01kI\x00\x00\x00\x07"))
    for _ in range(limit):
        deepest = deepest["h"]
    assert deepest == {"k": 7}
    with pytest.raises(impl.FrameError, match=f"nested deeper than {limit} levels"):
        impl.decode_table(nested_table(limit + 1))
    assert impl.decode_table(nested_array(limit))["a"] is not None
    with pytest.raises(impl.FrameError, match=f"nested deeper than {limit} levels"):
        impl.decode_table(nested_array(limit + 1))


def test_encoder_refuses_what_the_decoder_would_refuse(impl):
    limit = impl.MAX_TABLE_DEPTH
    table = {"k": 7}
    for _ in range(limit):
        table = {"h": table}
    assert impl.decode_table(impl.encode_table(table)) == table
    too_deep = {"h": table}
    with pytest.raises(ValueError, match="nested deeper"):
        impl.encode_table(too_deep)
    array = []  # the table's own level is 0: this array is level 1
    for _ in range(limit - 1):
        array = [array]
    assert impl.decode_table(impl.encode_table({"a": array})) == {"a": array}
    with pytest.raises(ValueError, match="nested deeper"):
        impl.encode_table({"a": [array]})
    # an unbounded depth is a ValueError, never a RecursionError
    with pytest.raises(ValueError, match="nested deeper"):
        impl.encode_properties(impl.Properties(headers=_deep_dict(5000)))


def _deep_dict(levels):
    table = {}
    for _ in range(levels):
        table = {"h": table}
    return table


def _undecodable_stream(channel=1, tag=1, body=b"poison", levels=3000):
    """Basic.Deliver of a message whose headers nest `levels` tables, then its content."""
    method = method_frame(
        channel,
        commands.Basic.Deliver(consumer_tag="c", delivery_tag=tag, exchange="ex", routing_key="k"),
    )
    props = b"\x20\x08" + nested_table(levels) + b"\x05alice"  # headers + app_id
    head = struct.pack(">HHQH", 60, 0, len(body), 0x2008)[:-2] + props
    return method + _frame(2, channel, head) + _frame(3, channel, body)


@SETTINGS
@given(cuts=st.lists(st.integers(0, 24000), max_size=8))
def test_undecodable_properties_cost_one_message_not_the_stream(impl, cuts):
    good = _deliver(1, b"after", frame_max=131072)
    data = _undecodable_stream(1, tag=1) + _deliver(2, b"other channel") + good
    reader = impl.FrameReader(131072)
    records = []
    for piece in split(data, cuts):
        records += reader.feed(piece)
    assert [r.body for r in records] == [b"poison", b"other channel", b"after"]
    bad, *rest = records
    assert bad.kind == DELIVER
    assert (bad.channel, bad.delivery_tag, bad.routing_key) == (1, 1, "k")
    assert "nested deeper than" in bad.properties_error
    assert bad.properties == impl.Properties()  # nothing half-decoded
    assert all(r.properties_error is None for r in rest)
    assert reader.pending_content() == []


def test_undecodable_properties_on_a_return_and_an_empty_body(impl):
    table = nested_table(100)
    method = method_frame(1, commands.Basic.Return(312, "NO_ROUTE", "ex", "k"))
    head = struct.pack(">HHQH", 60, 0, 0, 0x2000) + table
    (record,) = impl.FrameReader().feed(method + _frame(2, 1, head))
    assert record.kind == RETURN
    assert record.reply_code == 312
    assert record.body == b""
    assert "nested deeper than" in record.properties_error
    assert impl.Delivery(1, DELIVER).properties_error is None


@SETTINGS
@given(
    depth=st.integers(0, 300),
    kinds=st.lists(st.sampled_from([b"F", b"A"]), min_size=1, max_size=300),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=3),
    cuts=st.lists(st.integers(0, 4000), max_size=5),
)
def test_nested_headers_fuzz_raise_only_frame_error(impl, depth, kinds, flips, cuts):
    # tables and arrays mixed at any depth, some bytes corrupted: the reader yields
    # deliveries (marked when their properties are undecodable) or raises FrameError
    value = b"I\x00\x00\x00\x01"
    for i in range(depth):
        if kinds[i % len(kinds)] == b"F":
            content = b"\x01k" + value
            value = b"F" + struct.pack(">I", len(content)) + content
        else:
            value = b"A" + struct.pack(">I", len(value)) + value
    content = b"\x01k" + value
    table = struct.pack(">I", len(content)) + content
    method = method_frame(1, commands.Basic.Deliver("c", 1, False, "ex", "k"))
    head = struct.pack(">HHQH", 60, 0, 2, 0x2000) + table
    data = bytearray(method + _frame(2, 1, head) + _frame(3, 1, b"ok"))
    for pos, byte in flips:
        data[pos % len(data)] = byte
    reader = impl.FrameReader(8192)
    try:
        for piece in split(bytes(data), cuts):
            for record in reader.feed(piece):
                if not isinstance(record, tuple):
                    assert record.properties_error is None or isinstance(
                        record.properties_error, str
                    )
                    assert record.properties is not None
    except impl.FrameError:
        pass
    if not flips:
        assert reader.pending_content() == []


def test_pack_publish_refuses_properties_larger_than_frame_max(impl):
    method = impl.publish_method_frame(1, "ex", "rk")
    props = impl.encode_properties(impl.Properties(headers={"h": "x" * 200_000}))
    with pytest.raises(impl.PropertiesTooLarge) as info:
        impl.pack_publish(method, 1, props, b"body", 131072)
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, impl.FrameError)  # ours to refuse, not the peer's
    assert info.value.size == len(props) + 20
    assert info.value.frame_max == 131072
    assert "131072" in str(info.value) and str(len(props) + 20) in str(info.value)
    # the largest content header that fits: exactly frame_max bytes on the wire
    fits = b"\x00\x00" + b"\x00" * (4096 - 20 - 2)
    packed = impl.pack_publish(method, 1, fits, b"", 4096)
    assert len(packed) == len(method) + 4096
    with pytest.raises(impl.PropertiesTooLarge):
        impl.pack_publish(method, 1, fits + b"\x00", b"", 4096)
    # frame_max 0 means no limit
    impl.pack_publish(method, 1, props, b"", 0)


@pytest.mark.parametrize(
    "table",
    [
        {"big": 2**63},
        {"small": -(2**63) - 1},
        {"object": object()},
        {"k" * 256: 1},
        {"nested": {"set": {1, 2}}},
    ],
    ids=["int-too-big", "int-too-small", "object", "long-key", "nested-set"],
)
def test_encode_table_refuses_what_amqp_cannot_carry(impl, table):
    with pytest.raises(ValueError):
        impl.encode_table(table)


def test_encode_table_integer_widths(impl):
    assert impl.encode_table({"a": 2**31 - 1})[6:7] == b"I"
    assert impl.encode_table({"a": 2**31})[6:7] == b"l"
    assert impl.encode_table({"a": True})[6:] == b"t\x01"
    assert impl.encode_table({}) == b"\x00\x00\x00\x00"


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(fields=our_properties(), body_size=st.integers(0, 2**64 - 1))
def test_properties_round_trip(impl, fields, body_size):
    payload = header_payload(impl.encode_properties(impl.Properties(**fields)), body_size)
    size, decoded = impl.decode_properties(payload)
    assert size == body_size
    assert props_dict(decoded) == fields
    assert decoded == impl.Properties(**fields)


def test_no_properties_encode_as_empty_flags(impl):
    assert impl.encode_properties(None) == b"\x00\x00"
    assert impl.encode_properties(impl.Properties()) == b"\x00\x00"
    size, props = impl.decode_properties(header_payload(b"\x00\x00", 7))
    assert size == 7
    assert props == impl.Properties()


@SETTINGS
@given(pair=pamqp_properties(), body_size=st.integers(0, 2**40))
def test_decode_properties_reads_pamqp_content_header(impl, pair, body_size):
    props, expected = pair
    payload = header.ContentHeader(0, body_size, props).marshal()
    size, decoded = impl.decode_properties(payload)
    assert size == body_size
    assert props_dict(decoded) == expected


@SETTINGS
@given(fields=our_properties(), body_size=st.integers(0, 2**40))
def test_pamqp_reads_our_properties(impl, fields, body_size):
    if fields["timestamp"] is not None:
        fields["timestamp"] %= 2**32  # pamqp reads bigger values as milliseconds
    payload = header_payload(impl.encode_properties(impl.Properties(**fields)), body_size)
    parsed = header.ContentHeader()
    parsed.unmarshal(payload)
    assert parsed.body_size == body_size
    got = {
        ("type" if name == "message_type" else name): getattr(parsed.properties, name)
        for name in commands.Basic.Properties.__slots__
    }
    if got["timestamp"] is not None:
        got["timestamp"] = int(got["timestamp"].timestamp())
    if got["cluster_id"] == "" and fields["cluster_id"] is None:
        got["cluster_id"] = None  # pamqp's default for an absent cluster_id
    assert got == fields


@SETTINGS
@given(
    fields=our_properties(
        headers=st.dictionaries(table_keys, st.text(max_size=10), max_size=4).map(
            lambda d: dict(sorted(d.items()))  # pamqp writes keys in sorted order
        )
    )
)
def test_properties_bytes_identical_to_pamqp(impl, fields):
    # pamqp drops empty strings and refuses cluster_id and other delivery modes
    fields = {k: (None if v == "" else v) for k, v in fields.items()}
    fields["cluster_id"] = None
    if fields["delivery_mode"] not in (None, 1, 2):
        fields["delivery_mode"] = 2
    if fields["timestamp"] is not None:
        fields["timestamp"] %= 2**32
    kwargs = {("message_type" if k == "type" else k): v for k, v in fields.items()}
    del kwargs["cluster_id"]
    if fields["timestamp"] is not None:
        kwargs["timestamp"] = datetime.datetime.fromtimestamp(fields["timestamp"], datetime.UTC)
    reference = commands.Basic.Properties(**kwargs)
    assert impl.encode_properties(impl.Properties(**fields)) == reference.marshal()


def test_shortstr_longer_than_255_bytes_is_refused(impl):
    with pytest.raises(ValueError, match="255"):
        impl.encode_properties(impl.Properties(correlation_id="é" * 128))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (struct.pack(">HHQH", 50, 0, 0, 0), "expected Basic"),
        (struct.pack(">HHQH", 60, 0, 0, 1), "continuation"),
        (struct.pack(">HHQ", 60, 0, 0) + b"\x80", "truncated"),
        (struct.pack(">HHQH", 60, 0, 0, 0x8000) + b"\x05ab", "short string"),
        (struct.pack(">HHQH", 60, 0, 0, 0x1000), "truncated"),
        (struct.pack(">HHQH", 60, 0, 0, 0x1000) + b"\x02\x00", "does not match"),
    ],
)
def test_decode_properties_rejects_malformed(impl, payload, message):
    with pytest.raises(impl.FrameError, match=message):
        impl.decode_properties(payload)


# --------------------------------------------------------------------------- reader streams


@st.composite
def content_message(draw, frame_max):
    """A content-carrying method's frames (channel 0 for now) and the record it must give."""
    kind = draw(st.sampled_from(["deliver", "get-ok", "return"]))
    exchange = draw(exchange_names)
    routing_key = draw(shortstr)
    consumer_tag, tag, redelivered, code, text, count = "", 0, False, 0, "", 0
    if kind == "deliver":
        consumer_tag = draw(shortstr)
        tag = draw(pamqp_tags)
        redelivered = draw(st.booleans())
        method = commands.Basic.Deliver(
            consumer_tag=consumer_tag,
            delivery_tag=tag,
            redelivered=redelivered,
            exchange=exchange,
            routing_key=routing_key,
        )
    elif kind == "get-ok":
        tag = draw(pamqp_tags)
        redelivered = draw(st.booleans())
        count = draw(st.integers(0, 2**32 - 1))
        method = commands.Basic.GetOk(
            delivery_tag=tag,
            redelivered=redelivered,
            exchange=exchange,
            routing_key=routing_key,
            message_count=count,
        )
    else:
        code = draw(st.sampled_from([312, 313]))
        text = draw(shortstr)
        method = commands.Basic.Return(
            reply_code=code, reply_text=text, exchange=exchange, routing_key=routing_key
        )
    props, expected_props = draw(pamqp_properties())
    # Empty, one frame, and bodies bigger than frame_max spread over several body frames;
    # a broker may also send body frames smaller than it has to.
    data = draw(st.binary(max_size=3 * frame_max))
    chunk = draw(st.sampled_from([frame_max - 8, None])) or draw(st.integers(1, frame_max - 8))
    content_header = frame.marshal(header.ContentHeader(0, len(data), props), 0)
    assume(len(content_header) <= frame_max)
    frames = [frame.marshal(method, 0), content_header]
    frames += [_body_frame(0, piece) for piece in body_chunks(data, chunk)]
    kind_id = {"deliver": DELIVER, "get-ok": GET_OK, "return": RETURN}[kind]
    record = ("delivery", kind_id, consumer_tag, tag, redelivered, exchange, routing_key)
    return frames, (*record, code, text, count, expected_props, data)


def _body_frame(channel, piece):
    return struct.pack(">BHI", 3, channel, len(piece)) + piece + b"\xce"


@st.composite
def confirm_frame(draw):
    tag = draw(pamqp_tags)
    multiple = draw(st.booleans())
    if draw(st.booleans()):
        method = commands.Basic.Ack(delivery_tag=tag, multiple=multiple)
        return [frame.marshal(method, 0)], ("confirm", tag, multiple, False)
    method = commands.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=draw(st.booleans()))
    return [frame.marshal(method, 0)], ("confirm", tag, multiple, True)


OTHER_METHODS = [
    commands.Basic.ConsumeOk(consumer_tag="ctag-1"),
    commands.Basic.QosOk(),
    commands.Basic.GetEmpty(),
    commands.Basic.Cancel(consumer_tag="ctag-2"),
    commands.Queue.DeclareOk(queue="q", message_count=3, consumer_count=1),
    commands.Channel.Close(404, "NOT_FOUND - no queue 'q'", 50, 10),
    commands.Confirm.SelectOk(),
]
other_method = st.sampled_from(OTHER_METHODS).map(
    lambda m: ([frame.marshal(m, 0)], ("method", method_payload(m)))
)
HEARTBEAT = ([b"\x08\x00\x00\x00\x00\x00\x00\xce"], ("heartbeat",))


def _on_channel(raw_frame, channel):
    return raw_frame[:1] + struct.pack(">H", channel) + raw_frame[3:]


@st.composite
def wire_stream(draw):
    """Frames of several channels interleaved; returns (frame_max, bytes, expected records).

    Within a channel a message's frames stay together and in order (as the spec demands);
    frames of different channels interleave freely. Heartbeats travel on channel 0.
    """
    frame_max = draw(st.sampled_from([4096, 5000, 131072]))
    channels = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True))
    queues = {ch: [] for ch in [0, *channels]}
    items = draw(
        st.lists(
            st.tuples(
                st.sampled_from(channels),
                content_message(frame_max) | confirm_frame() | other_method | st.just(HEARTBEAT),
            ),
            max_size=8,
        )
    )
    for channel, (frames, record) in items:
        on = 0 if record[0] == "heartbeat" else channel
        for i, raw in enumerate(frames):
            done = record if i == len(frames) - 1 else None
            queues[on].append((_on_channel(raw, on), done))
    order = draw(st.permutations([ch for ch, q in queues.items() for _ in q]))
    positions = dict.fromkeys(queues, 0)
    data, expected = [], []
    for ch in order:
        raw, done = queues[ch][positions[ch]]
        positions[ch] += 1
        data.append(raw)
        if done is not None:
            expected.append((done[0], ch, *done[1:]))
    return frame_max, b"".join(data), expected


def normalize(impl, record):
    if isinstance(record, impl.Delivery):
        return (
            "delivery",
            record.channel,
            record.kind,
            record.consumer_tag,
            record.delivery_tag,
            record.redelivered,
            record.exchange,
            record.routing_key,
            record.reply_code,
            record.reply_text,
            record.message_count,
            props_dict(record.properties),
            bytes(record.body),
        )
    kind = record[0]
    if kind == impl.R_CONFIRM:
        return ("confirm", record[1], record[2], record[3], record[4])
    if kind == impl.R_HEARTBEAT:
        return ("heartbeat", record[1])
    assert kind == impl.R_METHOD, record
    return ("method", record[1], bytes(record[2]))


@SETTINGS
@given(stream=wire_stream(), cuts=st.lists(st.integers(0, 2**20), max_size=30))
def test_reader_assembles_streams_cut_anywhere(impl, stream, cuts):
    frame_max, data, expected = stream
    reader = impl.FrameReader(frame_max)
    records = []
    for piece in split(data, cuts):
        records += reader.feed(piece)
    assert [normalize(impl, r) for r in records] == expected
    assert reader.pending_content() == []
    assert reader.feed(b"") == []


def _deliver(channel, data, tag=1, frame_max=131072, properties=None):
    method = commands.Basic.Deliver(
        consumer_tag="c", delivery_tag=tag, exchange="ex", routing_key="rk"
    )
    return content_frames(channel, method, data, properties, frame_max=frame_max)


def test_reader_byte_by_byte(impl):
    deliver = _deliver(1, b"x" * 10000, frame_max=4096)
    data = deliver + method_frame(2, commands.Basic.Ack(delivery_tag=7, multiple=True))
    reader = impl.FrameReader(4096)
    arrivals = [(i, r) for i in range(len(data)) for r in reader.feed(data[i : i + 1])]
    assert [i for i, _ in arrivals] == [len(deliver) - 1, len(data) - 1]
    (_, delivery), (_, confirm) = arrivals
    assert delivery.kind == impl.DELIVER
    assert delivery.body == b"x" * 10000
    assert confirm == (impl.R_CONFIRM, 2, 7, True, False)


def test_truncated_frames_wait_for_more_data(impl):
    deliver = _deliver(1, b"hello")
    data = deliver + method_frame(1, commands.Basic.Nack(delivery_tag=3))
    for cut in range(len(data) + 1):
        reader = impl.FrameReader()
        first = reader.feed(data[:cut])
        assert len(first) == (cut >= len(deliver)) + (cut == len(data))
        records = first + reader.feed(data[cut:])
        assert [normalize(impl, r)[0] for r in records] == ["delivery", "confirm"]
        assert records[0].body == b"hello"
        assert records[1] == (impl.R_CONFIRM, 1, 3, False, True)


def test_partial_content_is_tracked_per_channel(impl):
    reader = impl.FrameReader()
    whole = _deliver(5, b"abcdef")
    header_end = len(whole) - len(_body_frame(5, b"abcdef"))
    assert reader.feed(whole[:header_end]) == []
    assert reader.pending_content() == [5]
    reader.discard_channel(5)
    assert reader.pending_content() == []
    with pytest.raises(impl.FrameError, match="unexpected content body"):
        reader.feed(whole[header_end:])


def test_empty_body_completes_on_the_header(impl):
    (record,) = impl.FrameReader().feed(_deliver(3, b""))
    assert record.body == b""
    assert record.channel == 3


def test_identical_properties_decode_once_unless_per_message(impl):
    plain = commands.Basic.Properties(content_type="application/json", app_id="tx")
    other = commands.Basic.Properties(content_type="text/plain", app_id="tx")
    by_id = commands.Basic.Properties(content_type="application/json", message_id="m")
    headed = commands.Basic.Properties(content_type="application/json", headers={"a": 1})
    sent = [plain, plain, other, plain, by_id, by_id, headed, headed]
    data = b"".join(_deliver(1, b"%d" % i, i + 1, properties=p) for i, p in enumerate(sent))
    got = impl.FrameReader().feed(data)
    # Every delivery reads its own properties, whatever is shared.
    assert [props_dict(d.properties) for d in got] == [
        props_dict(impl.decode_properties(header.ContentHeader(0, 1, p).marshal())[1]) for p in sent
    ]
    assert [d.body for d in got] == [b"%d" % i for i in range(len(sent))]
    # A repeat of the last shareable properties is the same object; a change decodes anew
    # (and becomes the one repeated); a message id or a header table is never shared.
    assert got[1].properties is got[0].properties
    assert got[2].properties is not got[1].properties
    assert got[3].properties is not got[0].properties
    assert got[5].properties is not got[4].properties
    assert got[7].properties is not got[6].properties
    assert got[6].properties_raw is not None and got[0].properties_raw is None
    assert impl.PER_MESSAGE_FLAGS & 0x2000 and impl.PER_MESSAGE_FLAGS & 0x0080


def test_one_consumer_says_whether_a_feed_is_deliveries_for_one_consumer(impl):
    def deliver(channel, tag="c"):
        method = commands.Basic.Deliver(consumer_tag=tag, delivery_tag=1, routing_key="rk")
        return content_frames(channel, method, b"x")

    ack = method_frame(1, commands.Basic.Ack(delivery_tag=1))
    get_ok_method = commands.Basic.GetOk(delivery_tag=1, routing_key="rk", message_count=0)
    get_ok = content_frames(1, get_ok_method, b"x")
    cases = [
        (deliver(1) * 3, True),
        (deliver(1), True),
        (b"", False),
        (deliver(1) + deliver(2), False),
        (deliver(1) + deliver(1, "d"), False),
        (deliver(1) + ack, False),
        (ack + deliver(1), False),
        (get_ok, False),
        (deliver(1)[:-3], False),  # nothing complete yet
    ]
    for data, expected in cases:
        reader = impl.FrameReader()
        records = reader.feed(data)
        assert reader.one_consumer is expected, (data, records)


# --------------------------------------------------------------------------- bad input


def _frame(ftype, channel, payload, end=b"\xce"):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + end


def _deliver_method(channel=1):
    return method_frame(
        channel, commands.Basic.Deliver(consumer_tag="c", delivery_tag=1, routing_key="rk")
    )


def _header(channel, body_size):
    return frame.marshal(header.ContentHeader(0, body_size), channel)


BAD_STREAMS = {
    "frame-end": (_frame(1, 0, b"\x00\x0a\x00\x33", end=b"\x00"), "frame end"),
    "frame-type": (_frame(5, 0, b"abc"), "unknown frame type 5"),
    "oversized": (struct.pack(">BHI", 3, 1, 200_000), "exceeds frame_max"),
    "body-without-header": (_frame(3, 1, b"body"), "unexpected content body"),
    "body-before-header": (_deliver_method() + _frame(3, 1, b"body"), "unexpected content body"),
    "header-without-method": (_header(1, 4), "unexpected content header"),
    "two-headers": (_deliver_method() + _header(1, 4) + _header(1, 4), "unexpected content header"),
    "body-too-long": (
        _deliver_method() + _header(1, 4) + _frame(3, 1, b"12") + _frame(3, 1, b"345"),
        "header said 4",
    ),
    "content-interrupted": (_deliver_method() + _deliver_method(), "before the last one"),
    "shortstr-length": (
        _frame(1, 1, b"\x00\x3c\x00\x3c\xc8ctag" + b"\x00" * 8 + b"\x00\x00\x00"),
        "short string",
    ),
    "deliver-trailing-bytes": (
        _frame(1, 1, method_payload(commands.Basic.Deliver("c", 1, False, "", "k")) + b"!"),
        "Basic.Deliver",
    ),
    "ack-short": (_frame(1, 1, b"\x00\x3c\x00\x50\x00\x00\x00\x01"), None),
    "ack-long": (_frame(1, 1, b"\x00\x3c\x00\x50" + b"\x00" * 10), "Basic.Ack"),
    "method-too-short": (_frame(1, 1, b"\x00\x3c"), "shorter than its class"),
    "protocol-header": (b"AMQP\x00\x00\x09\x01", "protocol header"),
    "protocol-header-0-10": (b"AMQP\x01\x01\x00\x0a", "protocol header"),
    "header-wrong-class": (
        _deliver_method() + _frame(2, 1, struct.pack(">HHQH", 50, 0, 1, 0)),
        "expected Basic",
    ),
    "shortstr-length-more-data-follows": (
        _frame(1, 1, b"\x00\x3c\x00\x3c\x30ctag" + b"\x00" * 8 + b"\x00\x00\x00")
        + b"\x08\x00\x00\x00\x00\x00\x00\xce" * 8,
        None,
    ),
}


@pytest.mark.parametrize("name", list(BAD_STREAMS))
def test_bad_input_raises_frame_error(impl, name):
    data, message = BAD_STREAMS[name]
    reader = impl.FrameReader(131072)
    with pytest.raises(impl.FrameError, match=message) as info:
        reader.feed(data)
    assert type(info.value) is impl.FrameError
    assert str(info.value)  # a readable reason, not an empty exception


def test_frame_max_zero_means_no_limit(impl):
    data = _deliver(1, b"y" * 300_000, frame_max=400_000)
    (record,) = impl.FrameReader(0).feed(data)
    assert len(record.body) == 300_000


def test_oversized_frame_is_refused_before_it_arrives(impl):
    # the header alone is enough to know: do not buffer a gigabyte first
    with pytest.raises(impl.FrameError, match="exceeds frame_max 4096"):
        impl.FrameReader(4096).feed(b"\x03\x00\x01\x00\x00\x10\x00")


@SETTINGS
@given(garbage=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_random_bytes_parse_or_raise_frame_error(impl, garbage, cuts):
    reader = impl.FrameReader(4096)
    try:
        for piece in split(garbage, cuts):
            reader.feed(piece)
    except impl.FrameError:
        pass


random_frames = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3, 8, 1, 1]),
        st.integers(0, 3),
        st.one_of(
            st.binary(max_size=40),
            # Basic.Deliver / GetOk / Return / Ack / Nack ids with random arguments
            st.tuples(st.sampled_from([50, 60, 71, 80, 120]), st.binary(max_size=40)).map(
                lambda mb: b"\x00\x3c" + struct.pack(">H", mb[0]) + mb[1]
            ),
            st.binary(max_size=40).map(lambda b: struct.pack(">HHQH", 60, 0, len(b), 0x2000) + b),
        ),
    ),
    max_size=12,
)


@SETTINGS
@given(frames=random_frames, cuts=st.lists(st.integers(0, 600), max_size=5))
def test_well_framed_random_payloads_parse_or_raise_frame_error(impl, frames, cuts):
    data = b"".join(_frame(ftype, channel, payload) for ftype, channel, payload in frames)
    reader = impl.FrameReader(4096)
    try:
        for piece in split(data, cuts):
            reader.feed(piece)
    except impl.FrameError:
        pass


@SETTINGS
@given(
    stream=wire_stream(),
    flips=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 2**20), max_size=5),
)
def test_corrupted_streams_parse_or_raise_frame_error(impl, stream, flips, cuts):
    frame_max, data, _ = stream
    if not data:
        return
    corrupted = bytearray(data)
    for pos, value in flips:
        corrupted[pos % len(data)] = value
    reader = impl.FrameReader(frame_max)
    try:
        for piece in split(bytes(corrupted), cuts):
            reader.feed(piece)
    except impl.FrameError:
        pass


# --------------------------------------------------------------------------- publish packing


def _unmarshal_all(data):
    frames = []
    while data:
        consumed, channel, parsed = frame.unmarshal(data)
        frames.append((channel, parsed, consumed))
        data = data[consumed:]
    return frames


@SETTINGS
@given(
    channel=st.integers(1, 65535),
    exchange=exchange_names,
    routing_key=shortstr,
    mandatory=st.booleans(),
)
def test_publish_method_frame_is_basic_publish(impl, channel, exchange, routing_key, mandatory):
    data = impl.publish_method_frame(channel, exchange, routing_key, mandatory)
    ((got_channel, method, _),) = _unmarshal_all(data)
    assert got_channel == channel
    assert isinstance(method, commands.Basic.Publish)
    assert (method.exchange, method.routing_key) == (exchange, routing_key)
    assert method.mandatory is mandatory
    assert method.immediate is False
    reference = commands.Basic.Publish(
        exchange=exchange, routing_key=routing_key, mandatory=mandatory
    )
    assert data == frame.marshal(reference, channel)


@SETTINGS
@given(
    channel=st.integers(1, 65535),
    fields=our_properties(),
    body=st.binary(max_size=20000),
    frame_max=st.sampled_from([0, 4096, 4097, 9000, 131072]),
)
def test_pack_publish_unmarshals_with_pamqp(impl, channel, fields, body, frame_max):
    if fields["timestamp"] is not None:
        fields["timestamp"] %= 2**32
    method = impl.publish_method_frame(channel, "ex", "rk")
    data = impl.pack_publish(
        method, channel, impl.encode_properties(impl.Properties(**fields)), body, frame_max
    )
    frames = _unmarshal_all(data)
    assert data.startswith(method)
    assert all(ch == channel for ch, _, _ in frames)
    assert isinstance(frames[0][1], commands.Basic.Publish)
    content = frames[1][1]
    assert isinstance(content, header.ContentHeader)
    assert content.body_size == len(body)
    assert content.properties.correlation_id == fields["correlation_id"]
    assert content.properties.message_type == fields["type"]
    assert content.properties.headers == fields["headers"]
    bodies = frames[2:]
    assert b"".join(parsed.value for _, parsed, _ in bodies) == body
    if frame_max:
        assert all(consumed <= frame_max for _, _, consumed in bodies)
        assert len(bodies) == -(-len(body) // (frame_max - 8))
    else:
        assert len(bodies) == (1 if body else 0)


@SETTINGS
@given(fields=our_properties(), body=st.binary(max_size=10000))
def test_pack_publish_matches_the_fields_a_deliver_would_carry(impl, fields, body):
    # what we pack, a broker hands back unchanged in a Basic.Deliver: reading it back
    # through our own reader closes the loop
    props = impl.encode_properties(impl.Properties(**fields))
    packed = impl.pack_publish(impl.publish_method_frame(1, "", "q"), 1, props, body, 4096)
    method_len = len(impl.publish_method_frame(1, "", "q"))
    deliver = _deliver_method(1)
    (record,) = impl.FrameReader().feed(deliver + packed[method_len:])
    assert record.body == body
    assert props_dict(record.properties) == fields


@SETTINGS
@given(
    channel=st.integers(0, 65535),
    tag=pamqp_tags,
    multiple=st.booleans(),
    requeue=st.booleans(),
)
def test_pack_ack_and_nack(impl, channel, tag, multiple, requeue):
    ack = impl.pack_ack(channel, tag, multiple)
    assert ack == frame.marshal(commands.Basic.Ack(delivery_tag=tag, multiple=multiple), channel)
    nack = impl.pack_ack(channel, tag, multiple, True, requeue)
    reference = commands.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
    assert nack == frame.marshal(reference, channel)
    ((_, parsed, _),) = _unmarshal_all(nack)
    assert (parsed.delivery_tag, parsed.multiple, parsed.requeue) == (tag, multiple, requeue)


@pytest.mark.parametrize("nack", [False, True])
def test_pack_ack_full_tag_range_reads_back(impl, nack):
    # tags are unsigned 64-bit on the wire (pamqp stops at 2**63 - 1)
    data = impl.pack_ack(9, 2**64 - 1, True, nack, False)
    assert impl.FrameReader().feed(data) == [(impl.R_CONFIRM, 9, 2**64 - 1, True, nack)]


def test_heartbeat_frame_constant(impl):
    assert _speedups.HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"
    assert impl.FrameReader().feed(_speedups.HEARTBEAT_FRAME) == [(impl.R_HEARTBEAT, 0)]


# --------------------------------------------------------------------------- twins agree


def _outcome(impl, chunks):
    """Records (as comparable tuples) or the FrameError message, for one implementation."""
    reader = impl.FrameReader(8192)
    out = []
    try:
        for chunk in chunks:
            for record in reader.feed(chunk):
                if isinstance(record, tuple):
                    out.append(record)
                    continue
                props = record.properties
                out.append(
                    (
                        record.channel,
                        record.kind,
                        record.consumer_tag,
                        record.delivery_tag,
                        record.redelivered,
                        record.exchange,
                        record.routing_key,
                        record.reply_code,
                        record.reply_text,
                        record.message_count,
                        record.body,
                        tuple(getattr(props, n) for n in _frames_py.PROPERTY_NAMES),
                        record.properties_error,
                    )
                )
    except impl.FrameError as exc:
        return out, str(exc)
    return out, None


@pytest.mark.skipif(len(FRAME_TWINS) < 2, reason="the compiled twin is not built")
@settings(max_examples=300, deadline=None)
@given(
    seed_stream=st.lists(
        st.sampled_from(
            [
                method_frame(1, commands.Basic.Ack(delivery_tag=7, multiple=True)),
                b"\x08\x00\x00\x00\x00\x00\x00\xce",
                method_frame(2, commands.Basic.Qos(prefetch_count=3)),
            ]
        )
        | st.builds(
            lambda body, ch: content_frames(
                ch,
                commands.Basic.Deliver("ctag", 1, False, "ex", "a.b"),
                body,
                commands.Basic.Properties(content_type="text/plain", app_id="x"),
                frame_max=4096,
            ),
            st.binary(max_size=9000),
            st.integers(1, 3),
        ),
        max_size=6,
    ),
    mutations=st.lists(st.tuples(st.integers(0, 20000), st.integers(0, 255)), max_size=4),
    cuts=st.lists(st.integers(0, 20000), max_size=5),
)
def test_both_twins_agree_on_any_stream(seed_stream, mutations, cuts):
    data = bytearray(b"".join(seed_stream))
    for pos, value in mutations:  # corrupt a few bytes anywhere
        if data:
            data[pos % len(data)] = value
    data = bytes(data)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    py_result = _outcome(_frames_py, chunks)
    compiled_result = _outcome(FRAME_TWINS[1], chunks)
    assert py_result == compiled_result
