"""The agents' contracts through the gateway (gateway/contracts.py): `GET /agents/{identity}`
carries each method's schemas, and `/openapi.json` documents a call path per running agent
and method with them (on a gateway with tokens, for a client with credentials only), while
staying generic (and answering) with no agents, before the worker started, or with the
broker connection down. `GET /asyncapi.json` is tested with
the document builder in tests/test_asyncapi.py.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from gateway_tools import running_gateway
from mesh_tools import uid
from test_asyncapi import Odd, Sensors, deref, resolve

from munggoggo.gateway import contracts, openapi
from munggoggo.gateway.app import create_app
from munggoggo.gateway.state import GatewaySettings

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

GENERIC_CALL = "/agents/{identity}/call/{method}"


@pytest.fixture(autouse=True)
def patient_discovery(monkeypatch):
    """A longer discovery than the gateway's: the shared test broker may be busy."""
    monkeypatch.setattr(contracts, "LIVE_WAIT", 0.5)


async def test_agent_status_has_the_method_schemas(gateway, broker_url):
    async with Sensors(uid("sensors"), url=broker_url) as sensors:
        response = await gateway.http.get(f"/agents/{sensors.identity}")
    assert response.status_code == 200
    status = response.json()
    locate = status["schemas"]["locate"]
    assert locate["params"]["required"] == ["reading"]
    assert set(locate["params"]["properties"]) == {"reading", "scale"}
    assert locate["result"]["required"] == ["x", "y"]
    assert locate["doc"].startswith("Where a reading was taken")
    assert sorted(status["schemas"]) == sorted(status["methods"])
    bodies = {b["name"]: b["body_schema"] for b in status["behaviours"]}
    assert bodies["Readings"]["required"] == ["sensor", "where", "value"]
    assert bodies["Plain"] is None


def live_paths(spec: dict[str, Any], identity: str) -> dict[str, Any]:
    prefix = f"/agents/{identity}/call/"
    return {p[len(prefix) :]: item for p, item in spec["paths"].items() if p.startswith(prefix)}


