"""Deliveries settled out of order: one slow delivery never holds back the acks of the
others, so a consumer never stalls at its prefetch behind it.

Acks go out once per loop tick as one multiple-ack over the contiguous settled prefix of
delivery tags, plus a single ack for each tag that finished above a still unsettled one.
Each test runs on RabbitMQ and on memory://, which must behave the same.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import wait_until
from mesh_tools import BodyCollector, uid

from munggoggo import Agent, AgentConfig, Behaviour, Template, expose
from munggoggo.agent import open_connection
from munggoggo.amqp.errors import PreconditionFailed
from munggoggo.url import parse_url

pytestmark = pytest.mark.timeout(90)

PREFETCH = 8
FAST_CALLS = 3 * PREFETCH  # well past the inbox prefetch


class SlowServer(Agent):
    """`slow` answers only once `release` is set; `mul` answers at once."""

    async def setup(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()

    @expose
    async def slow(self) -> str:
        self.slow_started.set()
        await self.release.wait()
        return "done"

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b


async def test_a_slow_rpc_call_does_not_stall_the_inbox(mesh_url):
    config = AgentConfig(inbox_prefetch=PREFETCH)
    server = SlowServer(uid("slow-srv"), url=mesh_url, config=config)
    async with server, Agent(uid("slow-cli"), url=mesh_url, config=config) as caller:
        slow = asyncio.ensure_future(caller.call(server.identity, "slow", timeout=60))
        try:
            await asyncio.wait_for(server.slow_started.wait(), 10)
            # Every request after the slow one is settled while it is still unsettled.
            for i in range(FAST_CALLS):
                assert await caller.call(server.identity, "mul", i, 2, timeout=10) == 2 * i
            assert not slow.done()
        finally:
            server.release.set()
            answered = await asyncio.wait_for(asyncio.gather(slow, return_exceptions=True), 10)
        assert answered == ["done"]
        # The slow request's own ack went out too: the inbox keeps answering.
        for i in range(FAST_CALLS):
            assert await caller.call(server.identity, "mul", i, 3, timeout=10) == 3 * i


SLOW_LANE = {"lane": "slow"}
FAST_LANE = {"lane": "fast"}


class Holder(Behaviour):
    """Holds each message in its step until `release` is set, then acks it itself."""

    async def setup(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.got: list[bytes] = []
        self.late_acks: list[bool] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        self.got.append(msg.body)
        self.holding.set()
        await self.release.wait()
        self.late_acks.append(msg.ack())


class Collector(BodyCollector):
    """Keeps the bodies of the fast lane's messages."""


class TwoLanes(Agent):
    async def setup(self) -> None:
        self.holder = Holder(self, template=Template(headers=SLOW_LANE))
        self.collector = Collector(self, template=Template(headers=FAST_LANE))
        await self.add_behaviour(self.holder)
        await self.add_behaviour(self.collector)


async def test_a_message_acked_late_by_a_behaviour_does_not_stall_the_others(mesh_url):
    config = AgentConfig(inbox_prefetch=PREFETCH)
    identity = uid("late-ack")
    async with Agent(uid("late-tx"), url=mesh_url) as sender:
        async with TwoLanes(identity, url=mesh_url, config=config) as receiver:
            await sender.send(identity, b"held", headers=SLOW_LANE)
            fast = [f"m{i}".encode() for i in range(FAST_CALLS)]
            try:
                await asyncio.wait_for(receiver.holder.holding.wait(), 10)
                for body in fast:
                    await sender.send(identity, body, headers=FAST_LANE)
                # All of them reach the other behaviour and are settled behind the held one.
                assert await wait_until(
                    lambda: len(receiver.collector.bodies) == len(fast), timeout=20
                )
            finally:
                receiver.holder.release.set()
            assert receiver.collector.bodies == fast
            assert receiver.holder.got == [b"held"]
            assert await wait_until(lambda: receiver.holder.late_acks == [True], timeout=10)
            await sender.send(identity, b"last", headers=FAST_LANE)
            assert await wait_until(lambda: receiver.collector.bodies[-1:] == [b"last"], timeout=10)
        # The late ack reached the broker: a successor with the same identity is not handed
        # the held message again before what is sent to it now.
        async with TwoLanes(identity, url=mesh_url, config=config) as successor:
            successor.holder.release.set()
            await sender.send(identity, b"after", headers=SLOW_LANE)
            assert await wait_until(lambda: successor.holder.got != [], timeout=10)
            assert successor.holder.got[0] == b"after"


