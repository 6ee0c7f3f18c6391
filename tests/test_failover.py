"""Several broker URLs (failover) against the real RabbitMQ: the connection tries them in
order on connect and on every recovery, logs one line per URL that failed (never its
password), and fails with every URL named only when none works. Parsing the list is
tests/test_url.py's.

"Dead" URLs point at a loopback port nothing listens on; a URL that stops working during a
test goes through munggoggo.testing.fault_proxy (refuse new connections, cut the current one).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from broker_tools import wait_until

from munggoggo import Agent
from munggoggo._speedups import Properties
from munggoggo.amqp.errors import AMQPConnectError
from munggoggo.client import Connection
from munggoggo.testing import FaultProxy, free_port
from munggoggo.transport import Backoff
from munggoggo.url import parse_url, parse_urls

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

SECRET = "Fa1l0ver-s3cret"  # a password that must never reach a log line or an error


def dead_url() -> str:
    # A port nothing listens on: connects get ECONNREFUSED.
    return f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/"


def failed_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]


def assert_no_secret(caplog, *texts: str) -> None:
    for text in [*texts, *(r.getMessage() for r in caplog.records)]:
        assert SECRET not in text


# -- connecting --------------------------------------------------------------------------


async def test_a_dead_first_url_is_skipped_with_one_line(broker_url, caplog):
    caplog.set_level(logging.WARNING, logger="munggoggo")
    dead = dead_url()
    async with Connection([dead, broker_url]) as conn:
        assert conn.is_open
        assert conn.url == parse_url(broker_url)
        ch = await conn.channel()
        q = await ch.queue_declare("", exclusive=True)
        assert q.queue
    lines = failed_lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith("broker URL 1 of 2 failed: cannot connect to amqp://127.0.0.1:")
    assert "connection refused" in lines[0]
    assert_no_secret(caplog)


async def test_a_wrong_password_in_the_list_does_not_stop_the_agent(broker_url, caplog):
    caplog.set_level(logging.WARNING, logger="munggoggo")
    host_port = broker_url.rsplit("@", 1)[1]
    wrong = f"amqp://guest:{SECRET}@{host_port}"  # a broker that refuses this login
    identity = f"failover-{uuid.uuid4().hex[:6]}"
    async with Agent(identity, url=f"{wrong},{broker_url}") as agent, Agent(url=broker_url) as peer:
        assert agent.status()["connected"]
        assert agent.url == parse_url(broker_url)
        assert (await peer.call(identity, "status", timeout=5))["url"] == str(agent.url)
    lines = failed_lines(caplog)
    assert len(lines) == 1 and "broker URL 1 of 2 failed" in lines[0], lines
    assert_no_secret(caplog)


async def test_every_url_dead_names_each_without_passwords(caplog):
    caplog.set_level(logging.WARNING, logger="munggoggo")
    urls = [dead_url(), dead_url()]
    with pytest.raises(AMQPConnectError) as info:
        await Connection(urls).connect()
    message = str(info.value)
    assert message.startswith("no broker URL of 2 works: ")
    for url in parse_urls(urls):
        assert f"cannot connect to {url}: connection refused" in message
    assert len(failed_lines(caplog)) == 2
    assert_no_secret(caplog, message)
    with pytest.raises(AMQPConnectError) as info:  # the same through an agent
        await Agent(url=",".join(urls)).start()
    assert "no broker URL of 2 works" in str(info.value)
    assert SECRET not in str(info.value)


# -- recovering --------------------------------------------------------------------------


async def test_recovery_moves_to_the_next_working_url(broker_url, unique_name, caplog):
    """URL 1 stops accepting and its connection is cut: the recovery logs URL 1's refusal,
    connects to URL 2, and the restored consumer gets what is published afterwards."""
    caplog.set_level(logging.WARNING, logger="munggoggo")
    upstream = parse_url(broker_url)
    async with (
        FaultProxy(upstream=(upstream.host, upstream.port)) as first,
        FaultProxy(upstream=(upstream.host, upstream.port)) as second,
    ):
        urls = [
            f"amqp://guest:guest@127.0.0.1:{first.port}/",
            f"amqp://guest:guest@127.0.0.1:{second.port}/",
        ]
        conn = await Connection(urls, backoff=Backoff(initial=0.05, maximum=0.2)).connect()
        try:
            assert conn.url.port == first.port
            ch = await conn.channel()
            # Not exclusive: the broker may still hold the cut connection's exclusive queue
            # when the recovery declares it again; so durable (RabbitMQ 4 refuses transient
            # non-exclusive queues). Expires if the test dies before deleting.
            await ch.queue_declare(unique_name, durable=True, arguments={"x-expires": 60_000})
            got: list[bytes] = []

            def on_batch(batch):
                got.extend(d.body for d in batch)
                ch.ack(batch[-1].delivery_tag, multiple=True)

            await ch.consume(unique_name, on_batch)
            first.refuse()
            assert first.cut() == 1
            assert await wait_until(lambda: conn.reconnects == 1 and conn.is_open, timeout=20)
            assert conn.url.port == second.port
            assert second.connections == 1
            seq = ch.publish(b"after failover", "", unique_name, Properties())
            await ch.wait_confirms(seq, timeout=10)
            assert await wait_until(lambda: got == [b"after failover"], timeout=10)
            await ch.queue_delete(unique_name)
        finally:
            await conn.close()
    lines = failed_lines(caplog)
    assert any(
        line.startswith(
            f"broker URL 1 of 2 failed: cannot connect to amqp://127.0.0.1:{first.port}/"
        )
        for line in lines
    ), lines
    assert not any(f":{second.port}/" in line for line in lines), lines


async def test_recovery_waits_with_backoff_until_some_url_works(broker_url, caplog):
    """Both URLs refuse for a while: rounds repeat (each URL's refusal logged), and the
    connection recovers as soon as one accepts again."""
    caplog.set_level(logging.WARNING, logger="munggoggo")
    upstream = parse_url(broker_url)
    async with (
        FaultProxy(upstream=(upstream.host, upstream.port)) as first,
        FaultProxy(upstream=(upstream.host, upstream.port)) as second,
    ):
        urls = [f"amqp://guest:guest@127.0.0.1:{p.port}/" for p in (first, second)]
        conn = await Connection(urls, backoff=Backoff(initial=0.05, maximum=0.2)).connect()
        try:
            first.refuse()
            second.refuse()
            first.cut()
            assert await wait_until(lambda: len(failed_lines(caplog)) >= 4, timeout=20)
            assert conn.state == "recovering"
            await second.accept()
            assert await wait_until(lambda: conn.is_open, timeout=20)
            assert conn.url.port == second.port
            ch = await conn.channel()
            assert (await ch.queue_declare("", exclusive=True)).queue
        finally:
            await conn.close()
    lines = failed_lines(caplog)
    assert {line.split(" failed")[0] for line in lines} == {
        "broker URL 1 of 2",
        "broker URL 2 of 2",
    }


async def test_a_silent_first_url_times_out_and_the_second_stays_up(broker_url, caplog):
    """URL 1 accepts TCP but never speaks AMQP: its handshake times out, and the aborted
    socket's late loss must not break the connection made to URL 2."""
    caplog.set_level(logging.WARNING, logger="munggoggo")

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent = f"amqp://guest:{SECRET}@127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with Connection([f"{silent}?connection_timeout=200", broker_url]) as conn:
            await asyncio.sleep(0.3)  # time for a stray loss to arrive
            assert conn.is_open and conn.url == parse_url(broker_url)
            ch = await conn.channel()
            assert (await ch.queue_declare("", exclusive=True)).queue
    finally:
        server.close()
        await server.wait_closed()
    lines = failed_lines(caplog)
    assert len(lines) == 1 and "no AMQP handshake within 0.2s" in lines[0], lines
    assert_no_secret(caplog)


async def test_a_connection_the_broker_closes_is_one_line_then_one_on_recovery(broker_url, caplog):
    """A node going away (here: the broker force-closing our connection, as a stopping
    node does with 320 CONNECTION_FORCED) is one WARNING line naming the URL, the reason
    and that we recover; the recovery is one INFO line. No ERROR."""
    from broker_tools import close_broker_connection, local_port

    caplog.set_level(logging.DEBUG, logger="munggoggo")
    conn = await Connection(broker_url, backoff=Backoff(initial=0.05, maximum=0.2)).connect()
    try:
        await asyncio.to_thread(close_broker_connection, local_port(conn))
        assert await wait_until(lambda: conn.reconnects == 1 and conn.is_open, timeout=20)
    finally:
        await conn.close()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    line = loud[0].getMessage()
    assert line.startswith(f"connection to {parse_url(broker_url)} lost: ")
    assert "320" in line and line.endswith("; recovering")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [m for m in infos if m.startswith("reconnected to")] == [
        f"reconnected to {parse_url(broker_url)} (recovery #1)"
    ]
