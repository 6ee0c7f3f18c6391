"""Gateway metrics: scrape `/metrics` after known traffic and check the series moved by the
right amounts; with several granian workers one scrape shows all of them."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from gateway_tools import WsClient, gateway_process, running_gateway, wait_ready
from mesh_tools import Calc
from prometheus_client.parser import text_string_to_metric_families

from munggoggo.gateway.state import GatewaySettings
from munggoggo.testing import free_port

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

CALL_ROUTE = "/agents/{identity}/call/{method}"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def scrape(http) -> dict:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def test_requests_are_counted_by_route_method_and_status(gateway, calc):
    http = gateway.http
    before = await scrape(http)
    url = f"/agents/{calc.identity}/call/subtract"
    for _ in range(3):
        assert (await http.post(url, json=[5, 3])).status_code == 200
    assert (await http.post(f"/agents/{calc.identity}/call/nope")).status_code == 404
    for _ in range(2):
        assert (await http.get(f"/nowhere/{uuid.uuid4().hex}")).status_code == 404
    assert (await http.get("/healthz")).status_code == 200
    after = await scrape(http)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": CALL_ROUTE, "method": "POST", "status": "200"}
    assert moved("munggoggo_gateway_requests_total", **ok) == 3
    missing = {"route": CALL_ROUTE, "method": "POST", "status": "404"}
    assert moved("munggoggo_gateway_requests_total", **missing) == 1
    # Unrouted paths share one label value: a scanner cannot grow the series without bound.
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert moved("munggoggo_gateway_requests_total", **unmatched) == 2
    health = {"route": "/healthz", "method": "GET", "status": "200"}
    assert moved("munggoggo_gateway_requests_total", **health) == 1
    # The scrape before this one was counted too, once it had been answered.
    scrapes = {"route": "/metrics", "method": "GET", "status": "200"}
    assert moved("munggoggo_gateway_requests_total", **scrapes) == 1

    latency = {"route": CALL_ROUTE, "method": "POST"}
    assert moved("munggoggo_gateway_request_seconds_count", **latency) == 4
    assert moved("munggoggo_gateway_request_seconds_bucket", le="+Inf", **latency) == 4
    assert moved("munggoggo_gateway_request_seconds_sum", **latency) > 0
    assert moved("munggoggo_gateway_rest_calls_total") == 4
    assert value(after, "munggoggo_gateway_in_flight") == 0
    assert value(after, "munggoggo_gateway_max_in_flight") == 1024
    assert total(after, "munggoggo_build_info", version=_version(after)) == 1


def _version(samples) -> str:
    for name, labels in samples:
        if name == "munggoggo_build_info":
            return dict(labels)["version"]
    pytest.fail("no munggoggo_build_info in the scrape")


async def test_in_flight_follows_calls_waiting_for_an_agent(gateway, calc):
    http = gateway.http
    slow = [
        asyncio.ensure_future(http.post(f"/agents/{calc.identity}/call/slow", json=[1.0]))
        for _ in range(3)
    ]
    try:
        async with asyncio.timeout(10):
            while value(await scrape(http), "munggoggo_gateway_in_flight") != 3:
                await asyncio.sleep(0.02)
    finally:
        replies = await asyncio.gather(*slow)
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert value(await scrape(http), "munggoggo_gateway_in_flight") == 0


async def test_jsonrpc_errors_and_overload_are_counted(broker_url, calc):
    settings = GatewaySettings(url=broker_url, call_timeout=3.0, max_in_flight=2)
    async with running_gateway(settings) as gateway:
        http = gateway.http
        c = calc.identity
        batch = [
            {"jsonrpc": "2.0", "method": f"{c}.subtract", "params": [1, 1], "id": 1},
            {"jsonrpc": "2.0", "method": f"{c}.nope", "id": 2},
        ]
        assert len((await http.post("/jsonrpc", json=batch)).json()) == 2
        blockers = [
            asyncio.ensure_future(http.post(f"/agents/{c}/call/slow", json=[0.5])) for _ in range(2)
        ]
        async with asyncio.timeout(10):
            while gateway.app.state.in_flight != 2:
                await asyncio.sleep(0.01)
        refused = await http.post(f"/agents/{c}/call/subtract", json=[1, 1])
        assert refused.status_code == 503
        assert [(await b).status_code for b in blockers] == [200, 200]
        samples = await scrape(http)
    assert value(samples, "munggoggo_gateway_jsonrpc_batches_total") == 1
    assert value(samples, "munggoggo_gateway_jsonrpc_calls_total") == 2
    assert value(samples, "munggoggo_gateway_jsonrpc_errors_total") == 1
    assert value(samples, "munggoggo_gateway_overloaded_total") == 1
    assert value(samples, "munggoggo_gateway_max_in_flight") == 2
    busy = {"route": CALL_ROUTE, "method": "POST", "status": "503"}
    assert value(samples, "munggoggo_gateway_requests_total", **busy) == 1


async def test_websocket_clients_and_frames_out(gateway):
    state = gateway.app.state
    http = gateway.http
    topic = f"metrics.ws.{uuid.uuid4().hex[:8]}"
    async with WsClient(state) as publisher, WsClient(state) as listener:
        assert value(await scrape(http), "munggoggo_gateway_ws_clients") == 2
        await listener.subscribe(topic)
        reply = await publisher.request({"op": "publish", "topic": topic, "body": "hi", "id": 1})
        assert reply["op"] == "published", reply
        assert (await listener.receive_json())["topic"] == topic
        samples = await scrape(http)
    # Mesh messages written to clients (replies to a client's own requests are not counted).
    assert value(samples, "munggoggo_gateway_ws_messages_out_total") == 1
    assert value(samples, "munggoggo_gateway_ws_published_total") == 1
    assert value(samples, "munggoggo_gateway_ws_connected_total") == 2
    assert value(await scrape(http), "munggoggo_gateway_ws_clients") == 0


async def test_one_scrape_shows_every_granian_worker(broker_url, tmp_path):
    port = free_port()
    log = tmp_path / "gateway.log"
    args = ["--port", str(port), "--url", broker_url, "--workers", "2", "--log-level", "info"]
    sent = 40
    async with Calc(f"calc-{uuid.uuid4().hex[:8]}", url=broker_url) as calc:
        url = f"/agents/{calc.identity}/call/subtract"
        async with gateway_process(*args, log=log) as proc:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as h:
                await wait_ready(h, proc, log)
                # Both workers must be up (each announces itself once connected).
                async with asyncio.timeout(30):
                    while log.read_text().count("gateway worker connected") < 2:
                        await asyncio.sleep(0.1)
            # A fresh connection per request: granian spreads connections over workers.
            for _ in range(sent):
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=10
                ) as http:
                    assert (await http.post(url, json=[2, 1])).status_code == 200
            scrapes = []
            for _ in range(6):
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=10
                ) as http:
                    scrapes.append(await scrape(http))
    ok = {"route": CALL_ROUTE, "method": "POST", "status": "200"}
    for samples in scrapes:
        # Whichever worker answered, it reports the calls both workers served...
        assert value(samples, "munggoggo_gateway_requests_total", **ok) == sent
        assert value(samples, "munggoggo_gateway_rest_calls_total") == sent
        # ...and one start time per live worker (prometheus_client labels them by pid).
        starts = [
            labels for (name, labels) in samples if name == "munggoggo_gateway_start_time_seconds"
        ]
        assert len(starts) == 2, starts
        assert value(samples, "munggoggo_gateway_max_in_flight") == 1024
    assert "Traceback" not in log.read_text()
