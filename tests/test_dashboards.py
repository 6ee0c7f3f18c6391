"""The Grafana dashboards ask only for series that exist: every metric name in their PromQL
appears in a live scrape of agents (their `/metrics` HTTP server), of the gateway and of a
`munggoggo bench --metrics-port` run."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench_observe_tools import bench_with_metrics
from broker_tools import eventually, wait_until
from gateway_tools import WsClient, running_gateway
from mesh_tools import Calc
from prometheus_client.parser import text_string_to_metric_families

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, RpcError
from munggoggo.deadletters import DeadLetters
from munggoggo.gateway.state import GatewaySettings
from munggoggo.metrics import serve_metrics
from munggoggo.testing import free_port

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


def agent_metric_names() -> set[str]:
    """The dashboards' series an agent exports: neither the gateway's nor the bench's."""
    return (
        dashboard_metric_names("munggoggo_")
        - dashboard_metric_names("munggoggo_gateway_")
        - dashboard_metric_names("munggoggo_bench_")
    )


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_dashboards_query_our_metrics():
    names = dashboard_metric_names("munggoggo_")
    # The dashboards are there and ask for agent, gateway and bench series.
    assert {p.name for p in DASHBOARDS.glob("*.json")} >= {
        "mesh-overview.json",
        "gateway.json",
        "bench.json",
    }
    assert any(n.startswith("munggoggo_gateway_") for n in names)
    assert len(agent_metric_names()) >= 15
    assert len(dashboard_metric_names("munggoggo_bench_")) >= 8


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
    wanted = agent_metric_names()
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


def samples_by_name(text: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


class Idle(Behaviour):
    async def run(self) -> None:
        await self.receive(timeout=0.1)


async def test_a_fresh_agent_exports_every_dashboard_series_at_zero(mesh_url):
    """Before any traffic every series the dashboards query is there, at 0 (Prometheus'
    instrumentation guidance): panels show 0, not "No data"."""
    agent = Agent(f"dash-fresh-{uuid.uuid4().hex[:6]}", url=mesh_url)
    server = serve_metrics(free_port(), addr="127.0.0.1")
    try:
        async with agent:
            await agent.add_behaviour(Idle(agent, binding_keys=[f"dash.fresh.{agent.identity}"]))
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            async with httpx.AsyncClient() as http:
                response = await http.get(url)
            assert response.status_code == 200
    finally:
        server.shutdown()
    scraped = samples_by_name(response.text)
    wanted = agent_metric_names()
    ours = {
        name: [s for s in scraped.get(name, ()) if s.labels.get("agent") == agent.identity]
        for name in wanted
    }
    missing = sorted(name for name, samples in ours.items() if not samples)
    assert not missing, f"dashboard series a fresh agent does not export: {missing}"
    for name, samples in ours.items():
        expected = 1.0 if name == "munggoggo_connection_up" else 0.0
        moved = [(s.labels, s.value) for s in samples if s.value != expected]
        assert not moved, f"{name} before any traffic: {moved}"
    # Labels known at the start are there: the behaviour, the inbox, the exposed methods.
    labels = [s.labels for s in ours["munggoggo_messages_redelivered_total"]]
    assert {"agent": agent.identity, "behaviour": "Idle"} in labels
    served = {s.labels["method"] for s in ours["munggoggo_rpc_served_total"]}
    assert "list_behaviours" in served


async def test_a_fresh_gateway_exports_every_dashboard_series_at_zero(broker_url):
    async with running_gateway(GatewaySettings(url=broker_url)) as gateway:
        text = (await gateway.http.get("/metrics")).text  # the first request it answers
    scraped = samples_by_name(text)
    wanted = dashboard_metric_names("munggoggo_gateway_")
    missing = sorted(name for name in wanted if not scraped.get(name))
    assert not missing, f"dashboard series a fresh gateway does not export: {missing}"
    for name in wanted:
        moved = [(s.labels, s.value) for s in scraped[name] if s.value != 0]
        assert not moved, f"{name} before any traffic: {moved}"
    routes = {s.labels["route"] for s in scraped["munggoggo_gateway_requests_total"]}
    assert {"/jsonrpc", "/agents/{identity}/call/{method}", "/metrics"} <= routes


def test_every_bench_series_on_the_dashboards_is_in_a_live_scrape(broker_url):
    run_id = f"dash-{uuid.uuid4().hex[:6]}"
    argv = ("-z", "2", "-r", "500", "-c", "20", "-f", "mandatory", "--run-id", run_id)
    with bench_with_metrics(broker_url, *argv) as run:
        text = run.scrape()
    assert run.status == 0, run.err
    scraped = samples_by_name(text)
    wanted = dashboard_metric_names("munggoggo_bench_")
    missing = sorted(name for name in wanted if not scraped.get(name))
    assert not missing, f"dashboard series the bench scrape lacks: {missing}"
    # The dashboard selects runs by run_id: every series it asks for carries one.
    unlabelled = sorted(
        name for name in wanted if any(s.labels.get("run_id") != run_id for s in scraped[name])
    )
    assert not unlabelled, f"bench series without this run's run_id: {unlabelled}"
    variables = json.loads((DASHBOARDS / "bench.json").read_text())["templating"]["list"]
    assert "run_id" in {v["name"] for v in variables}
