"""Micro benchmarks of the frame hot paths, fed directly (no sockets, no broker).

Run with `pytest bench/test_micro_frames.py --benchmark-only -q`. Each benchmark runs once
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
