"""Faults of the broker itself: a restart (rabbitmqctl stop_app / start_app) and a memory
alarm (a tiny vm_memory_high_watermark), mid stream.

Each test holds the exclusive flock of munggoggo.testing.broker_faults while the broker is stopped
or its watermark moved (so two such tests never overlap, across processes too), and puts
the broker back as it found it in a `finally` (start_app and waiting until it answers; the
watermark read before and set back).

What a broker restart promises, and what it does not:
- A message the broker confirmed is on disk only if it was persistent and routed to a
  durable queue: those survive the restart and are consumed afterwards (checked exactly).
- A transient queue (our agents' default behaviour queues) is gone after the restart with
  whatever it held, by RabbitMQ's design, and a topic publish routed nowhere is confirmed
  too. So for agents on default queues the promise is that they reconnect on their own,
  redeclare and rebind their queues and resume: everything published after both are back
  is consumed. With quorum behaviour queues (`AgentConfig(queue_type="quorum")`, durable,
  every message on disk) nothing the broker confirmed is lost, and that is checked.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import eventually
from fault_tools import AgentPipe, ConfirmedStream, Consumed, delete_queues

from munggoggo import AgentConfig
from munggoggo.client import Connection
from munggoggo.testing.broker_faults import (
    BrokerFaultLock,
    memory_alarm_on,
    memory_watermark,
    set_memory_watermark,
    start_app,
    stop_app,
)
from munggoggo.transport import Backoff

pytestmark = [pytest.mark.rabbitmq, pytest.mark.fault]


async def restart_broker(*connections_down) -> None:
    """stop_app, wait until the given predicates say the clients noticed, start_app."""
    async with BrokerFaultLock():
        try:
            await asyncio.to_thread(stop_app)
            for down in connections_down:
                await eventually(down, 30, "the clients noticing the broker went away")
        finally:
            await asyncio.to_thread(start_app)


async def test_broker_restart_keeps_every_confirmed_persistent_message(broker_url, unique_name):
    publisher = await Connection(broker_url, backoff=Backoff(0.05, 0.5)).connect()
    consumer = await Connection(broker_url, backoff=Backoff(0.05, 0.5)).connect()
    try:
        ch = await publisher.channel()
        await ch.queue_declare(unique_name, durable=True)
        consumed = Consumed()
        await consumed.start(consumer, unique_name)
        stream = ConfirmedStream(ch, unique_name, persistent=True).start()
        await eventually(lambda: len(consumed.seen) >= 2000, 30, "consuming before the restart")

        await restart_broker(lambda: not publisher.is_open and not consumer.is_open)
        await eventually(
            lambda: publisher.reconnects >= 1 and consumer.reconnects >= 1,
            60,
            "both connections reconnected on their own after start_app",
        )
        after = stream.sent
        await eventually(lambda: stream.sent >= after + 2000, 30, "publishing after the restart")
        await stream.finish()

        await consumed.wait_for(stream.confirmed_numbers)
        counts = consumed.report(stream.sent, stream.confirmed_numbers, stream.failed_numbers)
        assert counts["lost"] == 0
        assert set(consumed.seen) <= set(range(stream.sent))
        # Republishing is on: what the broker never confirmed was sent again, not failed.
        assert stream.failures == []
    finally:
        await publisher.close()
        await consumer.close()
        await delete_queues(broker_url, unique_name)


@pytest.mark.parametrize("queue_type", [None, "quorum"], ids=["transient", "quorum"])
async def test_agents_resume_after_a_broker_restart(broker_url, queue_type):
    config = AgentConfig(queue_type=queue_type)
    async with AgentPipe(broker_url, broker_url, "restart", config) as pipe:
        consumed, producer = pipe.consumed, pipe.producer
        await eventually(lambda: len(consumed.seen) >= 2000, 30, "consuming before the restart")

        await restart_broker(
            lambda: not pipe.sender.connection.is_open and not pipe.receiver.connection.is_open
        )
        await eventually(pipe.both_reconnected, 60, "both agents reconnected on their own")
        # From here on both are back: the receiver's queue is declared and bound again.
        resumed_at = producer.sent
        await eventually(lambda: producer.sent >= resumed_at + 2000, 30, "publishing resumed")
        await producer.stop(timeout=10)
        await pipe.sender.flush(timeout=30)  # raises PublishError if any publish failed
        assert pipe.failures == []
        sent = producer.sent
        if queue_type == "quorum":
            expected = set(range(sent))  # durable queue, messages on disk: all of them
        else:
            expected = set(range(resumed_at, sent))
        await consumed.wait_for(expected, timeout=60)
        counts = consumed.report(sent, expected, set())
        print(f"lost in the restart with the transient queue: {sent - len(set(consumed.seen))}")
        assert counts["lost"] == 0
        assert set(consumed.seen) <= set(range(sent))
        assert pipe.collector.is_running


async def test_memory_alarm_blocks_publishers_who_wait_and_lose_nothing(broker_url, unique_name):
    publisher = await Connection(broker_url).connect()
    consumer = await Connection(broker_url).connect()
    try:
        ch = await publisher.channel()
        await ch.queue_declare(unique_name, durable=True, arguments={"x-expires": 60_000})
        consumed = Consumed()
        await consumed.start(consumer, unique_name)
        stream = ConfirmedStream(ch, unique_name).start()
        await eventually(lambda: len(consumed.seen) >= 2000, 30, "consuming before the alarm")

        async with BrokerFaultLock():
            original = await asyncio.to_thread(memory_alarm_on)
            try:
                await eventually(lambda: publisher.is_blocked, 30, "connection.blocked")
                assert not ch.writable
                paused_at = stream.sent
                await asyncio.sleep(1.0)
                # The publisher waits in drain(): at most the batch it had begun, no errors.
                assert stream.running
                assert stream.sent <= paused_at + stream.batch
                assert stream.failures == []
                assert not consumer.is_blocked  # it never publishes: RabbitMQ leaves it be
            finally:
                await asyncio.to_thread(set_memory_watermark, original)
            await eventually(lambda: not publisher.is_blocked, 30, "connection.unblocked")
            assert await asyncio.to_thread(memory_watermark) == original
        await eventually(
            lambda: stream.sent >= paused_at + 2000, 30, "publishing resumed after the alarm"
        )
        await stream.finish()

        await consumed.wait_for(stream.confirmed_numbers)
        counts = consumed.report(stream.sent, stream.confirmed_numbers, stream.failed_numbers)
        assert counts["lost"] == 0
        assert stream.failures == []
        assert publisher.reconnects == 0  # blocked is not broken
    finally:
        await publisher.close()
        await consumer.close()
        await delete_queues(broker_url, unique_name)
