"""ChannelPublisher, the one-call publish path of a channel: both twins queue exactly the
frames `publish_method_frame` + `pack_publish` make, number them with the channel's
ConfirmTracker, keep the method-frame cache bounded, and queue nothing on a channel that is
not open or for a publish that cannot be encoded."""

from __future__ import annotations

import pytest
from twins import CONFIRM_TWINS, FRAME_TWINS, twin_id


@pytest.fixture(params=FRAME_TWINS, ids=twin_id)
def frames(request):
    return request.param


@pytest.fixture(params=CONFIRM_TWINS, ids=twin_id)
def confirms(request):
    return request.param


def expected(frames, channel, exchange, routing_key, props, body, mandatory, frame_max):
    method = frames.publish_method_frame(channel, exchange, routing_key, mandatory)
    return frames.pack_publish(method, channel, props, body, frame_max)


def test_publishes_the_frames_pack_publish_makes_numbered_by_the_tracker(frames, confirms):
    out = bytearray(b"before")
    pub = frames.ChannelPublisher(3, out, 4096)
    pub.is_open = True
    props = frames.encode_properties(frames.Properties(content_type="application/json"))
    big = bytes(range(256)) * 40  # split into body frames of frame_max
    calls = [
        ("ex", "a.b", b"one", False),
        ("ex", "a.b", b"two", False),  # the last key again
        ("", "agent-x", big, True),
        ("ex", "a.b", b"", True),  # same key, other mandatory flag
        ("ex", "a.b", b"three", False),
    ]
    assert pub.publish("ex", "a.b", props, b"zero") == 0  # no confirms yet: 0
    want = b"before" + expected(frames, 3, "ex", "a.b", props, b"zero", False, 4096)
    tracker = confirms.ConfirmTracker()
    pub.confirms = tracker
    for seq, (exchange, key, body, mandatory) in enumerate(calls, 1):
        assert pub.publish(exchange, key, props, body, mandatory) == seq
        want += expected(frames, 3, exchange, key, props, body, mandatory, 4096)
    assert bytes(out) == want
    assert len(tracker) == len(calls)
    # The tracker keeps each publish's frames for a republish after a reconnect.
    kept = tracker.fail_all()
    assert [seq for seq, _ in kept] == [1, 2, 3, 4, 5]
    assert kept[2][1] == expected(frames, 3, "", "agent-x", props, big, True, 4096)


def test_queues_nothing_unless_open_or_encodable(frames, confirms):
    out = bytearray()
    pub = frames.ChannelPublisher(1, out, 4096)
    tracker = confirms.ConfirmTracker()
    pub.confirms = tracker
    props = frames.encode_properties(None)
    assert pub.publish("ex", "rk", props, b"body") == -1  # not open yet
    pub.is_open = True
    with pytest.raises(frames.PropertiesTooLarge):
        pub.publish("ex", "rk", b"\x00" * 5000, b"body")
    with pytest.raises(ValueError):
        pub.publish("ex", "k" * 256, props, b"body")
    assert out == bytearray() and len(tracker) == 0 and tracker.last_seq == 0
    assert pub.publish("ex", "rk", props, b"body") == 1
    pub.is_open = False
    assert pub.publish("ex", "rk", props, b"body") == -1
    assert len(tracker) == 1 and bytes(out) == expected(
        frames, 1, "ex", "rk", props, b"body", False, 4096
    )


def test_method_frame_cache_is_bounded(frames):
    out = bytearray()
    pub = frames.ChannelPublisher(2, out, 0)
    pub.is_open = True
    props = frames.encode_properties(None)
    keys = [f"key.{i}" for i in range(frames.MAX_CACHED_FRAMES + 50)]
    for key in keys + keys[:3] + keys[-3:]:  # past the bound, and cached and uncached again
        pub.publish("ex", key, props, b"x")
    assert bytes(out) == b"".join(
        expected(frames, 2, "ex", key, props, b"x", False, 0) for key in keys + keys[:3] + keys[-3:]
    )


@pytest.mark.parametrize(
    "exchange, routing_key, properties",
    [
        (None, None, "props"),  # the first publish: no cached route may match None
        ("ex", "rk", None),
        ("ex", "rk", "bytearray"),
        ("ex", "rk", "memoryview"),
        ("ex", "rk", "str"),
    ],
)
def test_refuses_bad_input_with_type_error_and_queues_nothing(
    frames, confirms, exchange, routing_key, properties
):
    out = bytearray()
    pub = frames.ChannelPublisher(1, out, 4096)
    tracker = confirms.ConfirmTracker()
    pub.confirms = tracker
    pub.is_open = True
    props = frames.encode_properties(frames.Properties(content_type="text/plain"))
    bad = {
        "props": props,
        None: None,
        "bytearray": bytearray(props),
        "memoryview": memoryview(props),
        "str": "text/plain",
    }[properties]
    with pytest.raises(TypeError):
        pub.publish(exchange, routing_key, bad, b"body")
    if bad is not props:
        with pytest.raises(TypeError):
            frames.pack_publish(frames.publish_method_frame(1, "ex", "rk"), 1, bad, b"body", 4096)
    assert out == bytearray() and len(tracker) == 0 and tracker.last_seq == 0
    # Nothing was lost or numbered: the next publish is the first.
    assert pub.publish("ex", "rk", props, b"body") == 1
    assert bytes(out) == expected(frames, 1, "ex", "rk", props, b"body", False, 4096)
