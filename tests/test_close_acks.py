"""Closing a channel or a connection, or sending a channel method, puts its coalesced acks
on the wire first.

Acks made with `ack_later` are held for a write to ride along with (at most a millisecond).
A close meanwhile must send them before Channel.Close / Connection.Close: the broker ignores
what follows a close, and would deliver the acked messages again. So must any channel
method: one the broker refuses closes the channel, and what follows it is dropped. Runs on
RabbitMQ and on memory://; that held acks go out by themselves, on RabbitMQ.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from broker_tools import wait_until

from munggoggo import NotFound
from munggoggo.agent import open_connection
from munggoggo.testing import FaultProxy
from munggoggo.url import parse_url, parse_urls

COUNT = 20
QUEUE_ARGUMENTS = {"x-expires": 60_000}  # durable (RabbitMQ 4.3), gone after the test


async def _connect(url: str):
    return await open_connection(parse_urls(url), name="close-acks")


async def _fill_queue(url: str) -> str:
    """A durable queue holding COUNT messages; returns its name."""
    queue = f"test.close-acks.{uuid.uuid4().hex[:8]}"
    conn = await _connect(url)
    try:
        ch = await conn.channel()
        await ch.queue_declare(queue, durable=True, arguments=QUEUE_ARGUMENTS)
        for i in range(COUNT):
            ch.publish(str(i).encode(), "", queue)
        await ch.wait_confirms(timeout=10)
    finally:
        await conn.close()
    return queue


async def _receive_all(ch, queue: str) -> list:
    """Consume COUNT deliveries without settling them."""
    got: list = []
    done = asyncio.Event()

    def on_batch(batch: list) -> None:
        got.extend(batch)
        if len(got) >= COUNT:
            done.set()

    await ch.consume(queue, on_batch)
    await asyncio.wait_for(done.wait(), 10)
    assert len(got) == COUNT
    return got


async def _ready_and_clean_up(url: str, queue: str) -> int:
    """Ready messages left in the queue (after the closed consumer's unacked were requeued)."""
    conn = await _connect(url)
    try:
        ch = await conn.channel()
        ready = (await ch.queue_declare(queue, passive=True)).message_count
        await ch.queue_delete(queue)
        return ready
    finally:
        await conn.close()


async def test_connection_close_sends_acks_made_in_the_same_tick(mesh_url):
    queue = await _fill_queue(mesh_url)
    conn = await _connect(mesh_url)
    ch = await conn.channel(prefetch_count=COUNT)
    got = await _receive_all(ch, queue)
    for delivery in got:
        assert ch.ack_later(delivery.delivery_tag, ch.generation)
    await conn.close()  # same tick as the acks: nothing awaited in between
    assert await _ready_and_clean_up(mesh_url, queue) == 0


async def test_channel_close_sends_acks_made_in_the_same_tick(mesh_url):
    queue = await _fill_queue(mesh_url)
    conn = await _connect(mesh_url)
    try:
        ch = await conn.channel(prefetch_count=COUNT)
        got = await _receive_all(ch, queue)
        for delivery in got:
            assert ch.ack_later(delivery.delivery_tag, ch.generation)
        await ch.close()
        assert await _ready_and_clean_up(mesh_url, queue) == 0
    finally:
        await conn.close()


async def test_a_refused_channel_method_loses_no_held_acks(mesh_url):
    queue = await _fill_queue(mesh_url)
    conn = await _connect(mesh_url)
    try:
        ch = await conn.channel(prefetch_count=100)  # holds up to 50 acks, 1 ms at most
        got = await _receive_all(ch, queue)
        for delivery in got:
            assert ch.ack_later(delivery.delivery_tag, ch.generation)
        await asyncio.sleep(0)  # a tick: the acks are held, not yet written
        with pytest.raises(NotFound):  # refused: the broker closes the channel
            await ch.queue_declare(f"test.close-acks.none.{uuid.uuid4().hex}", passive=True)
        await ch.close()
        assert await _ready_and_clean_up(mesh_url, queue) == 0
    finally:
        await conn.close()


async def test_connection_close_sends_the_acks_of_every_channel(mesh_url):
    queue = await _fill_queue(mesh_url)
    conn = await _connect(mesh_url)
    first = await conn.channel(prefetch_count=COUNT // 2)
    second = await conn.channel(prefetch_count=COUNT // 2)
    got: dict = {first: [], second: []}
    done = asyncio.Event()

    def collector(ch):
        def on_batch(batch: list) -> None:
            got[ch].extend(batch)
            if len(got[first]) + len(got[second]) >= COUNT:
                done.set()

        return on_batch

    await first.consume(queue, collector(first))
    await second.consume(queue, collector(second))
    await asyncio.wait_for(done.wait(), 10)
    assert got[first] and got[second]  # each prefetch is half the queue
    for ch, deliveries in got.items():
        for delivery in deliveries:
            assert ch.ack_later(delivery.delivery_tag, ch.generation)
    await conn.close()
    assert await _ready_and_clean_up(mesh_url, queue) == 0


async def _ready(url: str, queue: str) -> int:
    """Ready messages in the queue."""
    conn = await _connect(url)
    try:
        ch = await conn.channel()
        return (await ch.queue_declare(queue, passive=True)).message_count
    finally:
        await conn.close()


async def test_held_acks_go_out_by_themselves(broker_url):
    """Coalesced acks wait (at most a millisecond, at most half the prefetch) for a write to
    ride along with; with nothing else written they still reach the broker: once the
    connection is cut, only the messages never acked are delivered again."""
    queue = await _fill_queue(broker_url)
    upstream = parse_url(broker_url)
    async with FaultProxy(upstream=(upstream.host, upstream.port)) as proxy:
        parts = urlsplit(broker_url)
        proxied = urlunsplit(
            parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}")
        )
        conn = await _connect(proxied)
        conn.reconnect = False
        try:
            ch = await conn.channel(prefetch_count=COUNT)  # holds up to COUNT // 2 acks
            got = await _receive_all(ch, queue)
            for delivery in got[:3]:
                assert ch.ack_later(delivery.delivery_tag, ch.generation)
            await asyncio.sleep(0.3)  # nothing else is written meanwhile
            proxy.cut()
            # The broker requeues what was not acked when it sees the connection go.

            async def requeued() -> bool:
                return await _ready(broker_url, queue) >= COUNT - 3

            assert await wait_until(requeued, timeout=10)
        finally:
            await conn.close()
    assert await _ready_and_clean_up(broker_url, queue) == COUNT - 3
