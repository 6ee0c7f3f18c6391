"""The gateway while its broker connection is down: every route that needs the broker
answers 503 with Retry-After and says why, never a 500 (the dashboard polls GET /agents
through broker restarts). The connection is closed from the gateway's side, so the shared
broker is left alone.
"""

from __future__ import annotations

import logging

import pytest
from gateway_agents import running_gateway

from munggoggo.gateway.state import GatewaySettings

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(30)]


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
