"""core/message.py: `Message`, the view a behaviour gets of a delivery, and the properties
of a copy of one (`copy_properties`: retries, dead letters, requeues).

On their own: what a message reads straight from its delivery, `decode()` through the
envelope codec, a message of no channel counting as settled, the repr. In an agent, on
RabbitMQ and memory://: `ack()` settles once and the queue ends empty.
"""

from __future__ import annotations

import msgspec
import pytest
from broker_tools import wait_until
from mesh_tools import Point, delivered, uid

from munggoggo import Agent, Behaviour
from munggoggo._speedups import DELIVER, Delivery, Properties
from munggoggo.agent import open_connection
from munggoggo.envelope import DecodeError
from munggoggo.message import Message, ack_all, copy_properties
from munggoggo.url import parse_urls


def test_a_message_reads_its_fields_from_the_delivery():
    msg = delivered(
        b"hello",
        routing_key="greetings.en",
        app_id="alice",
        type="message",
        content_type="text/plain",
        correlation_id="c-1",
        reply_to="alice.inbox",
        headers={"lang": "en"},
        timestamp=1_700_000_000,
        message_id="m-1",
    )
    assert (msg.body, msg.routing_key, msg.exchange) == (b"hello", "greetings.en", "")
    assert (msg.sender, msg.kind, msg.content_type) == ("alice", "message", "text/plain")
    assert (msg.correlation_id, msg.reply_to, msg.message_id) == ("c-1", "alice.inbox", "m-1")
    assert msg.headers == {"lang": "en"} and msg.timestamp == 1_700_000_000
    assert msg.redelivered is False and msg.delivery.body == b"hello"


def test_missing_properties_read_as_a_plain_message_without_headers():
    msg = delivered(b"x")
    assert msg.kind == "message"
    assert msg.headers == {}
    assert msg.sender is None and msg.content_type is None and msg.timestamp is None


def test_decode_goes_through_the_envelope_codec():
    point = delivered(msgspec.json.encode(Point(3, 4)), content_type="application/json")
    assert point.decode() == {"x": 3, "y": 4}
    assert point.decode(Point) == Point(3, 4)
    assert delivered(b"caf\xc3\xa9", content_type="text/plain").decode() == "café"
    assert delivered(b"\x00\x01", content_type="application/octet-stream").decode() == b"\x00\x01"


def test_decode_errors_and_types_are_the_same_on_every_call():
    """decode() keeps the decoder it found per (content type, type): a second call takes
    the same way, a malformed or invalid body raises DecodeError every time, and a
    type msgspec cannot decode into is a TypeError every time."""
    good = delivered(b'{"x": 1, "y": 2}', content_type="application/json")
    bad = delivered(b'{"x": 1', content_type="application/json")
    invalid = delivered(b'{"x": "one", "y": 2}', content_type="application/json")
    untyped = delivered(b'{"x": 1, "y": 2}')  # no content type: JSON only when typed
    for _ in range(2):
        assert good.decode(Point) == Point(1, 2) and good.decode() == {"x": 1, "y": 2}
        assert untyped.decode(Point) == Point(1, 2) and untyped.decode() == b'{"x": 1, "y": 2}'
        for msg in (bad, invalid):
            with pytest.raises(DecodeError):
                msg.decode(Point)
        with pytest.raises(DecodeError):
            bad.decode()
        with pytest.raises(TypeError):
            good.decode(object())


async def test_a_batch_of_messages_settles_as_one_message_per_delivery_would(mesh_url):
    """`Message.batch` makes what `Message(d, channel, queue)` makes for each delivery;
    `ack_all` acks those not settled yet, once each, and the queue ends empty."""
    queue = uid("msg-batch")
    conn = await open_connection(parse_urls(mesh_url), queue)
    try:
        ch = await conn.channel()
        await ch.queue_declare(queue, durable=True, arguments={"x-expires": 60_000})
        for i in range(6):
            ch.publish(str(i).encode(), "", queue)
        await ch.wait_confirms(timeout=10)
        got: list = []
        await ch.consume(queue, got.extend)
        assert await wait_until(lambda: len(got) == 6)
        batch = Message.batch(got[:3], ch, queue)
        one_by_one = [Message(d, ch, queue) for d in got[3:]]
        for msg, d in zip(batch + one_by_one, got, strict=True):
            assert (msg.delivery, msg.queue, msg.settled, msg.stale) == (d, queue, False, False)
        assert batch[1].ack() is True
        messages = batch + one_by_one
        ack_all(messages)
        assert messages == [] and all(m.settled for m in batch + one_by_one)
        assert batch[1].ack() is False  # settled once
        await ch.close()
        check = await conn.channel()
        assert (await check.queue_declare(queue, passive=True)).message_count == 0
        await check.queue_delete(queue)
    finally:
        await conn.close()


def test_a_message_of_no_channel_counts_as_settled():
    msg = delivered(b"x")
    assert msg.settled
    assert msg.ack() is False and msg.nack() is False


def test_the_repr_names_kind_sender_key_and_the_start_of_the_body():
    text = repr(delivered(b"y" * 100, routing_key="k", app_id="bob", content_type="text/plain"))
    assert text.startswith("<Message message from 'bob' key='k' text/plain ")
    assert repr(b"y" * 40 + b"...") in text


def test_a_copy_keeps_the_properties_but_user_id_and_expiration():
    delivery = Delivery(1, DELIVER)
    delivery.properties = Properties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"old": 1},
        delivery_mode=1,
        priority=5,
        correlation_id="c",
        reply_to="r",
        expiration="60000",
        message_id="m",
        timestamp=1_700_000_000,
        type="message",
        user_id="guest",
        app_id="alice",
    )
    copy = copy_properties(delivery, {"new": 2})
    assert copy.headers == {"new": 2}
    kept = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id")
    kept += ("reply_to", "message_id", "timestamp", "type", "app_id")
    for name in kept:
        assert getattr(copy, name) == getattr(delivery.properties, name), name
    # The publisher of the copy is rarely the original user; a retry starts its life anew.
    assert copy.user_id is None and copy.expiration is None
    persistent = copy_properties(delivery, {}, expiration="5", delivery_mode=2)
    assert persistent.expiration == "5" and persistent.delivery_mode == 2


# -- in an agent, on RabbitMQ and memory:// ----------------------------------------------


async def test_explicit_ack_and_at_least_once_settling(mesh_url):
    topic = uid("t")

    class Acker(Behaviour):
        async def setup(self) -> None:
            self.seen: list = []

        async def run(self) -> None:
            msg = await self.receive(timeout=0.1)
            if msg is not None:
                assert msg.ack() is True
                assert msg.ack() is False  # settling twice is a no-op
                self.seen.append(msg)

    agent = Agent(uid("acker"), url=mesh_url)
    async with agent:
        b = await agent.add_behaviour(Acker(agent, binding_keys=[topic]))
        for i in range(10):
            await agent.publish(str(i), topic)
        assert await wait_until(lambda: len(b.seen) == 10)
        assert all(m.settled for m in b.seen)
        ch = await agent.connection.channel()
        assert await wait_until(lambda: True)
        ok = await ch.queue_declare(b.queue, passive=True)
        assert ok.message_count == 0
