"""Agents the gateway tests call (in-process, or `munggoggo run gateway_agents:Calc`), and
`running_gateway()`: the ASGI app with its lifespan run, behind an httpx client.

`Calc` carries the methods of the examples in section 7 of the JSON-RPC 2.0 specification
(subtract, sum, update, notify_hello, get_data) plus what the limits tests need: a slow
method, one that fails with its own RpcError, one that raises, and a behaviour that records
what it receives on topic `<identity>.events` (and can be started and stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from munggoggo import Agent, Behaviour, RpcError, expose
from munggoggo.gateway.app import GatewayApp, create_app
from munggoggo.gateway.state import GatewaySettings

FAILURE_CODE = -32050


def events_topic(identity: str) -> str:
    return f"{identity}.events"


class Calc(Agent):
    class Recorder(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is not None:
                self.agent.received.append((msg.routing_key, msg.decode()))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[list[Any]] = []
        self.hellos: list[Any] = []
        self.received: list[tuple[str, Any]] = []

    async def setup(self) -> None:
        await self.add_behaviour(self.Recorder(self, binding_keys=[events_topic(self.identity)]))

    @expose
    def subtract(self, minuend: int, subtrahend: int) -> int:
        return minuend - subtrahend

    @expose
    def sum(self, a: int = 0, b: int = 0, c: int = 0, d: int = 0, e: int = 0) -> int:
        return a + b + c + d + e

    @expose
    def update(self, a: int, b: int, c: int, d: int, e: int) -> None:
        self.updates.append([a, b, c, d, e])

    @expose
    def notify_hello(self, value: int) -> None:
        self.hellos.append(value)

    @expose
    def get_data(self) -> list[Any]:
        return ["hello", 5]

    @expose
    def echo(self, value: Any = None) -> Any:
        return value

    @expose
    def non_finite(self, kind: str = "inf") -> Any:
        """A result JSON cannot carry: inf, -inf or NaN (alone or nested)."""
        values = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}
        if kind in values:
            return values[kind]
        return {"nested": [1.0, {"deep": values[kind.removeprefix("nested-")]}]}

    @expose
    async def slow(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @expose
    def fail(self) -> None:
        raise RpcError(FAILURE_CODE, "calc refuses", {"why": "asked to"})

    @expose
    def crash(self) -> None:
        raise ZeroDivisionError("division by zero")


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
