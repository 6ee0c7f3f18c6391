"""What the gateway tests share: the gateway in process (`running_gateway()`: the ASGI app
with its lifespan run, behind an httpx client), `munggoggo gateway` as a real server in a
subprocess (`gateway_process()`, `wait_ready()`), and `WsClient`, a WebSocket client joined
to the app's /ws endpoint in memory (`handshake()` for the refused ones).

The agent the gateway tests call is mesh_tools.Calc; the fixtures `calc`, `gateway` and
`gateway_state` (tests/conftest.py) are built from these.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from munggoggo.gateway.app import GatewayApp, create_app
from munggoggo.gateway.state import GatewaySettings, GatewayState
from munggoggo.gateway.ws import websocket_endpoint

TESTS_DIR = Path(__file__).resolve().parent
WAIT = 10.0  # upper bound for anything the gateway must answer or deliver soon

# -- the gateway in process --------------------------------------------------------


@dataclass
class Gateway:
    app: GatewayApp
    http: Any  # httpx.AsyncClient on the app

    async def rpc(self, payload: Any, **kwargs: Any) -> Any:
        """POST a JSON-RPC payload; the httpx response."""
        return await self.http.post("/jsonrpc", json=payload, **kwargs)


@contextlib.asynccontextmanager
async def lifespan(app: GatewayApp) -> AsyncIterator[None]:
    """Run the app's ASGI lifespan around the block, as granian does."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        await task
        raise RuntimeError(f"gateway startup failed: {started.get('message')}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        stopped = await outbox.get()
        await task
        assert stopped["type"] == "lifespan.shutdown.complete", stopped


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    import httpx

    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Gateway(app, http)


# -- `munggoggo gateway` in a subprocess -----------------------------------------------


@contextlib.asynccontextmanager
async def gateway_process(*args: str, log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`munggoggo gateway ARGS` in a subprocess; always terminated (then killed) at the end."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("MUNGGOGGO_GATEWAY_URL", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "munggoggo", "gateway", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=TESTS_DIR,
            env=env,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    await asyncio.to_thread(proc.wait, 15)


async def wait_ready(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with asyncio.timeout(30):
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


# -- a WebSocket client in memory -------------------------------------------------------


class WsClient:
    """A websocket client joined to `websocket_endpoint` in memory."""

    def __init__(self, state: GatewayState, headers: list[tuple[bytes, bytes]] | None = None):
        self.state = state
        self.scope = {
            "type": "websocket",
            "path": "/ws",
            "headers": headers or [],
            "subprotocols": [],
        }
        self._to_server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # what the server sent
        self.reading = asyncio.Event()  # cleared: the server's writes block (a slow client)
        self.reading.set()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return await self._to_server.get()

    async def _send(self, message: dict[str, Any]) -> None:
        await self.reading.wait()
        self.frames.put_nowait(message)

    async def connect(self) -> WsClient:
        self.task = asyncio.get_running_loop().create_task(
            websocket_endpoint(self.scope, self._receive, self._send, self.state)
        )
        self._to_server.put_nowait({"type": "websocket.connect"})
        first = await asyncio.wait_for(self.frames.get(), WAIT)
        assert first == {"type": "websocket.accept"}
        return self

    async def disconnect(self) -> None:
        self.reading.set()
        self._to_server.put_nowait({"type": "websocket.disconnect", "code": 1000})
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT)

    async def __aenter__(self) -> WsClient:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        if self.task is not None and not self.task.done():
            await self.disconnect()

    def send_text(self, text: str) -> None:
        self._to_server.put_nowait({"type": "websocket.receive", "text": text})

    def send_json(self, value: Any) -> None:
        self.send_text(json.dumps(value))

    async def receive_json(self, timeout: float = WAIT) -> Any:
        message = await asyncio.wait_for(self.frames.get(), timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def request(self, value: Any) -> Any:
        self.send_json(value)
        return await self.receive_json()

    async def subscribe(self, topic: str) -> None:
        assert await self.request({"op": "subscribe", "topic": topic}) == {
            "op": "subscribed",
            "topic": topic,
        }

    async def nothing_pending(self) -> bool:
        """True when the server has sent nothing more (after a round trip through it)."""
        probe = {"op": "unsubscribe", "topic": f"probe.{uuid.uuid4().hex}"}
        reply = await self.request(probe)
        return reply["op"] == "error" and probe["topic"] in reply["error"]


async def handshake(
    state: GatewayState,
    headers: dict[str, str] | None = None,
    query: str = "",
    http_response: bool = False,
) -> list[dict[str, Any]]:
    """The server's first messages for a handshake: [accept] or the refusal."""
    client = WsClient(state, headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()])
    client.scope["query_string"] = query.encode()
    client.scope["client"] = ("127.0.0.1", 5000)
    if http_response:
        client.scope["extensions"] = {"websocket.http.response": {}}
    client.task = asyncio.get_running_loop().create_task(
        websocket_endpoint(client.scope, client._receive, client._send, state)
    )
    client._to_server.put_nowait({"type": "websocket.connect"})
    first = await asyncio.wait_for(client.frames.get(), WAIT)
    if first["type"] == "websocket.accept":
        await client.disconnect()
        return [first]
    messages = [first]
    if first["type"] == "websocket.http.response.start":
        messages.append(await asyncio.wait_for(client.frames.get(), WAIT))
    await asyncio.wait_for(client.task, WAIT)
    return messages
