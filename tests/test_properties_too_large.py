"""A publish whose properties exceed frame_max is refused to its caller, never sent.

AMQP 0-9-1 cannot split a content header over frames: sent anyway, the broker closes the
whole connection with 501 FRAME_ERROR, and a republish after the reconnect would do it
again. These tests hold every publishing path to the contract: `PropertiesTooLarge` (a
ValueError) naming the size and the negotiated frame_max, nothing sent, the connection
untouched, the next publish fine.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import eventually
from gateway_tools import WsClient
from mesh_tools import BodyCollector, uid

from munggoggo import Agent, Behaviour
from munggoggo._speedups import (
    Properties,
    PropertiesTooLarge,
    encode_properties,
    pack_publish,
    publish_method_frame,
)
from munggoggo.client import Connection
from munggoggo.gateway.mesh import Mesh
from munggoggo.gateway.state import GatewaySettings, GatewayState
from munggoggo.republish import fit_to_frame_max

WAIT = 10.0
HUGE = {"h": "x" * 200_000}  # far above RabbitMQ's default frame_max of 131072


class Collector(BodyCollector):
    """Keeps the bodies of what its topics bring."""


def assert_names_the_limit(exc: PropertiesTooLarge, frame_max: int) -> None:
    assert isinstance(exc, ValueError)
    assert exc.frame_max == frame_max
    assert exc.size > frame_max
    assert str(frame_max) in str(exc) and str(exc.size) in str(exc)


async def test_agent_publish_send_broadcast_refuse_huge_headers(mesh_url):
    key = uid("big")
    receiver = Agent(uid("big-rx"), url=mesh_url)
    async with receiver, Agent(uid("big-tx"), url=mesh_url) as sender:
        collector = await receiver.add_behaviour(Collector(receiver, binding_keys=[key]))
        frame_max = sender.connection.frame_max
        for attempt in (
            sender.publish(b"too big", key, headers=HUGE),
            sender.send(receiver.identity, b"too big", headers=HUGE),
            sender.broadcast(b"too big", headers=HUGE),
        ):
            with pytest.raises(PropertiesTooLarge) as info:
                await attempt
            assert_names_the_limit(info.value, frame_max)
        await sender.publish(b"fine", key, headers={"h": "x" * 1000})
        await sender.flush(timeout=WAIT)
        await eventually(lambda: collector.bodies == [b"fine"], WAIT)
        assert sender.connection.reconnects == 0
        assert receiver.connection.reconnects == 0


async def test_engine_publish_refuses_huge_properties(mesh_url):
    async with Agent(uid("big-engine"), url=mesh_url) as agent:
        conn = agent.connection
        ch = await conn.channel()
        queue = uid("big-q")
        await ch.queue_declare(queue, durable=True, arguments={"x-expires": 60_000})
        before = ch.unconfirmed
        with pytest.raises(PropertiesTooLarge) as info:
            ch.publish(b"too big", "", queue, Properties(headers=HUGE))
        assert_names_the_limit(info.value, conn.frame_max)
        raw = encode_properties(Properties(headers=HUGE))
        with pytest.raises(PropertiesTooLarge):
            ch.publish(b"too big", "", queue, raw)  # pre-encoded properties too
        assert ch.unconfirmed == before  # nothing kept for confirms: nothing was sent
        seq = ch.publish(b"fine", "", queue, Properties(headers={"k": "v"}))
        await ch.wait_confirms(seq, timeout=WAIT)
        got = await ch.get(queue, no_ack=True)
        assert got is not None and got.body == b"fine"
        assert await ch.get(queue, no_ack=True) is None
        assert conn.reconnects == 0
        await ch.queue_delete(queue)
        await ch.close()


async def test_engine_publish_refuses_against_a_smaller_negotiated_frame_max(broker_url):
    url = broker_url + ("&" if "?" in broker_url else "?") + "frame_max=8192"
    async with Connection(url) as conn:
        assert conn.frame_max == 8192
        ch = await conn.channel()
        queue = uid("small-frames")
        await ch.queue_declare(queue, durable=True, arguments={"x-expires": 60_000})
        with pytest.raises(PropertiesTooLarge) as info:
            ch.publish(b"x", "", queue, Properties(headers={"h": "y" * 9000}))
        assert_names_the_limit(info.value, 8192)
        # a body far above frame_max is fine: it is split into body frames
        seq = ch.publish(b"z" * 100_000, "", queue, Properties(headers={"h": "y" * 4000}))
        await ch.wait_confirms(seq, timeout=WAIT)
        got = await ch.get(queue, no_ack=True)
        assert got is not None and got.body == b"z" * 100_000
        assert conn.reconnects == 0
        await ch.queue_delete(queue)


def test_kept_publishes_are_resplit_for_a_smaller_frame_max():
    method = publish_method_frame(3, "ex", "rk")
    props = encode_properties(Properties(headers={"h": "y" * 3000}))
    body = bytes(range(256)) * 400
    packed = pack_publish(method, 3, props, body, 131072)
    assert fit_to_frame_max(packed, 131072) is packed  # fits: not copied
    refitted = fit_to_frame_max(packed, 4096)
    assert refitted == pack_publish(method, 3, props, body, 4096)
    assert fit_to_frame_max(packed, 0) is packed
    with pytest.raises(PropertiesTooLarge):
        big = encode_properties(Properties(headers={"h": "y" * 5000}))
        fit_to_frame_max(pack_publish(method, 3, big, b"", 131072), 4096)


async def test_gateway_ws_publish_with_huge_headers_is_a_clear_client_error(broker_url):
    mesh = Mesh(broker_url, identity=uid("gateway-big"))
    await mesh.start()
    try:
        state = GatewayState(GatewaySettings(url=broker_url), mesh)
        async with WsClient(state) as ws:
            reply = await ws.request(
                {"op": "publish", "topic": "big.one", "body": 1, "headers": HUGE, "id": 1}
            )
            assert reply["op"] == "error"
            assert "frame_max" in reply["error"] and "131072" in reply["error"]
            reply = await ws.request({"op": "publish", "topic": "big.one", "body": 2, "id": 2})
            assert reply["op"] == "published"
        assert mesh.agent.connection.reconnects == 0
    finally:
        await mesh.stop()


class AlwaysFails(Behaviour):
    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is not None:
            raise RuntimeError("cannot handle this one")


async def test_dead_letter_copy_too_large_goes_to_the_broker_dlx(isolated_mesh_url):
    # The message fits frame_max; its dead-letter copy (our reason headers added) does not:
    # the original is rejected to the queue's dead-letter exchange instead, never stuck.
    from munggoggo import AgentConfig
    from munggoggo.wire import DEAD_LETTER_QUEUE

    key = uid("near-limit")
    config = AgentConfig(max_redeliveries=0)
    receiver = Agent(uid("near-rx"), url=isolated_mesh_url, config=config)
    async with receiver, Agent(uid("near-tx"), url=isolated_mesh_url) as sender:
        await receiver.add_behaviour(AlwaysFails(receiver, binding_keys=[key]))
        await sender.publish(b"near the limit", key, headers={"h": "x" * 130_950})
        await sender.publish(b"small", key)
        await sender.flush(timeout=WAIT)
        ch = await sender.connection.channel()
        # Counted, not read: with RabbitMQ's x-death added, the rejected original's
        # headers exceed frame_max (the broker still delivers such frames).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while (await ch.queue_declare(DEAD_LETTER_QUEUE, passive=True)).message_count < 2:
            assert loop.time() < deadline, "the dead letters did not arrive"
            await asyncio.sleep(0.05)
        assert (await ch.queue_declare(DEAD_LETTER_QUEUE, passive=True)).message_count == 2
        assert receiver.connection.reconnects == 0
