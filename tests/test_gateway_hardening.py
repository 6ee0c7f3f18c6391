"""The gateway against hostile or broken clients and brokers: browser requests for a host
that is not the gateway's (DNS rebinding), WebSocket buffers bounded in bytes, unsubscribing
while the broker connection is down, and request bodies that trickle in. The ASGI app runs
in process (real RabbitMQ behind it) and as a real granian server (`munggoggo gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import httpx
import pytest
from broker_tools import eventually
from gateway_tools import WsClient, gateway_process, handshake, running_gateway, wait_ready

from munggoggo.agent import TOPIC_EXCHANGE, open_connection
from munggoggo.gateway.hosts import HostPolicy, host_name, normalize_host
from munggoggo.gateway.mesh import Mesh
from munggoggo.gateway.state import GatewaySettings, GatewayState
from munggoggo.testing import FaultProxy, free_port
from munggoggo.url import parse_url

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(90)]

REBOUND = "evil.example:8000"  # a name the attacker controls, resolving to the gateway
WAIT = 10.0


def browser(host: str, origin: str | None = None) -> dict[str, str]:
    """Headers of a browser page at `origin` (default: the host's own) calling `host`."""
    return {"host": host, "origin": origin or f"http://{host}"}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


# -- (a) browser requests must name an allowed host ---------------------------------------


def test_host_names_are_compared_without_port_and_case():
    assert host_name(b"Example.COM:8000") == "example.com"
    assert host_name(b"[::1]:8000") == "[::1]"
    assert host_name(b"localhost.") == "localhost"
    assert normalize_host("::1") == "[::1]"
    for bad in ("http://gw.example", "gw.example:8000", "gw/x", ""):
        with pytest.raises(ValueError, match="allowed host"):
            normalize_host(bad)
    policy = HostPolicy(["GW.example"], ["https://app.example.com:8443", "*"], "0.0.0.0")
    for allowed in (b"gw.example:80", b"localhost:8000", b"127.0.0.1", b"[::1]:1"):
        assert policy.permits(allowed), allowed
    assert policy.permits(b"app.example.com") and policy.permits(b"0.0.0.0:8000")
    assert not policy.permits(REBOUND.encode())
    assert not policy.permits(b"gw.example.evil.example")
    assert HostPolicy(["*"]).permits(REBOUND.encode())


def test_allowed_hosts_come_from_the_environment():
    env = {"MUNGGOGGO_GATEWAY_ALLOWED_HOSTS": "gw.example, api.example"}
    settings = GatewaySettings.from_env(env)
    assert settings.allowed_hosts == ("gw.example", "api.example")
    assert GatewaySettings.from_env(settings.to_env()).allowed_hosts == settings.allowed_hosts


async def test_a_tokenless_gateway_refuses_browser_requests_for_other_hosts(broker_url, calc):
    async with running_gateway(GatewaySettings(url=broker_url)) as gw:
        url = f"/agents/{calc.identity}/call/notify_hello"
        # The rebinding attack: the page and the host are the attacker's name, so Origin
        # equals Host; the call must not reach the agent.
        error = error_of(await gw.http.post(url, json=[1], headers=browser(REBOUND)), 421)
        assert "evil.example:8000" in error["message"]
        assert "--allowed-host" in error["message"]
        # A same-origin read carries no Origin, but browsers mark it with Sec-Fetch-Site.
        headers = {"host": REBOUND, "sec-fetch-site": "same-origin"}
        error_of(await gw.http.get("/agents?wait=0", headers=headers), 421)
        response = await gw.http.post(
            "/jsonrpc",
            json={"jsonrpc": "2.0", "method": f"{calc.identity}.notify_hello", "params": [2]},
            headers=browser(REBOUND),
        )
        assert response.status_code == 421
        assert response.json()["error"]["code"] == -32600
        await asyncio.sleep(0.3)
        assert calc.hellos == [], "a refused request reached the agent"
        # Loopback names pass; so do clients that are no browser, whatever their Host.
        response = await gw.http.post(url, json=[3], headers=browser("localhost:8000"))
        assert response.is_success, response.text
        response = await gw.http.post(url, json=[4], headers=browser("[::1]:8000"))
        assert response.is_success, response.text
        response = await gw.http.post(url, json=[5], headers={"host": REBOUND})
        assert response.is_success, response.text
        # Probes stay open to anything.
        assert (await gw.http.get("/healthz", headers=browser(REBOUND))).status_code == 200
        await eventually(lambda: sorted(calc.hellos) == [3, 4, 5], WAIT)


async def test_listed_hosts_and_the_cors_origins_hosts_are_allowed(broker_url, calc):
    settings = GatewaySettings(
        url=broker_url, allowed_hosts=("gw.example",), cors_origins=("https://app.example.com",)
    )
    async with running_gateway(settings) as gw:
        url = f"/agents/{calc.identity}/call/subtract"
        response = await gw.http.post(url, json=[3, 1], headers=browser("GW.example:8000"))
        assert (response.status_code, response.json()) == (200, 2)
        headers = browser("app.example.com", "https://app.example.com")
        assert (await gw.http.post(url, json=[3, 2], headers=headers)).json() == 1
        headers = browser(REBOUND, "https://app.example.com")
        error_of(await gw.http.post(url, json=[3, 2], headers=headers), 421)


async def test_websocket_handshakes_for_other_hosts_are_refused(broker_url):
    mesh = Mesh(broker_url, identity=f"gateway-test-{uuid.uuid4().hex[:8]}")
    await mesh.start()
    try:
        state = GatewayState(GatewaySettings(url=broker_url), mesh)
        start, body = await handshake(state, browser(REBOUND), http_response=True)
        assert start["status"] == 421
        assert "evil.example:8000" in json.loads(body["body"])["error"]["message"]
        refused = await handshake(state, browser(REBOUND))
        assert refused == [{"type": "websocket.close", "code": 1008}]
        accepted = await handshake(state, browser("127.0.0.1:8000"))
        assert accepted == [{"type": "websocket.accept"}]
    finally:
        await mesh.stop()


async def test_gateway_command_allowed_host_flag(broker_url, tmp_path):
    port = free_port()
    log = tmp_path / "gateway.log"
    args = ["--port", str(port), "--url", broker_url, "--allowed-host", "gw.example"]
    async with (
        gateway_process(*args, log=log) as proc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        await wait_ready(http, proc, log)
        response = await http.get("/agents?wait=0", headers=browser(f"gw.example:{port}"))
        assert response.status_code == 200, response.text
        # The address it listens on is one of its names.
        response = await http.get("/agents?wait=0", headers=browser(f"127.0.0.1:{port}"))
        assert response.status_code == 200, response.text
        response = await http.get("/agents?wait=0", headers=browser(REBOUND))
        error_of(response, 421)
        status = await raw_handshake(port, REBOUND)
        assert status.split()[1] in ("421", "403"), status
        status = await raw_handshake(port, f"gw.example:{port}")
        assert status.split()[1] == "101", status


async def raw_handshake(port: int, host: str) -> str:
    """A browser's WebSocket handshake for `host` on a raw socket; the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: {host}",
            f"Origin: http://{host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), WAIT)).decode("latin-1").strip()
    finally:
        writer.close()


# -- (b) WebSocket buffers are bounded in bytes --------------------------------------------


async def test_a_slow_websocket_client_buffers_at_most_ws_buffer_bytes(broker_url):
    topic = f"hardening.bytes.{uuid.uuid4().hex[:8]}"
    big = "x" * 1000  # each message frame is a little over 1000 bytes
    settings = GatewaySettings(url=broker_url, ws_buffer=1000, ws_buffer_bytes=5000)
    async with running_gateway(settings) as gw:
        state = gw.app.state
        async with WsClient(state) as slow, WsClient(state) as writer:
            assert (await slow.request({"op": "subscribe", "topic": topic}))["op"] == "subscribed"
            slow.reading.clear()  # stops reading: frames pile up in its buffer
            for i in range(20):
                await writer.request({"op": "publish", "topic": topic, "body": [i, big], "id": i})
            await eventually(lambda: state.counters.get("ws_dropped", 0) > 0, WAIT, "drops")
            await asyncio.sleep(0.3)  # all 20 reached the gateway by now
            slow.reading.set()
            frames = []
            while True:
                frame = await slow.receive_json()
                frames.append(frame)
                if frame["op"] == "dropped":
                    break
            messages = [f for f in frames if f["op"] == "message"]
            # The one being written when it stopped reading, plus what fit in 5000 bytes.
            assert 2 <= len(messages) <= 6, len(messages)
            assert [m["body"][0] for m in messages] == list(range(len(messages)))
            assert frames[-1]["count"] == 20 - len(messages)
            assert state.counters["ws_dropped"] == 20 - len(messages)
            text = (await gw.http.get("/metrics")).text
            assert f"munggoggo_gateway_ws_dropped_total {20 - len(messages)}.0" in text
            # A message larger than the whole bound still goes to a client that keeps up.
            huge = "y" * 8000
            await writer.request({"op": "publish", "topic": topic, "body": huge, "id": "h"})
            frame = await slow.receive_json()
            assert frame["op"] == "message" and frame["body"] == huge


# -- (c) unsubscribing while the broker connection is down ---------------------------------


async def topic_is_bound(broker_url: str, topic: str) -> bool:
    """Whether anything is bound to `topic` on the mesh's exchange: a mandatory publish
    comes back (basic.return) when nothing is."""
    conn = await open_connection(parse_url(broker_url), "hardening-probe")
    try:
        ch = await conn.channel()
        returned: list[Any] = []
        ch.on_return = returned.append
        ch.publish(b"probe", TOPIC_EXCHANGE, topic, mandatory=True)
        await ch.wait_confirms(timeout=WAIT)
        # RabbitMQ sends the return before the confirm; memory:// hands it over from the
        # loop right after: let that run.
        for _ in range(3):
            await asyncio.sleep(0)
        return not returned
    finally:
        await conn.close()


async def answer(client: WsClient, request: dict[str, Any]) -> dict[str, Any]:
    """The server's answer to `request`, skipping the mesh messages (the probes) on the way."""
    client.send_json(request)
    while (frame := await client.receive_json())["op"] == "message":
        pass
    return frame


async def test_unsubscribing_while_the_connection_is_down_unbinds_once_it_is_back(broker_url):
    upstream = parse_url(broker_url)
    topic = f"hardening.unbind.{uuid.uuid4().hex[:8]}"
    async with FaultProxy(upstream=(upstream.host, upstream.port)) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        async with running_gateway(GatewaySettings(url=url)) as gw:
            state = gw.app.state
            async with WsClient(state) as client:
                reply = await answer(client, {"op": "subscribe", "topic": topic})
                assert reply["op"] == "subscribed"
                assert await topic_is_bound(broker_url, topic)
                proxy.refuse()  # the mesh cannot reconnect for now
                proxy.cut()
                await eventually(lambda: not state.mesh.connected, WAIT, "connection down")
                reply = await answer(client, {"op": "unsubscribe", "topic": topic, "id": 1})
                assert reply == {"op": "unsubscribed", "topic": topic, "id": 1}
                assert topic in state.mesh.unbinds_due
                await proxy.accept()
                await eventually(lambda: state.mesh.connected, 30, "reconnected")
                await eventually(lambda: not state.mesh.unbinds_due, WAIT, "unbind done")
                # The recovery replayed the binding; the mesh removed it afterwards.
                assert not await topic_is_bound(broker_url, topic)
                # Subscribing again binds again.
                reply = await answer(client, {"op": "subscribe", "topic": topic})
                assert reply["op"] == "subscribed"
                assert await topic_is_bound(broker_url, topic)


async def test_subscribing_again_before_the_connection_is_back_keeps_the_binding(mesh_url):
    mesh = Mesh(mesh_url, identity=f"gateway-test-{uuid.uuid4().hex[:8]}")
    await mesh.start()
    topic = f"hardening.again.{uuid.uuid4().hex[:8]}"
    try:
        got: list[Any] = []
        token = await mesh.subscribe(topic, got.append)
        await mesh.unsubscribe(token)
        assert not mesh.unbinds_due  # connected: unbound at once
        assert not await topic_is_bound(mesh_url, topic)
        await mesh.subscribe(topic, got.append)
        assert await topic_is_bound(mesh_url, topic)
    finally:
        await mesh.stop()


# -- (d) request bodies that trickle in -------------------------------------------------------


async def call_with_stalled_body(app: Any, path: str) -> tuple[int, dict[str, Any], bytes]:
    """POST `path` in process with a body whose second half never arrives."""
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"jsonrpc": "2.0", ', "more_body": True}
        await asyncio.Event().wait()  # the client never sends the rest
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 4000),
    }
    await asyncio.wait_for(app(scope, receive, send), WAIT)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


