"""The asyncio client against the real RabbitMQ: topology, publish/consume, errors."""

from __future__ import annotations

import asyncio
import socket

import pytest
from broker_tools import wait_until

from munggoggo._speedups import Properties
from munggoggo.amqp.errors import (
    AMQPConnectError,
    AuthenticationError,
    ConnectionLost,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from munggoggo.channel import PublishError
from munggoggo.client import Connection

pytestmark = pytest.mark.rabbitmq

# Named test queues are durable (RabbitMQ 4 refuses transient non-exclusive queues) and
# expire a minute after their last use, so a failed test leaves nothing behind for long.
QUEUE_EXPIRES_MS = 60_000


async def consume_into(ch, queue, *, ack=True, **kwargs):
    """Start a consumer that appends every delivery to the returned list."""
    got = []

    def on_batch(batch):
        got.extend(batch)
        if ack:
            ch.ack(batch[-1].delivery_tag, multiple=True)

    tag = await ch.consume(queue, on_batch, **kwargs)
    return got, tag


async def test_connect_negotiates_with_the_broker(connection):
    assert connection.is_open
    assert connection.server_properties["product"] == "RabbitMQ"
    assert connection.frame_max == 131072
    assert connection.heartbeat == 60


async def test_url_parameters_reach_the_handshake(broker_url):
    async with Connection(broker_url + "?heartbeat=5&frame_max=8192&channel_max=7") as conn:
        assert conn.heartbeat == 5
        assert conn.frame_max == 8192
        assert conn.protocol.channel_max == 7


async def test_publish_and_consume_round_trip_with_every_property(connection):
    ch = await connection.channel()
    q = await ch.queue_declare("", exclusive=True)
    got, _ = await consume_into(ch, q.queue)
    props = Properties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"traceparent": "00-abc-def-01", "n": 7, "nested": {"ok": True}, "list": [1, "a"]},
        delivery_mode=2,
        priority=3,
        correlation_id="corr-1",
        reply_to="replies",
        expiration="60000",
        message_id="m-1",
        timestamp=1_700_000_000,
        type="message",
        user_id="guest",
        app_id="agent-a",
    )
    ch.publish(b'{"x": 1}', "", q.queue, props)
    await ch.wait_confirms()
    assert await wait_until(lambda: len(got) == 1)
    d = got[0]
    assert d.body == b'{"x": 1}'
    assert d.routing_key == q.queue
    assert d.properties == props
    assert d.redelivered is False


async def test_body_larger_than_frame_max_is_split_and_reassembled(broker_url):
    # 8192 is the smallest frame_max RabbitMQ 4 negotiates (3.10 allows 4096); a body
    # frame carries frame_max - 8 bytes of body.
    async with Connection(broker_url + "?frame_max=8192") as conn:
        assert conn.frame_max == 8192
        ch = await conn.channel()
        q = await ch.queue_declare("", exclusive=True)
        got, _ = await consume_into(ch, q.queue)
        bodies = [bytes(range(256)) * 4000, b"", b"x" * 8184, b"y" * 8185]
        for body in bodies:
            ch.publish(body, "", q.queue)
        await ch.wait_confirms()
        assert await wait_until(lambda: len(got) == len(bodies))
        assert [d.body for d in got] == bodies


async def test_topic_exchange_routes_by_wildcards(connection, unique_name):
    ch = await connection.channel()
    await ch.exchange_declare(unique_name, "topic", auto_delete=True)
    q = await ch.queue_declare("", exclusive=True)
    await ch.queue_bind(q.queue, unique_name, "sensor.*.temp")
    await ch.queue_bind(q.queue, unique_name, "alarm.#")
    got, _ = await consume_into(ch, q.queue)
    for key in ["sensor.a.temp", "sensor.a.b.temp", "alarm", "alarm.x.y", "other"]:
        ch.publish(key.encode(), unique_name, key)
    await ch.wait_confirms()
    assert await wait_until(lambda: len(got) == 3)
    await asyncio.sleep(0.1)
    assert sorted(d.body for d in got) == [b"alarm", b"alarm.x.y", b"sensor.a.temp"]


async def test_exchange_to_exchange_binding_and_unbind(connection, unique_name):
    ch = await connection.channel()
    # Not auto-delete: removing its only binding would delete the source exchange.
    await ch.exchange_declare(unique_name + ".src", "fanout")
    await ch.exchange_declare(unique_name + ".dst", "fanout")
    await ch.exchange_bind(unique_name + ".dst", unique_name + ".src")
    q = await ch.queue_declare("", exclusive=True)
    await ch.queue_bind(q.queue, unique_name + ".dst")
    got, _ = await consume_into(ch, q.queue)
    ch.publish(b"via-e2e", unique_name + ".src", "")
    await ch.wait_confirms()
    assert await wait_until(lambda: len(got) == 1)
    await ch.exchange_unbind(unique_name + ".dst", unique_name + ".src")
    ch.publish(b"after-unbind", unique_name + ".src", "")
    await ch.wait_confirms()
    await asyncio.sleep(0.2)
    assert [d.body for d in got] == [b"via-e2e"]
    await ch.exchange_delete(unique_name + ".src")
    await ch.exchange_delete(unique_name + ".dst")


