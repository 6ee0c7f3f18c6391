"""A content header frame over frame_max from the broker is one message, not a dead stream.

RabbitMQ cannot split a content header, and dead-lettering adds an `x-death` table to
headers that were already near frame_max: it then sends a header frame over the limit.
The reader takes such a frame (up to HEADER_SLACK over), on both twins; anything further
over, or another kind of frame over the limit, is still a broken stream.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from amqp_peer import content_frames
from broker_tools import wait_until
from pamqp import commands
from twins import FRAME_TWINS, twin_id

from munggoggo._speedups import Properties, encode_properties
from munggoggo.client import Connection

FRAME_MAX = 8192


@pytest.fixture(params=FRAME_TWINS, ids=twin_id)
def impl(request):
    return request.param


def deliver_with_headers(size: int) -> bytes:
    deliver = commands.Basic.Deliver("ctag", 1, False, "", "q")
    properties = commands.Basic.Properties(headers={"h": "x" * size})
    return content_frames(1, deliver, b"body", properties, frame_max=FRAME_MAX)


def test_a_header_frame_a_little_over_frame_max_is_read(impl):
    reader = impl.FrameReader(FRAME_MAX)
    data = deliver_with_headers(FRAME_MAX)  # the header frame alone is over frame_max
    (record,) = reader.feed(data)
    assert record.body == b"body"
    assert record.properties.headers == {"h": "x" * FRAME_MAX}


def test_a_header_frame_far_over_frame_max_is_refused(impl):
    reader = impl.FrameReader(FRAME_MAX)
    with pytest.raises(impl.FrameError):
        reader.feed(deliver_with_headers(FRAME_MAX + impl.HEADER_SLACK))


def test_a_body_frame_over_frame_max_is_still_refused(impl):
    reader = impl.FrameReader(FRAME_MAX)
    body = b"\x03\x00\x01" + (FRAME_MAX).to_bytes(4, "big") + bytes(FRAME_MAX) + b"\xce"
    with pytest.raises(impl.FrameError):
        reader.feed(body)


async def test_a_dead_letter_grown_over_frame_max_is_delivered(broker_url):
    """The broker's own oversize frame: a message whose headers nearly fill frame_max is
    rejected into a dead-letter queue; reading it there keeps the connection."""
    rid = uuid.uuid4().hex[:8]
    source, dead = f"test.oversize.src.{rid}", f"test.oversize.dead.{rid}"
    url = broker_url + ("&" if "?" in broker_url else "?") + f"frame_max={FRAME_MAX}"
    async with Connection(url) as conn:
        ch = await conn.channel()
        args = {"x-expires": 60_000}
        await ch.queue_declare(dead, durable=True, arguments=args)
        await ch.queue_declare(
            source,
            durable=True,
            arguments={**args, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead},
        )
        props = encode_properties(Properties(headers={"h": "x" * (FRAME_MAX - 200)}))
        await ch.wait_confirms(ch.publish(b"near the limit", "", source, props))
        got = await ch.get(source)
        assert got is not None
        ch.reject(got.delivery_tag, requeue=False)
        received = []
        await ch.consume(dead, received.extend, no_ack=True)
        assert await wait_until(lambda: len(received) == 1, timeout=10)
        assert received[0].body == b"near the limit"
        assert "x-death" in received[0].properties.headers
        await asyncio.sleep(0.1)
        assert conn.reconnects == 0 and conn.is_open
        await ch.queue_delete(source)
        await ch.queue_delete(dead)
