"""core/client.py against the real RabbitMQ: the connection's handshake and what the URL
negotiates, errors that stop a connect (credentials, vhost, nobody listening, a server that
speaks garbage or nothing), channel ids, heartbeats, and use after close. What a channel
does is tests/test_channel.py's."""

from __future__ import annotations

import asyncio

import pytest

from munggoggo.amqp.errors import AMQPConnectError, AuthenticationError, ConnectionLost
from munggoggo.client import Connection
from munggoggo.testing import free_port

pytestmark = pytest.mark.rabbitmq


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
    port = free_port()  # a port that nobody listens on
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
