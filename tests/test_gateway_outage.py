"""The gateway while its broker connection is down: every route that needs the broker
answers 503 with Retry-After and says why, never a 500 (the dashboard polls GET /agents
through broker restarts), and at once: a publish (REST or WebSocket) waits for no broker,
holds none of a WebSocket's other frames, and what a worker keeps for the broker is
bounded (and in its metrics). The connection is closed from the gateway's side or cut by a
FaultProxy, so the shared broker is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from broker_tools import eventually
from gateway_tools import WsClient, running_gateway
from mesh_tools import BodyCollector, uid

from munggoggo import Agent
from munggoggo.gateway.state import GatewaySettings
from munggoggo.rpc import UNAVAILABLE
from munggoggo.testing import FaultProxy
from munggoggo.url import parse_url

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(90)]


async def test_routes_answer_503_while_the_broker_connection_is_down(broker_url, caplog):
    async with running_gateway(GatewaySettings(url=broker_url)) as gw:
        await gw.app.state.mesh.agent.connection.close()
        caplog.set_level(logging.INFO, logger="munggoggo.gateway")
        for method, path, body in [
            ("GET", "/agents", None),
            ("POST", "/topics/outage.test", {"value": 1}),
            ("POST", "/agents/someone/call/ping", []),
            ("GET", "/agents/someone", None),
        ]:
            response = await gw.http.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["message"], path
        assert "not connected to the broker" in (await gw.http.get("/agents")).text
        assert (await gw.http.get("/readyz")).status_code == 503
        assert (await gw.http.get("/healthz")).status_code == 200
        assert not [r for r in caplog.records if r.exc_info], "a refusal was logged as a crash"


# -- publishes while the broker is unreachable (FaultProxy: the shared broker is left alone) --

WAIT = 10.0  # bound on anything that must come soon; the outages below last longer


@contextlib.asynccontextmanager
async def proxied_gateway(broker_url: str, **settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    """A gateway whose broker connection runs through a FaultProxy: (gateway, proxy)."""
    upstream = parse_url(broker_url)
    async with FaultProxy(upstream=(upstream.host, upstream.port)) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        async with running_gateway(GatewaySettings(url=url, **settings)) as gw:
            yield gw, proxy


async def take_the_broker_away(gw: Any, proxy: FaultProxy) -> None:
    """Cut the gateway's connection and refuse its reconnects until `bring_it_back`."""
    proxy.refuse()
    proxy.cut()
    await eventually(lambda: not gw.app.state.mesh.connected, WAIT, "connection down")


async def bring_it_back(gw: Any, proxy: FaultProxy) -> None:
    await proxy.accept()
    await eventually(lambda: gw.app.state.mesh.connected, 30, "reconnected")


def gauge(metrics_text: str, name: str) -> float:
    """The value of an unlabelled series in a Prometheus exposition."""
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in the metrics")


