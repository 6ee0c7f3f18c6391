"""Faults against the real broker: a connection force-closed in the middle of a confirmed
publish stream. Every message must end up confirmed-and-consumed or reported failed."""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import close_broker_connection, local_port, wait_until

from munggoggo._speedups import Properties
from munggoggo.client import Connection
from munggoggo.transport import Backoff

pytestmark = [pytest.mark.rabbitmq, pytest.mark.fault]

EXPIRES = {"x-expires": 60_000}  # a queue a failed run leaves behind goes away by itself


async def stream_through_a_forced_close(publisher, queue, *, after_recovery: int = 2000):
    """Publish numbered messages until the connection was killed and recovered, then some
    more. Returns (seq -> message number, failures reported to on_publish_failure)."""
    ch = await publisher.channel()
    failures: list[tuple[int, Exception]] = []
    ch.on_publish_failure = failures.extend
    numbers: dict[int, int] = {}
    port = local_port(publisher)
    fault = asyncio.ensure_future(asyncio.to_thread(close_broker_connection, port))
    n = 0
    stop_at = None
    while stop_at is None or n < stop_at:
        for _ in range(100):
            seq = ch.publish(str(n).encode(), "", queue, Properties(message_id=str(n)))
            numbers[seq] = n
            n += 1
        await ch.drain()
        await asyncio.sleep(0.002)  # keep the stream going while rabbitmqctl does its work
        if stop_at is None and fault.done() and publisher.reconnects >= 1:
            stop_at = n + after_recovery
        assert n < 2_000_000, "the forced close never happened"
    await fault
    try:
        await ch.wait_confirms(timeout=30)
    except Exception as exc:  # PublishError: failures were reported, counted below
        assert type(exc).__name__ == "PublishError"
    return numbers, failures


async def consumed_numbers(conn, queue, expected: set[int], timeout: float = 30.0):
    """Consume `queue` until every number in `expected` was seen; returns (seen list)."""
    ch = await conn.channel(prefetch_count=2000)
    seen: list[int] = []

    def on_batch(batch):
        seen.extend(int(d.body) for d in batch)
        ch.ack(batch[-1].delivery_tag, multiple=True)

    await ch.consume(queue, on_batch)
    await wait_until(lambda: expected <= set(seen), timeout=timeout)
    await asyncio.sleep(0.3)  # let duplicates in flight arrive, so they are counted
    return seen


async def test_forced_close_republishes_unconfirmed_and_loses_nothing(broker_url, unique_name):
    publisher = await Connection(broker_url, backoff=Backoff(0.05, 0.5)).connect()
    consumer = await Connection(broker_url).connect()
    try:
        setup = await consumer.channel()
        # Not exclusive: it must outlive the connection (durable: RabbitMQ 4 refuses
        # transient non-exclusive queues; x-expires cleans up after a failed run).
        await setup.queue_declare(unique_name, durable=True, arguments=EXPIRES)
        numbers, failures = await stream_through_a_forced_close(publisher, unique_name)

        assert publisher.reconnects == 1
        assert failures == []  # republishing is on: nothing is given up
        sent = set(numbers.values())
        seen = await consumed_numbers(consumer, unique_name, sent)
        lost = sent - set(seen)
        duplicates = len(seen) - len(set(seen))
        print(
            f"sent={len(sent)} consumed={len(set(seen))} duplicates={duplicates} lost={len(lost)}"
        )
        assert lost == set()
        assert set(seen) == sent  # nothing we never sent
        await setup.queue_delete(unique_name)
    finally:
        await publisher.close()
        await consumer.close()


async def test_forced_close_without_republish_reports_every_unconfirmed(broker_url, unique_name):
    publisher = await Connection(broker_url, republish=False, backoff=Backoff(0.05, 0.5)).connect()
    try:
        setup = await publisher.channel()
        await setup.queue_declare(unique_name, durable=True, arguments=EXPIRES)
        numbers, failures = await stream_through_a_forced_close(publisher, unique_name)

        assert publisher.reconnects == 1
        failed_seqs = {seq for seq, _ in failures}
        assert failed_seqs <= set(numbers)
        assert all("lost before the broker confirmed" in str(exc) for _, exc in failures)
        confirmed = {numbers[seq] for seq in numbers if seq not in failed_seqs}
        # The consumer lives on the recovered connection: consumers are restored too.
        seen = await consumed_numbers(publisher, unique_name, confirmed)
        print(
            f"sent={len(numbers)} confirmed={len(confirmed)} failed={len(failed_seqs)} "
            f"consumed={len(set(seen))} duplicates={len(seen) - len(set(seen))}"
        )
        assert confirmed <= set(seen)
        await setup.queue_delete(unique_name)
    finally:
        await publisher.close()


async def test_consumer_and_server_named_queue_come_back_after_forced_close(broker_url):
    conn = await Connection(broker_url, backoff=Backoff(0.05, 0.5)).connect()
    try:
        ch = await conn.channel()
        q = await ch.queue_declare("", exclusive=True)
        got: list[bytes] = []

        def on_batch(batch):
            got.extend(d.body for d in batch)
            ch.ack(batch[-1].delivery_tag, multiple=True)

        await ch.consume(q.queue, on_batch)
        old_generation = ch.generation
        await asyncio.to_thread(close_broker_connection, local_port(conn))
        assert await wait_until(lambda: conn.reconnects == 1 and ch.is_open, timeout=15)
        assert ch.generation == old_generation + 1
        # The exclusive server-named queue died with the old connection; it was redeclared
        # under a new name and the consumer follows it.
        consumer = next(iter(ch._consumers.values()))
        assert consumer.queue != q.queue and consumer.queue in conn.topology.queues
        ch.publish(b"after", "", consumer.queue)
        await ch.wait_confirms(timeout=10)
        assert await wait_until(lambda: got == [b"after"])
    finally:
        await conn.close()


async def test_failing_unconfirmed_publishes_releases_a_blocked_publisher(broker_url):
    # Regression: with republish off, a reconnect failed the unconfirmed publishes but left
    # the window "full", so a publisher waiting in drain() waited forever.
    conn = await Connection(broker_url, republish=False).connect()
    try:
        ch = await conn.channel(max_unconfirmed=2)
        failures: list = []
        ch.on_publish_failure = failures.extend
        for _ in range(2):  # what the broker had not confirmed when the connection died
            ch._tracker.add(b"frames")
        ch._capacity.clear()
        assert not ch.writable
        ch.republish_or_fail(republish=False)
        await asyncio.wait_for(ch.drain(), 5)  # must not hang
        assert ch.writable and ch.unconfirmed == 0
        assert [seq for seq, _ in failures] == [1, 2]
    finally:
        await conn.close()
