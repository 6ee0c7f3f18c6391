"""Only `@expose` methods can be called: through the gateway's REST route, POST /jsonrpc and
the WebSocket, and directly over AMQP (a caller that bypasses the gateway). Private, dunder,
undecorated and inherited attributes are refused with -32601 and none of them runs.

The refusal happens in the agent (`Agent._exposed`, built by `munggoggo.rpc.exposed_methods`
from the class: a dict lookup, never `getattr` on a client-chosen name), so every way in
gets the same answer.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from gateway_tools import WsClient

from munggoggo import Agent, RpcError, expose

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]


class Base(Agent):
    @expose
    def visible(self) -> str:
        return "visible"

    @expose
    def withdrawn(self) -> str:
        self.touched.append("withdrawn")
        return "exposed in the base class only"


class Vault(Base):
    """Public, private and dunder attributes next to one exposed method; every one of them
    records a call in `touched` if it ever runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.touched: list[str] = []
        self.marker = "original"

    def _private(self) -> str:
        self.touched.append("_private")
        return "secret"

    def __secret__(self) -> str:
        self.touched.append("__secret__")
        return "secret"

    def helper(self) -> str:
        self.touched.append("helper")
        return "not exposed"

    def withdrawn(self) -> str:  # overrides an exposed method without @expose
        self.touched.append("withdrawn")
        return "no longer callable"


REFUSED = [
    "_private",
    "__secret__",
    "__init__",
    "__class__",
    "__dict__",
    "__getattribute__",
    "__reduce__",
    "_serve_rpc",
    "helper",
    "withdrawn",
    "marker",
    # inherited from Agent, not exposed
    "start",
    "stop",
    "send",
    "publish",
    "broadcast",
    "call",
    "setup",
    "add_behaviour",
]


@pytest.fixture
async def vault(broker_url):
    async with Vault(f"vault-{uuid.uuid4().hex[:8]}", url=broker_url) as agent:
        yield agent
        assert_untouched(agent)


def assert_untouched(agent: Vault) -> None:
    assert agent.touched == []
    assert agent.marker == "original"
    assert agent.state == "running"  # `stop` was refused, not run


async def test_the_agent_lists_only_exposed_methods(vault):
    methods = set(vault.describe()["methods"])
    assert "visible" in methods
    assert not methods & set(REFUSED)


async def test_refused_over_rest(gateway, vault):
    for name in [*REFUSED, "visible.__globals__"]:
        response = await gateway.http.post(f"/agents/{vault.identity}/call/{name}", json=[])
        assert response.status_code == 404, name
        error = response.json()["error"]
        assert error["code"] == -32601, name
        assert error["message"] == f"Method not found: {name}"
    response = await gateway.http.post(f"/agents/{vault.identity}/call/visible")
    assert response.json() == "visible"


async def test_refused_over_jsonrpc(gateway, vault):
    batch = [
        {"jsonrpc": "2.0", "method": f"{vault.identity}.{name}", "params": [], "id": i}
        for i, name in enumerate(REFUSED)
    ]
    replies = (await gateway.rpc(batch)).json()
    assert len(replies) == len(REFUSED)
    for reply in replies:
        name = REFUSED[reply["id"]]
        assert reply["error"]["code"] == -32601, name
        assert reply["error"]["message"] == f"Method not found: {name}"
    # A dotted attribute path names another agent: refused before any call.
    reply = (
        await gateway.rpc(
            {"jsonrpc": "2.0", "method": f"{vault.identity}.visible.__globals__", "id": 1}
        )
    ).json()
    assert reply["error"]["code"] == -32001
    # Notifications run nothing either (their errors are not answered).
    notes = [{"jsonrpc": "2.0", "method": f"{vault.identity}.{name}"} for name in REFUSED]
    assert (await gateway.rpc(notes)).status_code == 204
    reply = await gateway.rpc({"jsonrpc": "2.0", "method": f"{vault.identity}.visible", "id": 2})
    assert reply.json()["result"] == "visible"


async def test_refused_over_the_websocket(gateway, vault):
    async with WsClient(gateway.app.state) as ws:
        for name in REFUSED:
            request = {"jsonrpc": "2.0", "method": f"{vault.identity}.{name}", "id": name}
            reply = await ws.request(request)
            assert reply["id"] == name
            assert reply["error"]["code"] == -32601, name
        reply = await ws.request({"jsonrpc": "2.0", "method": f"{vault.identity}.visible", "id": 0})
        assert reply["result"] == "visible"


async def test_refused_by_the_agent_for_a_direct_amqp_caller(broker_url, vault):
    """Without the gateway: a plain client agent sends JSON-RPC to the vault's queue."""
    async with Agent(f"caller-{uuid.uuid4().hex[:8]}", url=broker_url) as caller:
        for name in REFUSED:
            with pytest.raises(RpcError) as exc:
                await caller.call(vault.identity, name, timeout=5)
            assert exc.value.code == -32601, name
            assert name in exc.value.message
        assert await caller.call(vault.identity, "visible", timeout=5) == "visible"


def test_private_and_dunder_methods_cannot_be_exposed():
    for name in ("_hidden", "__call__"):

        def method(self: Any) -> None:
            pass

        method.__name__ = name
        with pytest.raises(ValueError, match="private and dunder methods stay private"):
            expose(method)
