"""Network faults through our own proxy (munggoggo.testing.fault_proxy) against the real broker.

- cut: every connection dropped mid confirmed stream, with republishing on and off;
- freeze: no bytes move either way until the clients notice the missing heartbeats;
- agents: a publishing agent and a consuming agent, both through the proxy, cut.

After each: the connections (agents) recovered on their own, every confirmed message was
consumed at least once (duplicates counted and printed), and with republishing off every
unconfirmed one was reported to the publisher. The broker itself is not touched, so these
tests need no lock; each deletes the queues it declared.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import close_broker_connection, eventually, local_port
from fault_tools import AgentPipe, ConfirmedStream, Consumed, delete_queues

from munggoggo.client import Connection
from munggoggo.testing import FaultProxy, broker_address
from munggoggo.transport import Backoff

pytestmark = [pytest.mark.rabbitmq, pytest.mark.fault]

# Test queues outlive their connections, so they are durable (RabbitMQ 4 refuses transient
# non-exclusive queues); a queue a failed run leaves behind expires by itself.
EXPIRES = {"x-expires": 60_000}


@pytest.fixture
async def proxy(broker_url):
    p = await FaultProxy(upstream=broker_address()).start()
    yield p
    await p.stop()


def through(proxy: FaultProxy, query: str = "") -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/{'?' + query if query else ''}"


async def open_pair(url: str, republish: bool) -> tuple[Connection, Connection]:
    publisher = await Connection(url, republish=republish, backoff=Backoff(0.05, 0.5)).connect()
    consumer = await Connection(url, backoff=Backoff(0.05, 0.5)).connect()
    return publisher, consumer


@pytest.mark.parametrize("republish", [True, False], ids=["republish", "no-republish"])
async def test_proxy_cut_mid_stream_loses_no_confirmed_message(
    broker_url, proxy, unique_name, republish
):
    publisher, consumer = await open_pair(through(proxy), republish)
    try:
        ch = await publisher.channel()
        # Not exclusive: it outlives the connections.
        await ch.queue_declare(unique_name, durable=True, arguments=EXPIRES)
        consumed = Consumed()
        await consumed.start(consumer, unique_name)
        stream = ConfirmedStream(ch, unique_name).start()
        await eventually(lambda: len(consumed.seen) >= 2000, 30, "consuming before the cut")

        stream.fault_after_next_batch(proxy.cut)
        await eventually(lambda: proxy.cuts >= 2, 10, "the cut")
        await eventually(
            lambda: publisher.reconnects >= 1 and consumer.reconnects >= 1,
            30,
            "both connections reconnected on their own",
        )
        after = stream.sent
        await eventually(lambda: stream.sent >= after + 2000, 30, "publishing after the cut")
        await stream.finish()

        await consumed.wait_for(stream.confirmed_numbers)
        counts = consumed.report(stream.sent, stream.confirmed_numbers, stream.failed_numbers)
        assert counts["lost"] == 0
        assert set(consumed.seen) <= set(range(stream.sent))  # nothing we never sent
        if republish:
            assert stream.failures == []  # republished instead
        else:
            # The batch queued right before the cut cannot have been confirmed.
            failed_seqs = {seq for seq, _ in stream.failures}
            assert set(stream.fault_batch) <= failed_seqs
            assert all("lost before the broker confirmed" in str(e) for _, e in stream.failures)
    finally:
        await publisher.close()
        await consumer.close()
        await delete_queues(broker_url, unique_name)


@pytest.mark.parametrize("republish", [True, False], ids=["republish", "no-republish"])
async def test_heartbeat_loss_is_noticed_and_recovered(broker_url, proxy, unique_name, republish):
    # heartbeat=2: a client that hears nothing for 2 intervals drops the connection.
    # connection_timeout=3000 ms: reconnect attempts into the frozen proxy give up soon.
    url = through(proxy, "heartbeat=2&connection_timeout=3000")
    publisher, consumer = await open_pair(url, republish)
    reasons: dict[str, str] = {}
    publisher.on_lost.append(lambda c, exc: reasons.setdefault("publisher", str(exc)))
    consumer.on_lost.append(lambda c, exc: reasons.setdefault("consumer", str(exc)))
    try:
        assert publisher.heartbeat == consumer.heartbeat == 2
        ch = await publisher.channel()
        await ch.queue_declare(unique_name, durable=True, arguments=EXPIRES)
        consumed = Consumed()
        await consumed.start(consumer, unique_name)
        stream = ConfirmedStream(ch, unique_name).start()
        await eventually(lambda: len(consumed.seen) >= 2000, 30, "consuming before the freeze")

        stream.fault_after_next_batch(proxy.freeze)
        try:
            await eventually(lambda: len(reasons) == 2, 30, "both clients noticing the dead peer")
            assert proxy.connections >= 2  # the proxy closed nothing: heartbeats told them
            assert proxy.cuts == 0
        finally:
            proxy.thaw()
        assert "no heartbeat" in reasons["publisher"], reasons
        assert "no heartbeat" in reasons["consumer"], reasons
        await eventually(
            lambda: publisher.is_open and consumer.is_open and publisher.reconnects >= 1,
            30,
            "both connections back after the thaw",
        )
        assert consumer.reconnects >= 1
        after = stream.sent
        await eventually(lambda: stream.sent >= after + 2000, 30, "publishing after recovery")
        await stream.finish()

        await consumed.wait_for(stream.confirmed_numbers)
        counts = consumed.report(stream.sent, stream.confirmed_numbers, stream.failed_numbers)
        assert counts["lost"] == 0
        assert set(consumed.seen) <= set(range(stream.sent))
        if republish:
            assert stream.failures == []
        else:
            assert set(stream.fault_batch) <= {seq for seq, _ in stream.failures}
    finally:
        proxy.thaw()
        await publisher.close()
        await consumer.close()
        await delete_queues(broker_url, unique_name)


async def test_agents_recover_from_a_cut_on_their_own(broker_url, proxy):
    async with AgentPipe(broker_url, through(proxy), "fault") as pipe:
        consumed, producer = pipe.consumed, pipe.producer
        await eventually(lambda: len(consumed.seen) >= 2000, 30, "consuming before the cut")

        assert proxy.cut() >= 2
        await eventually(pipe.both_reconnected, 30, "both agents reconnected on their own")
        after = producer.sent
        await eventually(lambda: producer.sent >= after + 2000, 30, "the producer going on")
        seen_before = len(consumed.seen)
        await eventually(lambda: len(consumed.seen) >= seen_before + 1000, 30, "consuming again")
        await producer.stop(timeout=10)
        await pipe.sender.flush(timeout=30)  # raises PublishError if any publish failed
        assert pipe.failures == []
        sent = producer.sent
        await consumed.wait_for(set(range(sent)))
        counts = consumed.report(sent, set(range(sent)), set())
        assert counts["lost"] == 0
        assert set(consumed.seen) <= set(range(sent))
        assert pipe.collector.is_running and producer.state == "stopped"


async def test_acks_of_a_restored_consumer_count_before_the_channel_is_handed_back(
    broker_url, unique_name
):
    # Regression: deliveries to a restored consumer arrive before recovery has finished
    # (here: while the second channel's consumer is still being restored) and their acks
    # were dropped, since the channel was not "open" for users yet. Those messages stayed
    # unacked for good and the consumer, at its prefetch limit, got nothing more.
    conn = await Connection(broker_url, backoff=Backoff(0.05, 0.5)).connect()
    try:
        first = await conn.channel(confirms=False, prefetch_count=10)
        second = await conn.channel(confirms=False)
        other = f"{unique_name}.other"
        await first.queue_declare(unique_name, durable=True, arguments=EXPIRES)
        await first.queue_declare(other, durable=True, arguments=EXPIRES)
        publish = await conn.channel()
        for n in range(100):
            publish.publish(str(n).encode(), "", unique_name)
        await publish.wait_confirms(timeout=10)

        got: list[int] = []
        acking = False

        def on_batch(batch):
            got.extend(int(d.body) for d in batch)
            if acking:
                first.ack(batch[-1].delivery_tag, multiple=True)

        await first.consume(unique_name, on_batch)
        await second.consume(other, lambda batch: None)
        await eventually(lambda: len(got) == 10, 10, "the first prefetch window")
        acking = True  # from now on: the 10 come back after the close, acked at once
        await asyncio.to_thread(close_broker_connection, local_port(conn))
        await eventually(lambda: conn.reconnects == 1, 15, "reconnect")
        await eventually(lambda: set(range(100)) <= set(got), 15, "all 100 consumed")
    finally:
        await conn.close()
        await delete_queues(broker_url, unique_name, f"{unique_name}.other")
