"""The Grafana dashboards ask only for series that exist: every metric name in their PromQL
appears in a live scrape of agents (their `/metrics` HTTP server) and of the gateway."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker_tools import wait_until
from gateway_agents import Calc, running_gateway
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_ws import WsClient

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, RpcError
from munggoggo.deadletters import DeadLetters
from munggoggo.gateway.state import GatewaySettings
from munggoggo.metrics import serve_metrics

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

DASHBOARDS = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
METRIC_NAME = re.compile(r"\bmunggoggo_[a-zA-Z0-9_]+")


def promql_expressions(node: Any) -> list[str]:
    """Every `expr` string in a dashboard (panels, nested rows, templating queries)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(promql_expressions(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(promql_expressions(item))
    return found


def dashboard_metric_names(prefix: str) -> set[str]:
    names = set()
    for path in DASHBOARDS.glob("*.json"):
        for expr in promql_expressions(json.loads(path.read_text())):
            names.update(n for n in METRIC_NAME.findall(expr) if n.startswith(prefix))
    return names


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_dashboards_query_our_metrics():
    names = dashboard_metric_names("munggoggo_")
    # Both dashboards are there and ask for agent and gateway series.
    assert {p.name for p in DASHBOARDS.glob("*.json")} >= {"mesh-overview.json", "gateway.json"}
    assert any(n.startswith("munggoggo_gateway_") for n in names)
    assert len([n for n in names if not n.startswith("munggoggo_gateway_")]) >= 15


class Fragile(Behaviour):
    restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.got = 0

    async def run(self) -> None:
        msg = await self.receive(timeout=0.1)
        if msg is not None:
            self.got += 1
            if msg.body == b"bad":
                raise ValueError("poison")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_every_agent_series_on_the_dashboards_is_in_a_live_scrape(broker_url):
    topic = f"dash.{uuid.uuid4().hex[:8]}"
    config = AgentConfig(max_redeliveries=1)
    worker = Agent(f"dash-worker-{uuid.uuid4().hex[:6]}", url=broker_url, config=config)
    caller = Agent(f"dash-caller-{uuid.uuid4().hex[:6]}", url=broker_url)
    calc = Calc(f"dash-calc-{uuid.uuid4().hex[:6]}", url=broker_url)
    server = serve_metrics(free_port(), addr="127.0.0.1")
    try:
        async with worker, caller, calc:
            b = await worker.add_behaviour(Fragile(worker, binding_keys=[topic], name="fragile"))
            for i in range(40):  # past the 1-in-32 confirm latency sample
                await caller.publish(str(i), topic)
            await caller.publish(b"bad", topic)  # fails, is redelivered, then dead-lettered
            await caller.flush(timeout=5)
            assert await wait_until(lambda: worker.stats.dead_lettered.get("fragile") == 1)
            assert await caller.call(calc.identity, "subtract", 3, 1) == 2
            with pytest.raises(RpcError):
                await caller.call(calc.identity, "nope")
            assert b.got == 42
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            async with httpx.AsyncClient() as http:
                response = await http.get(url)
            assert response.status_code == 200
            scraped = sample_names(response.text)
            # Leave the shared munggoggo.dead-letters as we found it.
            dead = await DeadLetters(worker.connection).purge(all=True, agent=worker.identity)
            assert dead.purged == 1
    finally:
        server.shutdown()
    wanted = dashboard_metric_names("munggoggo_") - dashboard_metric_names("munggoggo_gateway_")
    missing = sorted(wanted - scraped)
    assert not missing, f"dashboard series the agent scrape lacks: {missing}"


async def test_every_gateway_series_on_the_dashboards_is_in_a_live_scrape(broker_url):
    topic = f"dash.ws.{uuid.uuid4().hex[:8]}"
    settings = GatewaySettings(url=broker_url, call_timeout=3.0, ws_buffer=1)
    async with (
        Calc(f"dash-calc-{uuid.uuid4().hex[:6]}", url=broker_url) as calc,
        running_gateway(settings) as gateway,
    ):
        http = gateway.http
        assert (await http.post(f"/agents/{calc.identity}/call/subtract", json=[3, 1])).json() == 2
        async with WsClient(gateway.app.state) as slow, WsClient(gateway.app.state) as writer:
            await slow.subscribe(topic)
            slow.reading.clear()  # a client that stops reading: its buffer of 1 overflows
            for i in range(5):
                await writer.request({"op": "publish", "topic": topic, "body": i, "id": i})
            await eventually(lambda: gateway.app.state.counters.get("ws_dropped", 0) > 0)
            text = (await http.get("/metrics")).text
            slow.reading.set()
    scraped = sample_names(text)
    wanted = dashboard_metric_names("munggoggo_gateway_")
    missing = sorted(wanted - scraped)
    assert not missing, f"dashboard series the gateway scrape lacks: {missing}"


async def eventually(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
