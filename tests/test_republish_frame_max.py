"""Unconfirmed publishes republished after a reconnect fit the new connection's frame_max.

The first URL negotiates RabbitMQ's default frame_max, the second asks for 8192. Publishes
sent into a frozen first connection (never confirmed) are kept as packed frames; the
recovery lands on the second URL, where those frames would be too large (the broker would
close the connection with 501 FRAME_ERROR after every reconnect). Bodies are re-split;
a content header that no longer fits fails the kept publishes with PropertiesTooLarge.
"""

from __future__ import annotations

import pytest
from broker_tools import wait_until

from munggoggo._speedups import Properties, PropertiesTooLarge
from munggoggo.channel import PublishError
from munggoggo.client import Connection
from munggoggo.testing import FaultProxy
from munggoggo.transport import Backoff
from munggoggo.url import parse_url

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

WAIT = 15.0


async def _failover_to_small_frames(broker_url, queue, publish):
    """Publish with `publish(ch)` into a frozen first URL, then fail over to a second URL
    with frame_max 8192 (the least RabbitMQ 4 accepts); returns the connection, channel,
    sequence numbers and proxies once recovered."""
    upstream = parse_url(broker_url)
    vhost = broker_url.rsplit("/", 1)[1]
    first = await FaultProxy(upstream=(upstream.host, upstream.port)).start()
    second = await FaultProxy(upstream=(upstream.host, upstream.port)).start()
    urls = [
        f"amqp://guest:guest@127.0.0.1:{first.port}/{vhost}",
        f"amqp://guest:guest@127.0.0.1:{second.port}/{vhost}?frame_max=8192",
    ]
    conn = await Connection(urls, backoff=Backoff(initial=0.05, maximum=0.2)).connect()
    assert conn.frame_max == 131072
    ch = await conn.channel()
    await ch.queue_declare(queue, durable=True, arguments={"x-expires": 60_000})
    first.freeze()
    seqs = publish(ch)
    first.refuse()
    first.cut()
    assert await wait_until(lambda: conn.reconnects == 1 and conn.is_open, timeout=WAIT)
    assert conn.frame_max == 8192
    return conn, ch, seqs, (first, second)


async def test_kept_bodies_are_resplit_for_the_smaller_frame_max(vhost_url, unique_name):
    body = bytes(range(256)) * 100  # 25.6 KB: frames of 131072 do not fit 8192
    conn, ch, seqs, proxies = await _failover_to_small_frames(
        vhost_url,
        unique_name,
        lambda ch: [
            ch.publish(body, "", unique_name, Properties(headers={"n": i})) for i in (1, 2)
        ],
    )
    try:
        await ch.wait_confirms(seqs[-1], timeout=WAIT)
        got = [await ch.get(unique_name, no_ack=True) for _ in range(2)]
        assert [(d.body, d.properties.headers) for d in got] == [(body, {"n": 1}), (body, {"n": 2})]
        assert conn.reconnects == 1  # no reconnect loop after the republish
        await ch.queue_delete(unique_name)
    finally:
        await conn.close()
        for proxy in proxies:
            await proxy.stop()


async def test_kept_publish_whose_header_no_longer_fits_is_failed(vhost_url, unique_name):
    conn, ch, seqs, proxies = await _failover_to_small_frames(
        vhost_url,
        unique_name,
        lambda ch: [
            ch.publish(b"small", "", unique_name, Properties()),
            ch.publish(b"big", "", unique_name, Properties(headers={"h": "y" * 9000})),
        ],
    )
    try:
        with pytest.raises(PublishError) as info:
            await ch.wait_confirms(seqs[-1], timeout=WAIT)
        reasons = dict(info.value.failures)
        assert isinstance(reasons[seqs[1]], PropertiesTooLarge)
        assert reasons[seqs[1]].frame_max == 8192
        assert seqs[0] in reasons  # failed with it: the confirm window cannot skip one
        seq = ch.publish(b"after", "", unique_name, Properties())
        await ch.wait_confirms(seq, timeout=WAIT)
        got = await ch.get(unique_name, no_ack=True)
        assert got is not None and got.body == b"after"
        assert conn.reconnects == 1 and conn.is_open
        await ch.queue_delete(unique_name)
    finally:
        await conn.close()
        for proxy in proxies:
            await proxy.stop()
