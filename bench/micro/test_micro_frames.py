"""Micro benchmarks of the frame hot paths, fed directly (no sockets, no broker).

Run with `pytest bench/micro/test_micro_frames.py --benchmark-only -q`. Each benchmark runs once
per importable implementation: the pure-Python twin always, the compiled one when built.
"""

from __future__ import annotations

import importlib
import struct
from types import ModuleType

import pytest

DELIVERIES = 1000
BODY = b"x" * 100
FRAME_MAX = 131072


def _implementation(name: str) -> pytest.ParameterSet:
    try:
        module = importlib.import_module(f"munggoggo._speedups.{name}")
    except ImportError:
        return pytest.param(None, id=name, marks=pytest.mark.skip(reason=f"{name} not built"))
    return pytest.param(module, id=name)


IMPLEMENTATIONS = [_implementation("_frames_py"), _implementation("_frames")]


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    return bytes([len(raw)]) + raw


def deliver_method_frame(channel: int, consumer_tag: str, delivery_tag: int, queue: str) -> bytes:
    """A Basic.Deliver method frame, as the broker sends it."""
    payload = (
        b"\x00\x3c\x00\x3c"  # class 60 (basic), method 60 (deliver)
        + _shortstr(consumer_tag)
        + struct.pack(">QB", delivery_tag, 0)  # tag, redelivered=false
        + _shortstr("")  # default exchange
        + _shortstr(queue)
    )
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def delivery_buffer(frames: ModuleType, count: int) -> bytes:
    """`count` deliveries (method, header, body frames) in one received buffer."""
    props = frames.encode_properties(
        frames.Properties(content_type="application/octet-stream", app_id="bench")
    )
    # pack_publish only prepends its method frame: give it a Deliver one instead.
    return b"".join(
        frames.pack_publish(
            deliver_method_frame(1, "mg.1.1", tag, "amq.gen-bench"), 1, props, BODY, FRAME_MAX
        )
        for tag in range(1, count + 1)
    )


@pytest.mark.parametrize("frames", IMPLEMENTATIONS)
def test_frame_reader_feed_1000_deliveries(benchmark, frames: ModuleType) -> None:
    data = delivery_buffer(frames, DELIVERIES)
    reader = frames.FrameReader(FRAME_MAX)

    records = benchmark(reader.feed, data)

    assert len(records) == DELIVERIES
    assert records[-1].delivery_tag == DELIVERIES
    assert records[-1].body == BODY
    assert records[-1].properties.app_id == "bench"


@pytest.mark.parametrize("frames", IMPLEMENTATIONS)
def test_pack_publish_100_bytes(benchmark, frames: ModuleType) -> None:
    method_frame = frames.publish_method_frame(1, "", "amq.gen-bench")
    props = frames.encode_properties(
        frames.Properties(content_type="application/octet-stream", app_id="bench")
    )

    data = benchmark(frames.pack_publish, method_frame, 1, props, BODY, FRAME_MAX)

    # method frame + content header (7 + 12 + props + 1) + body frame (7 + body + 1)
    assert len(data) == len(method_frame) + 20 + len(props) + 8 + len(BODY)


@pytest.mark.parametrize("frames", IMPLEMENTATIONS)
def test_frame_split_1000_confirms(benchmark, frames: ModuleType) -> None:
    """Frame split alone: a buffer of small method frames (broker acks for confirms)."""
    data = b"".join(
        struct.pack(">BHI", 1, 1, 13) + b"\x00\x3c\x00\x50" + struct.pack(">QB", tag, 0) + b"\xce"
        for tag in range(1, DELIVERIES + 1)
    )
    reader = frames.FrameReader(FRAME_MAX)

    records = benchmark(reader.feed, data)

    assert len(records) == DELIVERIES
    assert records[-1][2] == DELIVERIES


@pytest.mark.parametrize("frames", IMPLEMENTATIONS)
def test_properties_round_trip(benchmark, frames: ModuleType) -> None:
    props = frames.Properties(
        content_type="application/json",
        type="rpc",
        app_id="agent-1",
        correlation_id="agent-1.abc.17",
        reply_to="agent-1",
        timestamp=1_700_000_000,
    )

    def round_trip():
        encoded = frames.encode_properties(props)
        return frames.decode_properties(b"\x00\x3c\x00\x00" + b"\x00" * 8 + encoded)

    _, decoded = benchmark(round_trip)
    assert decoded == props


def _reading_type():
    import msgspec

    class Reading(msgspec.Struct):
        sensor: str
        value: float
        seq: int

    return Reading


READING = _reading_type()


def test_envelope_encode_struct(benchmark) -> None:
    from munggoggo import envelope

    value = READING("t-1", 21.5, 7)
    body, content_type = benchmark(envelope.encode_body, value)
    assert content_type == envelope.JSON and b'"t-1"' in body


def test_envelope_decode_struct(benchmark) -> None:
    from munggoggo import envelope

    body, content_type = envelope.encode_body(READING("t-1", 21.5, 7))
    value = benchmark(envelope.decode_body, body, content_type, READING)
    assert value == READING("t-1", 21.5, 7)
