"""`Channel.drain(timeout)`: a publisher's wait for room that ends. It raises DrainTimeout
(an AMQPError and a TimeoutError) when the unconfirmed window stays full or the connection
stays down, leaves no waiter behind, and returns as soon as publishing may go on. The
network is a FaultProxy (frozen, or cut and refused), so the shared broker is left alone;
memory:// takes the same call.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import eventually
from conftest import memory_broker

from munggoggo.amqp.errors import AMQPError
from munggoggo.channel import DrainTimeout
from munggoggo.client import Connection
from munggoggo.memory import MemoryConnection
from munggoggo.testing import FaultProxy
from munggoggo.url import parse_url

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

WAIT = 10.0


@pytest.fixture
async def proxy(broker_url):
    upstream = parse_url(broker_url)
    async with FaultProxy(upstream=(upstream.host, upstream.port)) as proxy:
        yield proxy


def proxied(proxy: FaultProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/"


async def test_a_full_window_ends_the_wait_with_drain_timeout(proxy):
    async with Connection(proxied(proxy)) as conn:
        ch = await conn.channel(max_unconfirmed=2)
        proxy.freeze()  # nothing is confirmed any more
        ch.publish(b"1", "", "drain.timeout.nobody")
        ch.publish(b"2", "", "drain.timeout.nobody")
        assert not ch.writable
        with pytest.raises(DrainTimeout) as caught:
            await ch.drain(timeout=0.2)
        assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, AMQPError)
        proxy.thaw()
        await ch.drain(timeout=WAIT)  # the confirms came: room again
        assert ch.writable


async def test_a_connection_down_ends_the_wait_and_leaves_no_waiter(proxy):
    async with Connection(proxied(proxy)) as conn:
        ch = await conn.channel()
        proxy.refuse()
        proxy.cut()
        await eventually(lambda: not conn.is_open, WAIT, "connection down")
        before = len(asyncio.all_tasks())
        for _ in range(5):
            with pytest.raises(DrainTimeout):
                await ch.drain(timeout=0.05)
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == before  # no flow waiter left per attempt
        await proxy.accept()
        await ch.drain(timeout=30)  # back once the connection recovered
        assert conn.is_open


async def test_drain_without_a_timeout_and_on_memory_is_unchanged(broker_url, request):
    async with Connection(broker_url) as conn:
        ch = await conn.channel()
        await ch.drain()
        await ch.drain(timeout=0.01)  # writable: returns at once
    with memory_broker(request) as url:
        async with MemoryConnection(url) as conn:
            ch = await conn.channel()
            ch.publish(b"x", "", "nobody")
            await ch.drain(timeout=0.01)