async def test_openapi_has_a_path_per_running_agent_and_method(gateway, broker_url):
    async with Sensors(uid("sensors"), url=broker_url) as sensors:
        spec = (await gateway.http.get("/openapi.json")).json()
        paths = live_paths(spec, sensors.identity)
        assert {"locate", "count", "describe", "ping"} <= set(paths)
        locate = paths["locate"]["post"]
        assert "live" in locate["tags"]
        body = locate["requestBody"]["content"]["application/json"]["schema"]["anyOf"][0]
        assert body["required"] == ["reading"]
        reading = resolve(spec, body["properties"]["reading"]["$ref"])
        assert reading["required"] == ["sensor", "where", "value"]
        assert resolve(spec, reading["properties"]["where"]["$ref"])["required"] == ["x", "y"]
        result = locate["responses"]["200"]["content"]["application/json"]["schema"]
        assert deref(spec, result)["required"] == ["x", "y"]
        count = paths["count"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert count["anyOf"][0]["properties"]["sensors"]["items"] == {"type": "string"}
        # The path answers what it documents.
        call = await gateway.http.post(
            f"/agents/{sensors.identity}/call/locate",
            json={"reading": {"sensor": "t1", "where": {"x": 1, "y": 2}, "value": 3.5}},
        )
        assert (call.status_code, call.json()) == (200, {"x": 1.0, "y": 2.0})
    # The generic route stays, with its generic body; operation ids stay unique.
    assert GENERIC_CALL in spec["paths"]
    generic = spec["paths"][GENERIC_CALL]["post"]["requestBody"]["content"]["application/json"]
    assert generic["schema"] == {"$ref": "#/components/schemas/Params"}
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert not any("/gateway-" in path for path in spec["paths"])


async def test_openapi_live_false_is_the_generic_description(gateway, broker_url):
    async with Sensors(uid("sensors"), url=broker_url) as sensors:
        generic = (await gateway.http.get("/openapi.json", params={"live": "false"})).json()
        refused = await gateway.http.get("/openapi.json", params={"live": "yes"})
    assert live_paths(generic, sensors.identity) == {}
    assert not any(path.startswith("/agents/") and "{" not in path for path in generic["paths"])
    assert refused.status_code == 400


async def test_openapi_before_the_worker_started_is_generic():
    app = create_app(GatewaySettings(url="amqp://guest:guest@127.0.0.1:1/"))
    transport = httpx.ASGITransport(app=app)  # no lifespan run: no state, no broker
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert GENERIC_CALL in spec["paths"]
    assert "/asyncapi.json" in spec["paths"]
    assert not any(path.startswith("/agents/") and "{" not in path for path in spec["paths"])


async def test_no_live_agents_when_the_broker_connection_is_down(gateway_state, broker_url):
    state = await gateway_state()
    async with Sensors(uid("sensors"), url=broker_url):
        assert await contracts.live_agents(state) != []
        await state.mesh.stop()
        assert await contracts.live_agents(state) == []


async def test_discoveries_are_shared_and_reused(gateway_state, broker_url, monkeypatch):
    state = await gateway_state()
    discoveries = 0
    real_peers = state.mesh.peers

    async def counting_peers(wait: float = 0.3) -> list[dict[str, Any]]:
        nonlocal discoveries
        discoveries += 1
        return await real_peers(wait)

    monkeypatch.setattr(state.mesh, "peers", counting_peers)
    async with Sensors(uid("sensors"), url=broker_url) as sensors:
        found = await asyncio.gather(*(contracts.live_agents(state) for _ in range(5)))
        again = await contracts.live_agents(state)
    assert discoveries == 1
    for agents in [*found, again]:
        assert sensors.identity in {a["identity"] for a in agents}
    assert state.in_flight == 0


async def test_with_tokens_only_a_client_with_credentials_sees_the_agents(broker_url):
    token = "contracts-" + uid("t")
    settings = GatewaySettings(url=broker_url, tokens=(token,))
    async with (
        Sensors(uid("sensors"), url=broker_url) as sensors,
        running_gateway(settings) as gw,
    ):
        anonymous = await gw.http.get("/openapi.json")
        wrong = await gw.http.get("/openapi.json", headers={"x-api-key": "nope"})
        known = await gw.http.get("/openapi.json", headers={"authorization": f"Bearer {token}"})
    assert anonymous.status_code == wrong.status_code == known.status_code == 200
    assert live_paths(anonymous.json(), sensors.identity) == {}
    assert live_paths(wrong.json(), sensors.identity) == {}
    assert "locate" in live_paths(known.json(), sensors.identity)
    assert known.json()["security"] == [{"bearer": []}, {"apiKey": []}]


async def test_an_odd_describe_answer_leaves_the_documents_working(gateway, broker_url):
    async with (
        Odd(uid("odd"), url=broker_url),
        Sensors(uid("sensors"), url=broker_url) as sensors,
    ):
        openapi = await gateway.http.get("/openapi.json")
        asyncapi = await gateway.http.get("/asyncapi.json", params={"wait": "0.5"})
    assert openapi.status_code == asyncapi.status_code == 200
    assert "locate" in live_paths(openapi.json(), sensors.identity)
    assert sensors.identity in {c.get("address") for c in asyncapi.json()["channels"].values()}


async def test_malformed_descriptions_are_skipped_in_the_live_paths():
    agents: list[Any] = [
        {"name": "x"},
        {"identity": "s", "methods": ["m"], "schemas": ["no"]},
        {"identity": "t", "methods": "abc", "schemas": {"m": {"params": 1, "result": "x"}}},
        {"identity": "u", "methods": ["m", 2], "schemas": {"m": "no"}, "behaviours": ["b"]},
    ]
    paths = contracts.live_calls(agents, {})
    assert set(paths) == {"/agents/s/call/m", "/agents/t/call/m", "/agents/u/call/m"}
    body = paths["/agents/t/call/m"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["anyOf"][0] == {}


async def test_a_failing_discovery_is_generic_and_waits_its_turn(
    gateway_state, monkeypatch, caplog
):
    state = await gateway_state()
    discoveries = 0

    async def failing_peers(wait: float = 0.3) -> list[dict[str, Any]]:
        nonlocal discoveries
        discoveries += 1
        raise KeyError("identity")

    monkeypatch.setattr(state.mesh, "peers", failing_peers)
    assert await contracts.live_agents(state) == []
    assert await contracts.live_agents(state) == []
    assert discoveries == 1  # the failure is kept for LIVE_TTL like an answer
    assert state.in_flight == 0
    assert "failed" in caplog.text


async def test_live_operation_ids_are_sanitised_and_unique():
    agents = [
        {"identity": "a_b", "methods": ["c"], "schemas": {}},
        {"identity": "a", "methods": ["b_c"], "schemas": {}},
        {"identity": "ä:x", "methods": ["m/1"], "schemas": {}},
    ]
    spec = contracts.with_live_calls(openapi.spec_for(False, False), agents, {})
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", i) for i in ids)
    live = [
        op["operationId"]
        for item in spec["paths"].values()
        for op in item.values()
        if "live" in op["tags"]
    ]
    assert sorted(live) == ["call___x_m_1", "call_a_b_c", "call_a_b_c_2"]


@pytest.mark.parametrize("path", ["/openapi.json", "/openapi.json?live=false", "/asyncapi.json"])
async def test_the_documents_are_private_to_the_client(gateway, path):
    response = await gateway.http.get(path)
    assert response.status_code == 200
    assert "private" in response.headers["cache-control"]
    vary = {v.strip().lower() for v in ",".join(response.headers.get_list("vary")).split(",")}
    assert {"authorization", "x-api-key"} <= vary


async def test_documents_are_encoded_once_per_discovery(gateway, broker_url, monkeypatch):
    builds = {"openapi": 0, "asyncapi": 0}
    real_openapi, real_asyncapi = contracts.with_live_calls, contracts.asyncapi_document

    def counting_openapi(*args: Any, **kwargs: Any) -> Any:
        builds["openapi"] += 1
        return real_openapi(*args, **kwargs)

    def counting_asyncapi(*args: Any, **kwargs: Any) -> Any:
        builds["asyncapi"] += 1
        return real_asyncapi(*args, **kwargs)

    monkeypatch.setattr(contracts, "with_live_calls", counting_openapi)
    monkeypatch.setattr(contracts, "asyncapi_document", counting_asyncapi)
    async with Sensors(uid("sensors"), url=broker_url) as sensors:
        specs = [await gateway.http.get("/openapi.json") for _ in range(3)]
        documents = [await gateway.http.get("/asyncapi.json") for _ in range(3)]
        fresh = await gateway.http.get("/asyncapi.json", params={"wait": "0.5"})
    assert builds == {"openapi": 1, "asyncapi": 2}  # the explicit `wait` discovers anew
    assert len({r.content for r in specs}) == len({r.content for r in documents}) == 1
    assert "locate" in live_paths(specs[0].json(), sensors.identity)
    # /asyncapi.json without `wait` documents the discovery /openapi.json made.
    shared = {c.get("address") for c in documents[0].json()["channels"].values()}
    assert sensors.identity in shared
    assert sensors.identity in {c.get("address") for c in fresh.json()["channels"].values()}
