"""REST routes of the gateway, their status codes and error bodies; health, metrics, the
OpenAPI description and the docs page; routing. The ASGI app runs in process with its
lifespan, the `Calc` agent too, on the real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from urllib.parse import unquote

import pytest
from gateway_tools import WsClient, lifespan, running_gateway
from mesh_tools import FAILURE_CODE, events_topic

from munggoggo.gateway.app import create_app
from munggoggo.gateway.state import GatewaySettings
from munggoggo.gateway.topics import topic_problem

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(30)]


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


# -- agents ------------------------------------------------------------------------


async def test_list_agents(gateway, calc):
    response = await gateway.http.get("/agents", params={"wait": "0.3"})
    assert response.status_code == 200
    agents = {a["identity"]: a for a in response.json()}
    assert calc.identity in agents
    assert "subtract" in agents[calc.identity]["methods"]
    assert not any(identity.startswith("gateway-") for identity in agents)


@pytest.mark.parametrize("wait", ["soon", "9", "-1", "", "nan"])
async def test_list_agents_bad_wait(gateway, wait):
    error_of(await gateway.http.get("/agents", params={"wait": wait}), 400)


async def test_agent_status(gateway, calc):
    response = await gateway.http.get(f"/agents/{calc.identity}")
    assert response.status_code == 200
    status = response.json()
    assert status["identity"] == calc.identity
    assert status["connected"] is True
    assert [b["name"] for b in status["behaviours"]] == ["Recorder"]


async def test_unknown_agent_is_404(gateway):
    error = error_of(await gateway.http.get(f"/agents/nobody-{uuid.uuid4().hex[:8]}"), 404)
    assert error["code"] == -32001
    error = error_of(await gateway.http.post("/agents/nobody-x/call/ping"), 404)
    assert error["code"] == -32001


async def test_call_by_position_by_name_and_without_params(gateway, calc):
    url = f"/agents/{calc.identity}/call/subtract"
    response = await gateway.http.post(url, json=[42, 23])
    assert response.status_code == 200
    assert response.json() == 19
    response = await gateway.http.post(url, json={"subtrahend": 23, "minuend": 42})
    assert response.json() == 19
    response = await gateway.http.post(f"/agents/{calc.identity}/call/get_data")
    assert response.status_code == 200
    assert response.json() == ["hello", 5]
    response = await gateway.http.post(f"/agents/{calc.identity}/call/echo")
    assert response.status_code == 200
    assert response.json() is None


async def test_call_errors_map_to_statuses(gateway, calc):
    base = f"/agents/{calc.identity}/call"
    error = error_of(await gateway.http.post(f"{base}/nope", json=[]), 404)
    assert error["code"] == -32601
    error = error_of(await gateway.http.post(f"{base}/_private", json=[]), 404)
    assert error["code"] == -32601
    error = error_of(await gateway.http.post(f"{base}/subtract", json=["a", 1]), 422)
    assert error["code"] == -32602
    error = error_of(await gateway.http.post(f"{base}/subtract", json=5), 422)
    assert error["code"] == -32602
    error = error_of(await gateway.http.post(f"{base}/fail"), 502)
    assert error == {"code": FAILURE_CODE, "message": "calc refuses", "data": {"why": "asked to"}}
    error = error_of(await gateway.http.post(f"{base}/crash"), 502)
    assert error["code"] == -32000


async def test_call_body_errors(gateway, calc):
    url = f"/agents/{calc.identity}/call/echo"
    response = await gateway.http.post(
        url, content=b"[1", headers={"content-type": "application/json"}
    )
    error_of(response, 400)
    response = await gateway.http.post(url, content=b"[1]", headers={"content-type": "text/plain"})
    error_of(response, 415)
    deep = b"[" * 40 + b"1" + b"]" * 40
    error = error_of(await gateway.http.post(url, content=deep, headers=JSON), 400)
    assert "nested" in error["message"]


JSON = {"content-type": "application/json"}


async def test_call_timeout_is_504(broker_url, calc):
    async with running_gateway(GatewaySettings(url=broker_url, call_timeout=0.2)) as gw:
        response = await gw.http.post(f"/agents/{calc.identity}/call/slow", json=[2.0])
        assert error_of(response, 504)["code"] == -32002
        assert gw.app.state.in_flight == 0


async def test_overload_is_503_with_retry_after(broker_url, calc):
    async with running_gateway(GatewaySettings(url=broker_url, max_in_flight=1)) as gw:
        url = f"/agents/{calc.identity}/call/slow"
        slow = asyncio.create_task(gw.http.post(url, json=[1.0]))
        while gw.app.state.in_flight != 1:
            await asyncio.sleep(0.01)
        response = await gw.http.post(f"/agents/{calc.identity}/call/get_data")
        error = error_of(response, 503)
        assert error["code"] == -32000
        assert response.headers["retry-after"] == "1"
        assert (await slow).json() == 1.0
        assert (await gw.http.post(f"/agents/{calc.identity}/call/get_data")).status_code == 200


async def test_body_too_large_is_413(broker_url, calc):
    async with running_gateway(GatewaySettings(url=broker_url, max_body_bytes=1000)) as gw:
        url = f"/agents/{calc.identity}/call/echo"
        error = error_of(await gw.http.post(url, json=["x" * 2000]), 413)
        assert error["code"] == 413
        assert (await gw.http.post(url, json=["x" * 100])).json() == "x" * 100


# -- behaviours ----------------------------------------------------------------------


async def test_stop_and_start_a_behaviour(gateway, calc):
    base = f"/agents/{calc.identity}/behaviours/Recorder"
    response = await gateway.http.post(f"{base}/stop")
    assert response.status_code == 200
    assert response.json()["name"] == "Recorder"
    assert response.json()["state"] != "running"
    assert not calc.behaviour("Recorder").is_running
    response = await gateway.http.post(f"{base}/start")
    assert response.status_code == 200
    assert response.json()["state"] == "running"
    assert calc.behaviour("Recorder").is_running


async def test_unknown_behaviour_is_404(gateway, calc):
    response = await gateway.http.post(f"/agents/{calc.identity}/behaviours/Nope/start")
    assert error_of(response, 404)["code"] == -32004


async def test_behaviour_action_must_be_start_or_stop(gateway, calc):
    response = await gateway.http.post(f"/agents/{calc.identity}/behaviours/Recorder/pause")
    error_of(response, 404)


# -- topics ------------------------------------------------------------------------


async def test_publish_reaches_a_subscribed_behaviour(gateway, calc):
    topic = events_topic(calc.identity)
    response = await gateway.http.post(f"/topics/{topic}", json={"x": 1})
    assert response.status_code == 202
    assert response.json() == {"published": True, "routing_key": topic}
    async with asyncio.timeout(10):
        while not calc.received:
            await asyncio.sleep(0.02)
    assert calc.received == [(topic, {"x": 1})]


async def test_publish_needs_a_body(gateway, calc):
    # Text bodies (text/plain) are tests/test_gateway_operations.py's.
    topic = f"/topics/{events_topic(calc.identity)}"
    error_of(await gateway.http.post(topic), 400)
    error_of(await gateway.http.post(topic, content=b"{", headers=JSON), 400)
    error_of(await gateway.http.post("/topics/" + "k" * 300, json=1), 400)


@pytest.mark.parametrize("escaped", ["%23", "a.%2A", "a.%23.b", "sensors.%2A.temp"])
async def test_publish_refuses_wildcards_by_the_websocket_rule(gateway, escaped):
    """`*` and `#` have no meaning in a published routing key: REST refuses them as the
    WebSocket `publish` does, with the same words."""
    topic = unquote(escaped)
    response = await gateway.http.post(f"/topics/{escaped}", json={"x": 1})
    assert error_of(response, 400)["message"] == topic_problem(topic)
    async with WsClient(gateway.app.state) as ws:
        reply = await ws.request({"op": "publish", "topic": topic, "body": 1})
    assert reply == {"op": "error", "error": topic_problem(topic)}
    assert gateway.app.state.counters.get("published", 0) == 0


# -- HEAD ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/readyz", "/openapi.json", "/docs", "/", "/static/dashboard.js", "/ws"],
)
async def test_head_is_answered_wherever_get_is(gateway, path):
    got = await gateway.http.get(path)
    head = await gateway.http.head(path)
    assert head.status_code == got.status_code != 405
    assert head.content == b""
    for name in ("content-type", "content-length"):
        assert head.headers.get(name) == got.headers.get(name), name


async def test_head_of_routes_with_changing_answers(gateway, calc):
    for path in ("/metrics", "/agents?wait=0", f"/agents/{calc.identity}"):
        head = await gateway.http.head(path)
        assert head.status_code == 200, path
        assert head.content == b"" and int(head.headers["content-length"]) > 0, path
        assert (
            head.headers["content-type"] == (await gateway.http.get(path)).headers["content-type"]
        )
    response = await gateway.http.head("/jsonrpc")  # POST only: still not allowed
    assert response.status_code == 405 and response.headers["allow"] == "POST"


# -- health, readiness, metrics ----------------------------------------------------


async def test_healthz_and_readyz(gateway):
    response = await gateway.http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})
    response = await gateway.http.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})
    await gateway.app.state.mesh.stop()  # as if the broker connection were gone
    response = await gateway.http.get("/readyz")
    assert response.status_code == 503
    assert (await gateway.http.get("/healthz")).status_code == 200


def test_publish_settings_come_from_the_environment_and_must_be_finite():
    env = {
        "MUNGGOGGO_GATEWAY_PUBLISH_TIMEOUT": "0.5",
        "MUNGGOGGO_GATEWAY_PUBLISH_BUFFER": "10",
        "MUNGGOGGO_GATEWAY_PUBLISH_BUFFER_BYTES": "4096",
    }
    settings = GatewaySettings.from_env(env)
    assert (settings.publish_timeout, settings.publish_buffer) == (0.5, 10)
    assert settings.publish_buffer_bytes == 4096
    assert GatewaySettings.from_env(settings.to_env()) == settings
    for value in ("nan", "inf", "-inf"):
        with pytest.raises(ValueError, match="MUNGGOGGO_GATEWAY_PUBLISH_TIMEOUT"):
            GatewaySettings.from_env({"MUNGGOGGO_GATEWAY_PUBLISH_TIMEOUT": value})


async def test_without_lifespan_only_health_answers():
    import httpx

    app = create_app(GatewaySettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503
        error_of(await http.post("/agents/x/call/y"), 503)


async def test_startup_fails_cleanly_without_a_broker():
    app = create_app(GatewaySettings(url="amqp://guest:guest@127.0.0.1:1/"))
    with pytest.raises(RuntimeError, match="startup failed"):
        async with lifespan(app):
            pass
    assert app.state is None


async def test_unexpected_failure_is_a_short_500_and_the_worker_goes_on(gateway, calc):
    mesh = gateway.app.state.mesh

    async def broken_call(*args, **kwargs):
        raise RuntimeError("boom")

    mesh.call = broken_call
    try:
        response = await gateway.http.post(f"/agents/{calc.identity}/call/get_data")
    finally:
        del mesh.call
    error = error_of(response, 500)
    assert "boom" not in error["message"]
    assert "Traceback" not in response.text
    assert gateway.app.state.in_flight == 0
    assert (await gateway.http.post(f"/agents/{calc.identity}/call/get_data")).status_code == 200


# -- routing -------------------------------------------------------------------------


async def test_unknown_route_and_wrong_method(gateway):
    assert error_of(await gateway.http.get("/nowhere"), 404)["code"] == 404
    response = await gateway.http.delete("/agents")
    error_of(response, 405)
    assert response.headers["allow"] == "GET, HEAD"  # HEAD is served wherever GET is
    response = await gateway.http.get("/agents/x/call/y")
    error_of(response, 405)
    assert response.headers["allow"] == "POST"


def test_escaped_slash_stays_in_its_segment():
    app = create_app(GatewaySettings())
    scope = {"path": "/agents/a/b", "raw_path": b"/agents/a%2Fb"}
    route, params = app.router.resolve("GET", scope)
    assert (route.template, params) == ("/agents/{identity}", ("a/b",))
    scope = {"path": "/topics/a/b.c", "raw_path": b"/topics/a/b.c"}
    route, params = app.router.resolve("POST", scope)
    assert (route.template, params) == ("/topics/{routing_key...}", ("a/b.c",))


async def test_missing_optional_module_answers_404():
    endpoint = create_app(GatewaySettings()).optional("no_such_module", "endpoint")
    sent = []

    async def send(message):
        sent.append(message)

    await endpoint({"type": "http", "path": "/"}, None, send, None)
    assert sent[0]["status"] == 404

    async def receive():
        return {"type": "websocket.connect"}

    sent.clear()
    scope = {"type": "websocket", "path": "/ws", "extensions": {"websocket.http.response": {}}}
    await endpoint(scope, receive, send, None)
    assert sent[0] == {
        "type": "websocket.http.response.start",
        "status": 404,
        "headers": [(b"content-type", b"application/json")],
    }


# -- OpenAPI and docs ------------------------------------------------------------------


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


async def test_openapi_lists_every_route(gateway):
    # The routes alone: the running agents' call paths (`live`) are in
    # tests/test_gateway_contracts.py.
    response = await gateway.http.get("/openapi.json", params={"live": "false"})
    assert response.status_code == 200
    spec = json.loads(response.content)
    assert spec["openapi"] == "3.1.0"
    routes = {(path, method.lower()) for path, method in gateway.app.routes()}
    routes.add(("/ws", "get"))
    listed = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == listed
    for ref in refs(spec):
        name = ref.removeprefix("#/components/schemas/")
        assert name in spec["components"]["schemas"], ref
    for path, item in spec["paths"].items():
        for operation in item.values():
            assert operation["responses"], path
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path


async def test_docs_page_is_local(gateway):
    response = await gateway.http.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "openapi.json" in html
    assert "<form" in html or 'el("form")' in html
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.I)
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html, re.I)