async def test_queue_arguments_purge_delete_and_get(connection, unique_name):
    ch = await connection.channel()
    ok = await ch.queue_declare(
        unique_name,
        durable=True,
        arguments={
            "x-queue-type": "classic",
            "x-dead-letter-exchange": "dlx",
            "x-expires": QUEUE_EXPIRES_MS,
        },
    )
    assert ok.queue == unique_name and ok.message_count == 0
    for i in range(5):
        ch.publish(str(i).encode(), "", unique_name)
    await ch.wait_confirms()
    assert (await ch.queue_declare(unique_name, passive=True)).message_count == 5
    first = await ch.get(unique_name)
    assert first is not None and first.body == b"0" and first.message_count == 4
    ch.ack(first.delivery_tag)
    assert await ch.queue_purge(unique_name) == 4
    assert await ch.get(unique_name) is None
    ch.publish(b"left", "", unique_name)
    await ch.wait_confirms()
    assert await ch.queue_delete(unique_name) == 1
    with pytest.raises(NotFound):
        await ch.queue_declare(unique_name, passive=True)


async def test_nack_requeues_and_marks_redelivered_reject_drops(connection):
    ch = await connection.channel()
    q = await ch.queue_declare("", exclusive=True)
    got, _ = await consume_into(ch, q.queue, ack=False)
    ch.publish(b"again", "", q.queue)
    await ch.wait_confirms()
    assert await wait_until(lambda: len(got) == 1)
    ch.nack(got[0].delivery_tag, requeue=True)
    assert await wait_until(lambda: len(got) == 2)
    assert got[1].body == b"again" and got[1].redelivered is True
    ch.reject(got[1].delivery_tag, requeue=False)
    await asyncio.sleep(0.2)
    assert len(got) == 2
    assert (await ch.queue_declare(q.queue, passive=True)).message_count == 0


async def test_prefetch_limits_unacked_deliveries(connection):
    ch = await connection.channel(prefetch_count=5)
    q = await ch.queue_declare("", exclusive=True)
    got, _ = await consume_into(ch, q.queue, ack=False)
    for i in range(20):
        ch.publish(str(i).encode(), "", q.queue)
    await ch.wait_confirms()
    assert await wait_until(lambda: len(got) == 5)
    await asyncio.sleep(0.2)
    assert len(got) == 5
    ch.ack(got[-1].delivery_tag, multiple=True)
    assert await wait_until(lambda: len(got) == 10)


async def test_broker_cancels_consumer_when_its_queue_is_deleted(connection, unique_name):
    ch = await connection.channel()
    await ch.queue_declare(
        unique_name, durable=True, auto_delete=False, arguments={"x-expires": QUEUE_EXPIRES_MS}
    )
    cancelled = []
    await ch.consume(unique_name, lambda b: None, on_cancel=cancelled.append)
    other = await connection.channel()
    await other.queue_delete(unique_name)
    assert await wait_until(lambda: len(cancelled) == 1)
    assert cancelled[0].startswith("mg.")
    assert not ch._consumers
    assert ch.is_open  # a broker cancel does not close the channel


async def test_mandatory_unroutable_publish_is_returned(connection, unique_name):
    ch = await connection.channel()
    returned = []
    ch.on_return = returned.append
    ch.publish(b"lost?", "", unique_name, mandatory=True)
    await ch.wait_confirms()  # RabbitMQ confirms a returned message after the return
    assert await wait_until(lambda: len(returned) == 1)
    assert returned[0].reply_code == 312  # AMQP's no-route
    assert isinstance(returned[0].reply_text, str)  # its wording is the broker's
    assert returned[0].body == b"lost?"


async def test_missing_queue_raises_not_found_and_channel_recovers(connection, unique_name):
    ch = await connection.channel()
    with pytest.raises(NotFound) as info:
        await ch.queue_declare(unique_name, passive=True)
    error = info.value
    assert error.reply_code == 404
    assert (error.class_id, error.method_id, error.scope) == (50, 10, "channel")  # Queue.Declare
    # The broker's reply text is its own wording: passed on as it came, inside our sentence.
    assert str(error) == (
        f"channel closed by broker: 404 {error.reply_text} (in reply to Queue.Declare)"
    )
    ok = await ch.queue_declare("", exclusive=True)  # the channel was reopened for us
    assert ok.queue.startswith("amq.gen-")


async def test_exclusive_queue_of_another_connection_is_locked(connection, broker_url, unique_name):
    ch = await connection.channel()
    await ch.queue_declare(unique_name, exclusive=True)
    async with Connection(broker_url) as other:
        och = await other.channel()
        with pytest.raises(ResourceLocked) as info:
            await och.queue_declare(unique_name)
        assert info.value.reply_code == 405


