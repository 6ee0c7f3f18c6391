"""A message whose headers nest ~600 tables is one bad message, never a dead connection.

RabbitMQ accepts such headers from any publisher and forwards them; our reader refuses
tables nested deeper than MAX_TABLE_DEPTH. The delivery still reaches its consumer, marked
(`properties_error`): the engine user settles it, the agent runtime rejects it to the
dead-letter exchange, and everything published after it is delivered on a connection
that never reconnected. The bad message is published with our own client from hand-encoded
properties bytes (our encoder refuses to build them).
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from broker_tools import eventually
from mesh_tools import BodyCollector, uid

from munggoggo import Agent
from munggoggo._speedups import MAX_TABLE_DEPTH
from munggoggo.client import Connection
from munggoggo.wire import DEAD_LETTER_QUEUE, TOPIC_EXCHANGE

pytestmark = pytest.mark.rabbitmq

WAIT = 15.0
LEVELS = 600  # ~4 KB of headers: enough to exhaust a recursive parser's stack


def nested_headers_properties(levels: int = LEVELS) -> bytes:
    """Encoded basic properties: headers nesting `levels` tables, then app_id."""
    table = b"\x00\x00\x00\x00"
    for _ in range(levels):
        table = struct.pack(">I", len(table) + 3) + b"\x01hF" + table
    return b"\x20\x08" + table + b"\x06mallet"


class Collector(BodyCollector):
    """Keeps the bodies of what its topics bring."""


async def dead_letter_bodies(conn: Connection, count: int) -> list[bytes]:
    """The first `count` messages of munggoggo.dead-letters (this test's own vhost)."""
    ch = await conn.channel()
    found: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while len(found) < count:
        assert loop.time() < deadline, f"dead letters so far: {found}"
        got = await ch.get(DEAD_LETTER_QUEUE, no_ack=True)
        if got is None:
            await asyncio.sleep(0.05)
            continue
        assert got.properties_error is not None  # still the same undecodable headers
        found.append(got.body)
    await ch.close()
    return found


async def test_engine_consumer_gets_a_marked_delivery_and_settles_it(vhost_url):
    assert LEVELS > 4 * MAX_TABLE_DEPTH
    async with Connection(vhost_url) as conn:
        ch = await conn.channel()
        queue = uid("nested")
        await ch.queue_declare(queue, durable=True, arguments={"x-expires": 60_000})
        received: list = []
        await ch.consume(queue, received.extend)
        seq = ch.publish(b"poison", "", queue, nested_headers_properties())
        seq = ch.publish(b"after", "", queue, b"\x00\x08\x05alice")  # app_id only
        await ch.wait_confirms(seq, timeout=WAIT)
        await eventually(lambda: len(received) == 2, WAIT)
        bad, good = received
        assert bad.body == b"poison"
        assert "nested deeper than" in bad.properties_error
        assert (good.body, good.properties_error, good.properties.app_id) == (
            b"after",
            None,
            "alice",
        )
        assert ch.reject(bad.delivery_tag, requeue=False)
        assert ch.ack(good.delivery_tag)
        assert conn.reconnects == 0
        assert conn.is_open
        # settled for good: nothing comes back
        await asyncio.sleep(0.2)
        assert len(received) == 2
        await ch.queue_delete(queue)


async def test_agent_rejects_undecodable_messages_to_the_dead_letters(vhost_url):
    key = uid("nested.key")
    agent = Agent(uid("nested-agent"), url=vhost_url)
    async with agent, Connection(vhost_url) as raw, Agent(uid("caller"), url=vhost_url) as caller:
        collector = await agent.add_behaviour(Collector(agent, binding_keys=[key]))
        ch = await raw.channel()
        bad = nested_headers_properties()
        ch.publish(b"poison-topic", TOPIC_EXCHANGE, key, bad)
        ch.publish(b"poison-inbox", "", agent.identity, bad)
        seq = ch.publish(b"good-topic", TOPIC_EXCHANGE, key)
        await ch.wait_confirms(seq, timeout=WAIT)
        await eventually(lambda: collector.bodies == [b"good-topic"], WAIT)
        assert await caller.call(agent.identity, "ping", timeout=WAIT) == "pong"
        dead = await dead_letter_bodies(raw, 2)
        assert sorted(dead) == [b"poison-inbox", b"poison-topic"]
        assert agent.connection.reconnects == 0
        assert agent.connection.is_open
        assert sum(agent.stats.dead_lettered.values()) == 2
        await ch.close()