def assert_refused_publish(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == UNAVAILABLE
    assert error["message"]


async def test_a_publish_while_the_broker_is_unreachable_is_refused_at_once(broker_url):
    topic = uid("outage.rest")
    async with proxied_gateway(broker_url) as (gw, proxy):
        publisher = gw.app.state.mesh.publisher
        await take_the_broker_away(gw, proxy)
        for n in range(20):
            # Bounded: before, it waited for the broker to come back (here: never).
            response = await asyncio.wait_for(
                gw.http.post(f"/topics/{topic}", json={"n": n, "pad": "x" * 10_000}), WAIT
            )
            assert_refused_publish(response)
        assert publisher.buffered == 0 and publisher.buffered_bytes == 0  # nothing kept
        metrics = (await gw.http.get("/metrics")).text
        assert gauge(metrics, "munggoggo_gateway_publish_refused_total") == 20
        assert gauge(metrics, "munggoggo_gateway_publish_buffered") == 0
        await bring_it_back(gw, proxy)
        response = await gw.http.post(f"/topics/{topic}", json={"n": 20})
        assert response.status_code == 202, response.text


async def test_a_websocket_publish_while_the_broker_is_unreachable_holds_no_other_frame(
    broker_url,
):
    topic = uid("outage.ws")
    async with proxied_gateway(broker_url) as (gw, proxy):
        state = gw.app.state
        async with WsClient(state) as client:
            await take_the_broker_away(gw, proxy)
            client.send_json({"op": "publish", "topic": topic, "body": 1, "id": 1})
            client.send_json({"op": "subscribe", "topic": topic, "id": 2})
            client.send_json({"jsonrpc": "2.0", "method": "someone.ping", "id": 3})
            answers = {}
            for _ in range(3):
                frame = await client.receive_json(WAIT)
                answers[frame["id"]] = frame
            assert answers[1]["op"] == "error" and topic in answers[1]["error"]
            assert answers[2]["op"] == "error" and "not connected" in answers[2]["error"]
            assert answers[3]["error"]["code"] == UNAVAILABLE
            assert state.counters["publish_refused"] == 1
            await bring_it_back(gw, proxy)
            assert await client.request({"op": "subscribe", "topic": topic, "id": 4}) == {
                "op": "subscribed",
                "topic": topic,
                "id": 4,
            }
            reply = await client.request({"op": "publish", "topic": topic, "body": 2, "id": 5})
            while reply["op"] == "message":  # our own publish, through our subscription
                reply = await client.receive_json()
            assert reply == {"op": "published", "topic": topic, "id": 5}


async def test_what_a_worker_holds_for_the_broker_is_bounded_and_delivered_after(broker_url):
    """The broker stops confirming (a frozen network): publishes fill the buffer up to its
    byte bound, then get 503. The connection then drops: what the buffer held is all the
    gateway keeps, the metrics say so, and it reaches the subscriber after the reconnect."""
    topic = uid("outage.held")
    bound = 64 * 1024
    async with Agent(uid("outage-sub"), url=broker_url) as subscriber:
        collector = await subscriber.add_behaviour(BodyCollector(subscriber, binding_keys=[topic]))
        settings = {"publish_buffer_bytes": bound, "publish_timeout": 0.3}
        async with proxied_gateway(broker_url, **settings) as (gw, proxy):
            publisher = gw.app.state.mesh.publisher
            proxy.freeze()
            accepted, refused = [], 0
            for n in range(40):
                response = await asyncio.wait_for(
                    gw.http.post(f"/topics/{topic}", json={"n": n, "pad": "x" * 4000}), WAIT
                )
                if response.status_code == 202:
                    accepted.append(n)
                else:
                    assert_refused_publish(response)
                    refused += 1
            assert accepted and refused, (accepted, refused)
            held = publisher.buffered_bytes
            assert 0 < held <= bound
            assert publisher.buffered == len(accepted)
            proxy.refuse()
            proxy.cut()
            proxy.thaw()
            await eventually(lambda: not gw.app.state.mesh.connected, WAIT, "connection down")
            assert_refused_publish(await gw.http.post(f"/topics/{topic}", json={"n": -1}))
            assert publisher.buffered_bytes == held  # kept for the republish, nothing more
            metrics = (await gw.http.get("/metrics")).text
            assert gauge(metrics, "munggoggo_gateway_publish_buffered_bytes") == held
            assert gauge(metrics, "munggoggo_gateway_publish_buffered") == len(accepted)
            assert gauge(metrics, "munggoggo_gateway_publish_buffer_max_bytes") == bound
            assert gauge(metrics, "munggoggo_gateway_publish_refused_total") == refused + 1
            await bring_it_back(gw, proxy)
            await eventually(lambda: publisher.buffered == 0, WAIT, "republished and confirmed")

            def received() -> set[int]:
                return {json.loads(body)["n"] for body in collector.bodies}

            await eventually(lambda: set(accepted) <= received(), WAIT, "held messages arrive")
            metrics = (await gw.http.get("/metrics")).text
            assert gauge(metrics, "munggoggo_gateway_publish_buffered_bytes") == 0


async def test_websocket_publishes_waiting_for_room_hold_no_other_frame(broker_url):
    """With the buffer full, a client's publishes wait their turn (in order, a bounded
    number of them) while its other frames are answered at once; each waits at most the
    publish timeout, then gets its error frame."""
    topic = uid("outage.waiting")
    settings = {"publish_buffer_bytes": 16 * 1024, "publish_timeout": 1.0, "ws_buffer": 5}
    async with proxied_gateway(broker_url, **settings) as (gw, proxy):
        state = gw.app.state
        async with WsClient(state) as client:
            proxy.freeze()
            pad = "x" * 4000
            for n in range(12):
                client.send_json({"op": "publish", "topic": topic, "body": pad, "id": n})
            probe = {"op": "unsubscribe", "topic": "never.subscribed", "id": "probe"}
            client.send_json(probe)
            answers: dict[Any, dict[str, Any]] = {}
            while "probe" not in answers:
                frame = await client.receive_json(WAIT)
                answers[frame["id"]] = frame
            # Answered before the waiting publishes ended: they held it up in no way.
            waiting = [n for n in range(12) if n not in answers]
            assert len(waiting) == 5, answers  # ws_buffer of them wait; the rest went or not
            published = [n for n, a in answers.items() if a["op"] == "published"]
            assert published == list(range(len(published)))  # in order
            turned_away = [n for n, a in answers.items() if n != "probe" and a["op"] == "error"]
            assert len(published) + len(turned_away) + len(waiting) == 12
            while len(answers) < 13:
                frame = await client.receive_json(WAIT)
                answers[frame["id"]] = frame
            for n in waiting:
                assert answers[n]["op"] == "error" and "cannot publish" in answers[n]["error"]
            proxy.thaw()