async def test_redeclare_with_other_arguments_fails_precondition(connection, unique_name):
    ch = await connection.channel()
    expires = {"x-expires": QUEUE_EXPIRES_MS}
    await ch.queue_declare(
        unique_name, durable=True, auto_delete=True, arguments={"x-max-length": 10, **expires}
    )
    with pytest.raises(PreconditionFailed) as info:
        await ch.queue_declare(
            unique_name, durable=True, auto_delete=True, arguments={"x-max-length": 20, **expires}
        )
    assert info.value.reply_code == 406
    # auto_delete removes a queue only after it had a consumer: this one never did.
    await ch.queue_delete(unique_name)


async def test_publish_to_missing_exchange_fails_to_the_publisher(connection, unique_name):
    ch = await connection.channel()
    failures = []
    ch.on_publish_failure = failures.extend
    seq = ch.publish(b"nowhere", unique_name, "x")
    with pytest.raises(PublishError) as info:
        await ch.wait_confirms(seq, timeout=10)
    assert [s for s, _ in info.value.failures] == [seq]
    assert isinstance(info.value.failures[0][1], NotFound)
    assert [s for s, _ in failures] == [seq]
    # The channel comes back and works.
    assert await wait_until(lambda: ch.is_open)
    q = await ch.queue_declare("", exclusive=True)
    ch.publish(b"fine", "", q.queue)
    await ch.wait_confirms(timeout=10)


async def test_wait_confirms_covers_only_its_range(connection):
    ch = await connection.channel()
    q = await ch.queue_declare("", exclusive=True)
    seqs = [ch.publish(b"m", "", q.queue) for _ in range(100)]
    assert seqs == list(range(1, 101))
    await ch.wait_confirms(50)
    assert ch._tracker.confirmed_through >= 50
    await ch.wait_confirms()
    assert ch._tracker.confirmed_through == 100
    assert ch.unconfirmed == 0


async def test_wrong_password_is_a_clear_error_without_the_password(broker_url):
    url = broker_url.replace("guest:guest", "guest:sekrit-pw")
    with pytest.raises(AuthenticationError) as info:
        await Connection(url, reconnect=False).connect()
    message = str(info.value)
    assert "broker refused the credentials of user 'guest'" in message
    assert info.value.reply_code == 403  # AMQP's access-refused
    assert "sekrit-pw" not in message


async def test_unknown_vhost_is_refused(broker_url):
    with pytest.raises(AuthenticationError) as info:
        await Connection(broker_url.rstrip("/") + "/no-such-vhost").connect()
    assert "user 'guest' may not open vhost 'no-such-vhost'" in str(info.value)


async def test_absent_broker_is_a_one_line_error():
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AMQPConnectError) as info:
        await Connection(f"amqp://guest:pw@127.0.0.1:{port}/").connect()
    assert str(info.value) == f"cannot connect to amqp://127.0.0.1:{port}/: connection refused"


async def test_garbage_speaking_server_is_a_clear_error():
    async def garbage(reader, writer):
        await reader.read(8)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(AMQPConnectError) as info:
            await Connection(f"amqp://127.0.0.1:{port}/?connection_timeout=5000").connect()
        assert "malformed data from broker" in str(info.value)
    finally:
        server.close()


async def test_silent_server_times_out_the_handshake():
    async def silent(reader, writer):
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(AMQPConnectError) as info:
            await Connection(f"amqp://127.0.0.1:{port}/?connection_timeout=300").connect()
        assert "no AMQP handshake within 0.3s" in str(info.value)
    finally:
        server.close()


async def test_operations_after_close_raise_connection_lost(broker_url):
    conn = await Connection(broker_url).connect()
    ch = await conn.channel()
    await conn.close()
    assert conn.is_closed
    with pytest.raises(ConnectionLost):
        await ch.queue_declare("", exclusive=True)
    with pytest.raises(ConnectionLost):
        ch.publish(b"x", "", "q")
    with pytest.raises(ConnectionLost):
        await conn.channel()


async def test_channel_close_and_reuse_of_ids(connection):
    a = await connection.channel()
    b = await connection.channel()
    assert (a.id, b.id) == (1, 2)
    await a.close()
    assert not a.is_open
    c = await connection.channel()
    assert c.id == 3  # ids are handed out round-robin before reuse
    q = await b.queue_declare("", exclusive=True)
    assert q.queue


async def test_heartbeats_keep_an_idle_connection_alive(broker_url):
    # The broker drops a peer that stays silent for two heartbeat intervals.
    async with Connection(broker_url + "?heartbeat=1") as conn:
        assert conn.heartbeat == 1
        await asyncio.sleep(3.5)
        assert conn.is_open and conn.reconnects == 0
        ch = await conn.channel()
        assert (await ch.queue_declare("", exclusive=True)).queue
