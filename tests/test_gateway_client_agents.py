"""The gateway workers' own client agents are not agents of the mesh for gateway clients:
no route calls them (404 / -32001, like an agent that does not exist), whichever worker
serves the request, and they keep no traces of the traffic they carry (other clients'
topics, targets and correlation ids). The app runs in process on RabbitMQ and memory://.
"""

from __future__ import annotations

import pytest
from gateway_tools import WsClient, running_gateway
from mesh_tools import Calc, uid

from munggoggo import Agent
from munggoggo.gateway.mesh import Mesh, is_gateway_identity
from munggoggo.gateway.state import GatewaySettings
from munggoggo.rpc import UNKNOWN_AGENT

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]


def refused_as_unknown(response, identity: str) -> None:
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == UNKNOWN_AGENT
    assert error["message"] == f"unknown agent {identity!r}: no inbox queue of that name"


async def test_no_route_reaches_a_gateway_client_agent(mesh_url):
    # Another worker's agent (same broker, another process in production).
    other = Mesh(mesh_url, identity=uid("gateway-otherhost"))
    await other.start()
    try:
        async with running_gateway(GatewaySettings(url=mesh_url)) as gw:
            own = gw.app.state.mesh.identity
            assert is_gateway_identity(own) and is_gateway_identity(other.identity)
            for identity in (own, other.identity):
                for method, path in [
                    ("POST", f"/agents/{identity}/call/traces"),
                    ("POST", f"/agents/{identity}/call/status"),
                    ("GET", f"/agents/{identity}"),
                    ("POST", f"/agents/{identity}/behaviours/x/stop"),
                ]:
                    response = await gw.http.request(
                        method, path, json=[] if method == "POST" else None
                    )
                    refused_as_unknown(response, identity)
                reply = (
                    await gw.rpc({"jsonrpc": "2.0", "method": f"{identity}.traces", "id": 1})
                ).json()
                assert reply["error"]["code"] == UNKNOWN_AGENT, reply
                async with WsClient(gw.app.state) as ws:
                    reply = await ws.request(
                        {"jsonrpc": "2.0", "method": f"{identity}.traces", "id": 2}
                    )
                assert reply["error"]["code"] == UNKNOWN_AGENT, reply
    finally:
        await other.stop()


async def test_a_gateway_client_agent_keeps_no_traces_of_its_clients(mesh_url):
    async with Calc(uid("calc"), url=mesh_url) as calc, Agent(uid("operator"), url=mesh_url) as op:
        async with running_gateway(GatewaySettings(url=mesh_url)) as gw:
            for n in range(3):
                response = await gw.http.post(f"/agents/{calc.identity}/call/subtract", json=[n, 1])
                assert response.json() == n - 1
            response = await gw.http.post(f"/topics/{uid('client.topic')}", json={"secret": 1})
            assert response.status_code == 202
            # Asked directly on the mesh (not through the gateway), it has nothing to tell.
            assert await op.call(gw.app.state.mesh.identity, "traces", 100) == []
        # The agent called keeps its own traces as before (a request names its caller).
        assert await op.call(calc.identity, "traces", 100)