async def test_acks_settled_out_of_order_free_the_prefetch(mesh_url):
    """On the channel: the first delivery stays unsettled, the second is rejected on its
    own, every later one is acked with ack_later; all arrive past the prefetch, the channel
    stays open (no ack of a tag twice: RabbitMQ closes it with 406), and once the first is
    acked, late, nothing is left in the queue."""
    queue = uid("ack-gaps")
    total = 5 * PREFETCH
    conn = await open_connection(parse_url(mesh_url), queue)
    try:
        pub = await conn.channel()
        await pub.queue_declare(queue, durable=True, arguments={"x-expires": 60_000})
        for i in range(total):
            pub.publish(str(i).encode(), "", queue)
        await pub.wait_confirms(timeout=10)

        ch = await conn.channel(confirms=False)
        await ch.basic_qos(PREFETCH)
        generation = ch.generation
        got = []

        def on_batch(batch) -> None:
            for d in batch:
                got.append(d)
                if len(got) == 2:
                    ch.reject(d.delivery_tag, requeue=False, generation=ch.generation)
                elif len(got) > 2:
                    ch.ack_later(d.delivery_tag, ch.generation)

        tag = await ch.consume(queue, on_batch)
        assert await wait_until(lambda: len(got) == total, timeout=20)
        assert [d.body for d in got] == [str(i).encode() for i in range(total)]
        assert ch.ack_later(got[0].delivery_tag, ch.generation)
        await ch.cancel(tag)  # a round trip: the late ack went out before it
        assert ch.generation == generation  # never closed by the broker meanwhile
        await ch.close()
        assert (await pub.queue_declare(queue, passive=True)).message_count == 0
        await pub.queue_delete(queue)
    finally:
        await conn.close()


async def test_the_broker_takes_single_acks_above_a_gap_and_refuses_a_tag_twice(mesh_url):
    """What the coalesced acks rely on, on RabbitMQ and memory:// alike: a single ack above
    an unsettled tag settles only that tag; acking a tag that is no longer outstanding, on
    its own or as the tag of a multiple-ack, closes the channel with 406."""
    queue = uid("ack-wire")
    conn = await open_connection(parse_url(mesh_url), queue)
    try:
        pub = await conn.channel()
        await pub.queue_declare(queue, durable=True, arguments={"x-expires": 60_000})
        for i in range(4):
            pub.publish(str(i).encode(), "", queue)
        await pub.wait_confirms(timeout=10)
        ch = await conn.channel(confirms=False)
        got = []
        await ch.consume(queue, got.extend)
        assert await wait_until(lambda: len(got) == 4, timeout=10)
        tags = [d.delivery_tag for d in got]
        generation = ch.generation
        assert ch.ack(tags[2]) and ch.ack(tags[1])  # above the unsettled first one
        await ch.queue_declare(queue, passive=True)  # a round trip: the channel stayed open
        assert ch.generation == generation
        assert ch.ack(tags[0], multiple=True)  # covers only tags[0]: the others are acked
        await ch.queue_declare(queue, passive=True)
        assert ch.generation == generation

        assert ch.ack(tags[1])  # twice
        with pytest.raises(PreconditionFailed) as twice:
            await ch.queue_declare(queue, passive=True)
        assert twice.value.reply_code == 406
        # The channel is reopened; the last message went back to the queue.
        assert await wait_until(lambda: len(got) == 5, timeout=10)
        assert got[-1].body == b"3" and got[-1].redelivered
        ch.ack(got[-1].delivery_tag)
        assert ch.ack(tags[0], multiple=True)  # names a tag acked before
        with pytest.raises(PreconditionFailed) as stale:
            await ch.queue_declare(queue, passive=True)
        assert stale.value.reply_code == 406
        await pub.queue_delete(queue)
    finally:
        await conn.close()
