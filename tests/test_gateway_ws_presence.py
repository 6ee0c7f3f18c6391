"""The WebSocket's presence events (gateway/ws.py), on RabbitMQ and memory://: a socket that
subscribes with `{"op": "subscribe", "presence": true}` gets `{"op": "presence", "identity",
"state"}` when agents start and stop (what it subscribed after: the agents known to run, as
started), never about gateway workers; the others get none.

The shared RabbitMQ broker carries other runs' agents too: frames about other identities
are skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from gateway_tools import WsClient
from mesh_tools import uid

from munggoggo import Agent, AgentConfig
from munggoggo.gateway.mesh import Mesh
from munggoggo.gateway.state import GatewaySettings, GatewayState

FAST = AgentConfig(presence_interval=0.2, drain_timeout=2.0)
WAIT = 10.0


@pytest.fixture
async def state(mesh_url):
    mesh = Mesh(mesh_url, identity=f"gateway-test-{uuid.uuid4().hex[:8]}")
    await mesh.start()
    try:
        yield GatewayState(GatewaySettings(url=mesh_url), mesh)
    finally:
        await mesh.stop()


async def next_about(ws: WsClient, identities: set[str]) -> dict[str, Any]:
    """The next frame that is not a presence frame about an identity outside `identities`."""
    while True:
        frame = await ws.receive_json(timeout=WAIT)
        if frame.get("op") != "presence" or frame["identity"] in identities:
            return frame


async def test_a_subscribed_socket_hears_agents_start_and_stop(state):
    name = uid("ws-pres")
    ours = {name}
    async with WsClient(state) as ws, WsClient(state) as other:
        assert await ws.request({"op": "subscribe", "presence": True, "id": 1}) == {
            "op": "subscribed",
            "presence": True,
            "id": 1,
        }
        async with Agent(name, url=state.settings.url, config=FAST):
            frame = await next_about(ws, ours)
            assert frame == {"op": "presence", "identity": name, "state": "started"}
            # A socket subscribing now learns of the agent that runs.
            assert await late_subscriber_hears(state, name)
        frame = await next_about(ws, ours)
        assert frame == {"op": "presence", "identity": name, "state": "stopped"}
        # Not subscribed: no presence frames at all.
        assert await other.nothing_pending()
        assert await ws.request({"op": "unsubscribe", "presence": True}) == {
            "op": "unsubscribed",
            "presence": True,
        }
        async with Agent(uid("ws-pres-after"), url=state.settings.url, config=FAST):
            pass
        assert await ws.nothing_pending()


async def late_subscriber_hears(state: GatewayState, name: str) -> bool:
    async with WsClient(state) as late:
        assert await late.request({"op": "subscribe", "presence": True}) == {
            "op": "subscribed",
            "presence": True,
        }
        frame = await next_about(late, {name})
        return frame == {"op": "presence", "identity": name, "state": "started"}


async def test_gateway_workers_are_never_announced(state):
    worker = f"gateway-other-{uuid.uuid4().hex[:8]}"
    name = uid("ws-pres")
    async with WsClient(state) as ws:
        await ws.request({"op": "subscribe", "presence": True})
        # Announcing like an agent (an older gateway's worker would): still not passed on.
        async with (
            Agent(worker, url=state.settings.url, config=FAST),
            Agent(name, url=state.settings.url, config=FAST),
        ):
            frame = await next_about(ws, {worker, name})
            assert frame == {"op": "presence", "identity": name, "state": "started"}
        frame = await next_about(ws, {worker, name})
        assert frame == {"op": "presence", "identity": name, "state": "stopped"}
    # The gateway's own client agent announces nothing: the mesh's agents never hear of it.
    heard: list[str] = []
    watcher = Agent(uid("ws-pres-watch"), url=state.settings.url, config=FAST)
    watcher.on_presence = lambda identity, _: heard.append(identity)
    async with watcher:
        other = Mesh(state.settings.url, identity=f"gateway-test-{uuid.uuid4().hex[:8]}")
        await other.start()
        await other.stop()
        await asyncio.sleep(0.3)  # what it would have announced has arrived by now
    assert not [i for i in heard if i in (other.identity, state.mesh.identity)]


async def test_presence_frames_that_cannot_be_served_get_an_error(state):
    async with WsClient(state) as ws:
        reply = await ws.request({"op": "subscribe", "presence": "yes", "id": 3})
        assert reply["op"] == "error" and reply["id"] == 3 and "presence" in reply["error"]
        reply = await ws.request({"op": "subscribe", "presence": True, "topic": "a.b"})
        assert reply["op"] == "error" and "not both" in reply["error"]
        reply = await ws.request({"op": "unsubscribe", "presence": True})
        assert reply == {"op": "error", "error": "not subscribed to presence"}