async def test_a_body_that_does_not_arrive_in_time_gets_408(broker_url, calc):
    settings = GatewaySettings(url=broker_url, body_timeout=0.3)
    async with running_gateway(settings) as gw:
        status, headers, body = await call_with_stalled_body(gw.app, "/jsonrpc")
        assert status == 408 and headers[b"connection"] == b"close"
        error = json.loads(body)["error"]
        assert error["code"] == -32600 and "0.3 s" in error["message"]
        path = f"/agents/{calc.identity}/call/notify_hello"
        status, headers, body = await call_with_stalled_body(gw.app, path)
        assert status == 408
        assert json.loads(body)["error"] == {
            "code": 408,
            "message": "the request body did not arrive within 0.3 s",
        }
        assert calc.hellos == []
        # Bodies that arrive are not affected, and the worker goes on serving.
        response = await gw.http.post(path, json=[7])
        assert response.is_success, response.text
        await eventually(lambda: calc.hellos == [7], WAIT)


async def test_a_trickling_body_is_cut_off_by_the_real_server(broker_url, tmp_path, monkeypatch):
    monkeypatch.setenv("MUNGGOGGO_GATEWAY_BODY_TIMEOUT", "0.5")
    port = free_port()
    log = tmp_path / "gateway.log"
    async with (
        gateway_process("--port", str(port), "--url", broker_url, log=log) as proc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        await wait_ready(http, proc, log)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = (
                f"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            )
            writer.write(head.encode() + b"{")
            await writer.drain()

            async def trickle() -> None:
                with contextlib.suppress(OSError):
                    while True:  # a byte every 0.2 s: 200 bytes would take 40 s
                        await asyncio.sleep(0.2)
                        writer.write(b" ")
                        await writer.drain()

            trickling = asyncio.ensure_future(trickle())
            try:
                status = await asyncio.wait_for(reader.readline(), WAIT)
            finally:
                trickling.cancel()
            assert status.split()[1] == b"408", status
            answer = await asyncio.wait_for(reader.read(4096), WAIT)
            assert b"did not arrive within 0.5 s" in answer
        finally:
            writer.close()
        assert (await http.get("/healthz")).status_code == 200
