"""Wire interop with aiormq, an independent AMQP client: same bodies, same properties."""

from __future__ import annotations

import asyncio
import datetime

import aiormq
import pytest
from broker_tools import wait_until
from pamqp.commands import Basic

from munggoggo._speedups import Properties

pytestmark = pytest.mark.rabbitmq

HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "n": 42}


async def test_engine_publish_reaches_an_aiormq_consumer(connection, broker_url):
    received: list[aiormq.abc.DeliveredMessage] = []
    peer = await aiormq.connect(broker_url)
    try:
        pch = await peer.channel()
        q = await pch.queue_declare("", exclusive=True)
        await pch.basic_consume(q.queue, received.append, no_ack=True)

        ch = await connection.channel()
        props = Properties(
            content_type="application/json",
            headers=HEADERS,
            correlation_id="c-9",
            reply_to="caller.inbox",  # amq.rabbitmq.reply-to needs a consumer on it
            message_id="m-9",
            timestamp=1_700_000_123,
            type="rpc",
            app_id="agent-a",
            delivery_mode=2,
            priority=5,
            expiration="30000",
        )
        bodies = [b'{"jsonrpc": "2.0"}', b"", b"z" * 300_000]
        for body in bodies:
            ch.publish(body, "", q.queue, props)
        await ch.wait_confirms()
        assert await wait_until(lambda: len(received) == 3)
    finally:
        await peer.close()

    assert [m.body for m in received] == bodies
    p = received[0].header.properties
    assert p.content_type == "application/json"
    assert p.headers == HEADERS
    assert p.correlation_id == "c-9"
    assert p.reply_to == "caller.inbox"
    assert p.message_id == "m-9"
    assert p.timestamp == datetime.datetime.fromtimestamp(1_700_000_123, tz=datetime.UTC)
    assert p.message_type == "rpc"
    assert p.app_id == "agent-a"
    assert p.delivery_mode == 2
    assert p.priority == 5
    assert p.expiration == "30000"


async def test_aiormq_publish_reaches_an_engine_consumer(connection, broker_url):
    ch = await connection.channel()
    q = await ch.queue_declare("", exclusive=True)
    got = []

    def on_batch(batch):
        got.extend(batch)
        ch.ack(batch[-1].delivery_tag, multiple=True)

    await ch.consume(q.queue, on_batch)

    peer = await aiormq.connect(broker_url)
    try:
        pch = await peer.channel()
        props = Basic.Properties(
            content_type="text/plain",
            headers=HEADERS,
            correlation_id="c-1",
            reply_to="caller",
            message_id="m-1",
            timestamp=datetime.datetime.fromtimestamp(1_700_000_000, tz=datetime.UTC),
            message_type="message",
            app_id="aiormq-peer",
            delivery_mode=1,
        )
        bodies = [b"hello", b"", bytes(range(256)) * 1000]
        for body in bodies:
            await pch.basic_publish(body, routing_key=q.queue, properties=props)
        assert await wait_until(lambda: len(got) == 3)
    finally:
        await peer.close()

    assert [d.body for d in got] == bodies
    assert got[0].properties == Properties(
        content_type="text/plain",
        headers=HEADERS,
        correlation_id="c-1",
        reply_to="caller",
        message_id="m-1",
        timestamp=1_700_000_000,
        type="message",
        app_id="aiormq-peer",
        delivery_mode=1,
    )
    await asyncio.sleep(0.1)
    assert (await ch.queue_declare(q.queue, passive=True)).message_count == 0
