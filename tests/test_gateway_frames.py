"""gateway/frames.py: the WebSocket's frames, without a socket.

The op Structs' decoder is the fast path; a plain JSON decode is the reference it must agree
with on every input (the frame it yields, or the error answer and echoed id), including the
inputs the Struct decoder would skip over (unknown fields holding invalid JSON values).
Server frames keep the wire layout clients read: op first, an echoed id last.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from munggoggo.gateway.frames import (
    OPS,
    BadFrame,
    Call,
    Dropped,
    ErrorFrame,
    MessageFrame,
    Publish,
    Published,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    decode_frame,
    decode_frame_plain,
    encode,
)


def answer(decode, body: bytes):
    """The frame, or ("bad", message, id) for a refused one."""
    try:
        return decode(body)
    except BadFrame as bad:
        return ("bad", bad.message, bad.id)


def test_ops_decode_into_their_structs():
    assert decode_frame(b'{"op":"subscribe","topic":"a.*","id":1}') == Subscribe(id=1, topic="a.*")
    assert decode_frame(b'{"topic":"a","op":"unsubscribe"}') == Unsubscribe(topic="a")
    frame = decode_frame(b'{"op":"publish","topic":"a.b","body":null,"headers":{"h":1}}')
    assert frame == Publish(topic="a.b", body=None, headers={"h": 1})
    assert decode_frame(b'{"op":"publish","topic":"a.b"}').body is UNSET
    assert decode_frame(b'{"op":"subscribe","id":null}').id is None
    assert decode_frame(b'{"op":"subscribe"}').id is UNSET
    assert OPS == ("publish", "subscribe", "unsubscribe")


def test_jsonrpc_frames_are_calls_with_their_bytes():
    for body in [
        b'{"jsonrpc":"2.0","method":"a.b","id":1}',
        b'[{"jsonrpc":"2.0","method":"a.b"}]',
        b"[]",
        b'{"op":"subscribe","topic":"a","jsonrpc":"2.0"}',  # "jsonrpc" wins over "op"
        b'{"op":"dance","jsonrpc":null}',
    ]:
        assert decode_frame(body) == Call(body)


def test_refusals_say_why_and_echo_the_id():
    assert answer(decode_frame, b"{not json")[1].startswith("that frame is not valid JSON")
    assert answer(decode_frame, b"1") == (
        "bad",
        'send a JSON object such as {"op": "subscribe", "topic": "sensors.*"}',
        UNSET,
    )
    ops = "publish, subscribe, unsubscribe"
    assert answer(decode_frame, b'{"op":"dance","id":3}') == (
        "bad",
        f"unknown op 'dance': use one of {ops}",
        3,
    )
    assert answer(decode_frame, b'{"op":5}') == ("bad", f"unknown op 5: use one of {ops}", UNSET)
    assert answer(decode_frame, b'{"topic":"a","id":1}') == (
        "bad",
        f'a frame needs an "op" ({ops}) or must be JSON-RPC 2.0',
        UNSET,
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"op":"subscribe","x":1e999}',  # a value the Struct decoder would skip
        b'{"op":"subscribe","x":"\xff"}',
        b'{"op":"subscribe","\xff":1}',
        b'{"op":"subscribe","topic":1e999}',
        b'{"op":"subscribe","topic":"a"} x',
        b'{"op":"subscribe","x":"\\q"}',
    ],
)
def test_invalid_json_anywhere_is_invalid_json(body):
    assert answer(decode_frame, body)[1].startswith("that frame is not valid JSON")
    assert answer(decode_frame, body) == answer(decode_frame_plain, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"op":"subscribe","op":"publish","topic":"a","body":1}',  # the last key wins
        b'{"op":"subscribe","topic":"a","topic":"b","id":1,"id":2}',
        b'{"op":"subscribe","topic":"a","extra":[1,{"b":2}]}',  # fields of its own: ignored
        b'{"o\\u0070":"subscribe","topic":"e"}',
        b'{"op":"sub\\u0073cribe","topic":"e"}',
    ],
)
def test_the_fast_path_agrees_with_a_plain_decode(body):
    assert answer(decode_frame, body) == answer(decode_frame_plain, body)
    assert not isinstance(answer(decode_frame, body), tuple)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
frame_keys = st.sampled_from(["op", "topic", "body", "headers", "id", "jsonrpc", "x"])
op_values = st.sampled_from([*OPS, "dance", ""]) | json_values


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(frame_keys, json_values), max_size=6),
    op_values,
    st.booleans(),
    st.integers(min_value=0, max_value=200),
)
def test_any_frame_gets_the_answer_a_plain_decode_gives(pairs, op, with_op, cut):
    members = [("op", op)] * with_op + pairs
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in members) + "}"
    out_of_range = text[:-1] + ("," if members else "") + '"x":1e999}'
    for body in (text.encode(), text.encode()[:cut], out_of_range.encode()):
        assert answer(decode_frame, body) == answer(decode_frame_plain, body)


def test_server_frames_keep_their_wire_layout():
    assert encode(Subscribed("a.*")) == '{"op":"subscribed","topic":"a.*"}'
    assert encode(Unsubscribed("a.*", 7)) == '{"op":"unsubscribed","topic":"a.*","id":7}'
    assert encode(Published("a.b", None)) == '{"op":"published","topic":"a.b","id":null}'
    assert encode(ErrorFrame("no", "x")) == '{"op":"error","error":"no","id":"x"}'
    assert encode(Dropped(3)) == '{"op":"dropped","count":3}'
    assert encode(MessageFrame("t", None, {"a": 1})) == (
        '{"op":"message","topic":"t","sender":null,"body":{"a":1}}'
    )
    assert encode(MessageFrame("t", "s", "eA==", "base64")) == (
        '{"op":"message","topic":"t","sender":"s","body":"eA==","encoding":"base64"}'
    )
