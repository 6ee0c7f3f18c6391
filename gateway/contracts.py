"""The mesh's contracts over HTTP: `GET /asyncapi.json` and the live part of /openapi.json.

`GET /asyncapi.json` answers `munggoggo.asyncapi.asyncapi_document` of the running agents:
those of the discovery /openapi.json uses (below), or with `?wait=` seconds, of a
discovery of its own (as `GET /agents` does).

`/openapi.json` documents `POST /agents/{identity}/call/{method}` generically (gateway/
openapi.py); `live_calls` adds a concrete path per running agent and exposed method,
`/agents/<identity>/call/<method>`, with that method's params schema as the request body and
its result schema as the 200 answer. The agents' descriptions come from a discovery
(`LIVE_WAIT` seconds) kept for `LIVE_TTL` seconds per worker, and one discovery at a time
serves every request that waits for it, so a busy docs page costs the mesh one broadcast
every few seconds; each document is encoded once per discovery and guard setting
(`live_body`). Not connected, overloaded, or no agent answering: nothing live is added,
and the generic description stays; `?live=false` asks for that one. /openapi.json is open
on a gateway with tokens, so there only a request with valid credentials gets the agents
(`may_see_agents`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from munggoggo.amqp.errors import AMQPError
from munggoggo.asyncapi import asyncapi_document
from munggoggo.rpc_schemas import DefsIndex, hoist_defs

from . import rest
from .auth import Unauthorized
from .http import JSON, Headers, HTTPError, Request, Response, encode_json
from .limits import release, try_acquire

if TYPE_CHECKING:
    from .mesh import Mesh
    from .types import GatewayState

__all__ = [
    "LIVE_TTL",
    "LIVE_WAIT",
    "PER_CLIENT",
    "asyncapi_endpoint",
    "live_agents",
    "live_body",
    "live_calls",
    "may_see_agents",
    "wants_live",
    "with_live_calls",
]

LIVE_WAIT = 0.25  # seconds a discovery for /openapi.json collects answers
LIVE_TTL = 5.0  # seconds its answer is reused
_SCHEMAS = "#/components/schemas/"

log = logging.getLogger("munggoggo.gateway.contracts")

# Both documents depend on who asks (the agents are for clients with credentials), so no
# shared cache may keep one for everybody, and a browser asks again each time.
PER_CLIENT: Headers = [
    (b"cache-control", b"private, no-cache"),
    (b"vary", b"Authorization, X-API-Key"),
]


async def asyncapi_endpoint(request: Request, state: GatewayState) -> Response:
    """`GET /asyncapi.json`: the AsyncAPI 3.0 document of the running agents.

    Args:
        request: the request (`?wait=` seconds to collect answers, 0 to 5; without it,
            the discovery `live_agents` shares with /openapi.json).
        state: the worker's state.

    Returns:
        The document.

    Raises:
        HTTPError: 400 for a bad `wait`, 503 when every call slot is taken.
    """
    raw = request.query().get("wait")

    def build(agents: list[dict[str, Any]]) -> bytes:
        return encode_json(asyncapi_document(agents, server_url=state.settings.url))

    if raw is None:  # the discovery /openapi.json shares, and its document
        body = await live_body(state, "asyncapi", build)
        return Response(200, body, JSON, PER_CLIENT)
    return Response(200, build(await rest.discover(state, raw)), JSON, PER_CLIENT)


class _Discovery:
    """The last discovery of one worker's mesh, the one under way, and the documents
    encoded from the last one (`bodies`, emptied whenever `agents` is replaced).
    """

    def __init__(self) -> None:
        self.agents: list[dict[str, Any]] = []
        self.at = -LIVE_TTL
        self.running: asyncio.Future[list[dict[str, Any]]] | None = None
        self.bodies: dict[Hashable, bytes] = {}

    def found(self, agents: list[dict[str, Any]]) -> None:
        self.agents = agents
        self.bodies = {}


_discoveries: weakref.WeakKeyDictionary[Mesh, _Discovery] = weakref.WeakKeyDictionary()


async def live_agents(state: GatewayState | None) -> list[dict[str, Any]]:
    """The running agents' descriptions, from a recent discovery.

    Args:
        state: the worker's state (None before it started).

    Returns:
        Each agent's `describe()`; empty when the worker is not connected, every call slot
        is taken, or the discovery fails.
    """
    if state is None or not state.mesh.connected:
        return []
    found = _discoveries.get(state.mesh)
    if found is None:
        found = _discoveries[state.mesh] = _Discovery()
    if time.monotonic() - found.at < LIVE_TTL:
        return found.agents
    if found.running is not None:
        return await asyncio.shield(found.running)
    if not try_acquire(state):
        return found.agents  # what is known, however old
    found.running = asyncio.get_running_loop().create_future()
    try:
        found.found(await state.mesh.peers(LIVE_WAIT))
    except AMQPError:  # the connection went down meanwhile: nothing live this time
        found.found([])
    except Exception:
        # Whatever broke, /openapi.json still answers (the generic description), and the
        # next discovery waits its turn like after a good one.
        log.exception("discovering the agents for /openapi.json failed")
        found.found([])
    finally:
        found.at = time.monotonic()
        release(state)
        found.running.set_result(found.agents)
        found.running = None
    return found.agents


async def live_body(
    state: GatewayState | None, key: Hashable, build: Callable[[list[dict[str, Any]]], bytes]
) -> bytes:
    """A document of the running agents, encoded once per discovery (`live_agents`).

    Args:
        state: the worker's state (None before it started).
        key: what else the document depends on (which document, the guard's settings).
        build: encodes the document of a list of agents (called at most once per
            discovery and key).

    Returns:
        The encoded document.
    """
    agents = await live_agents(state)
    found = _discoveries.get(state.mesh) if state is not None else None
    if found is None or found.agents is not agents:  # not connected: nothing to keep
        return build(agents)
    body = found.bodies.get(key)
    if body is None:
        body = found.bodies[key] = build(agents)
    return body


def wants_live(request: Request) -> bool:
    """Whether a request for /openapi.json wants the live paths (`?live=`, default true).

    Args:
        request: the request.

    Returns:
        False for `live=false` or `live=0`.

    Raises:
        HTTPError: 400 for another value.
    """
    raw = request.query().get("live", "true")
    if raw not in ("true", "false", "1", "0"):
        raise HTTPError(400, f"live must be true, false, 1 or 0, got {raw!r}")
    return raw in ("true", "1")


def may_see_agents(request: Request, guard: Any) -> bool:
    """Whether a request may see the running agents in /openapi.json.

    /openapi.json is open, the agents are not: on a gateway with tokens only a request
    with valid credentials gets their paths (the others the generic description).

    Args:
        request: the request.
        guard: the worker's guard (gateway/guard.py), or None before it started.

    Returns:
        True without tokens, or with credentials the tokens accept.
    """
    if guard is None or guard.tokens is None:
        return True
    try:
        guard.tokens.check(request.header(b"authorization"), request.header(b"x-api-key"))
    except Unauthorized:
        return False
    return True


def with_live_calls(
    spec: dict[str, Any], agents: list[dict[str, Any]], guarded: dict[str, Any]
) -> dict[str, Any]:
    """The OpenAPI description with a call path per running agent and method.

    Args:
        spec: the generic description (not modified).
        agents: the running agents' `describe()` answers.
        guarded: the answers the guard may give before the route runs (status ->
            response), added to each path.

    Returns:
        A new description with their paths (`live_calls`) and the definitions their
        schemas refer to in `components.schemas`.
    """
    schemas = dict(spec["components"]["schemas"])
    taken = {
        op["operationId"]
        for item in spec["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    live = live_calls(agents, schemas, taken)
    for item in live.values():
        responses = item["post"]["responses"]
        for status, response in guarded.items():
            responses.setdefault(status, response)
    return {
        **spec,
        "paths": {**spec["paths"], **live},
        "components": {**spec["components"], "schemas": schemas},
    }


def live_calls(
    agents: list[dict[str, Any]], schemas: dict[str, Any], taken: set[str] | None = None
) -> dict[str, dict[str, Any]]:
    """OpenAPI path items for each agent's exposed methods.

    Each operation's id is `call_<identity>_<method>` with every character outside
    `[A-Za-z0-9_]` replaced by `_`, and a numbered suffix when that id is taken (agent
    `a_b`'s method `c` and agent `a`'s method `b_c`).

    Args:
        agents: the agents' `describe()` answers.
        schemas: the description's `components.schemas`, which receives the definitions
            the methods' schemas refer to (filled in place).
        taken: the operation ids the description already has (the new ones are added).

    Returns:
        Path (`/agents/<identity>/call/<method>`, each segment percent-encoded) -> path item
        with the `post` operation.
    """
    paths: dict[str, dict[str, Any]] = {}
    taken = set() if taken is None else taken
    index = DefsIndex()
    # What an agent answers is not trusted to be well formed: what is not is skipped.
    listed = [a for a in agents if isinstance(a, dict) and isinstance(a.get("identity"), str)]
    for agent in sorted(listed, key=lambda a: str(a["identity"])):
        identity = agent["identity"]
        if not identity:
            continue
        contracts = agent.get("schemas")
        if not isinstance(contracts, dict):
            contracts = {}
        methods = agent.get("methods")
        if not isinstance(methods, list):
            methods = []
        for method in [m for m in methods if isinstance(m, str)] or sorted(contracts):
            contract = contracts.get(method)
            if not isinstance(contract, dict):
                contract = {}
            path = f"/agents/{quote(identity, safe='')}/call/{quote(method, safe='')}"
            operation = _call_operation(identity, method, contract, schemas, index)
            operation["operationId"] = _unique_id(f"call_{identity}_{method}", taken)
            paths[path] = {"post": operation}
    return paths


def _unique_id(text: str, taken: set[str]) -> str:
    """An operation id code generators take (ASCII letters, digits, `_`), not yet taken."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", text)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _schema(schema: Any) -> Any:
    """An agent's schema as reported, or `{}` for anything that is no JSON Schema."""
    return schema if isinstance(schema, dict) else {}


def _call_operation(
    identity: str, method: str, contract: dict[str, Any], schemas: dict[str, Any], index: DefsIndex
) -> dict[str, Any]:
    params = hoist_defs(_schema(contract.get("params")), schemas, _SCHEMAS, index)
    result = hoist_defs(_schema(contract.get("result")), schemas, _SCHEMAS, index)
    doc = contract.get("doc")
    summary = doc.strip().splitlines()[0] if isinstance(doc, str) and doc.strip() else None
    operation: dict[str, Any] = {
        "tags": ["live"],
        "summary": f"{identity}.{method}" + (f": {summary}" if summary else ""),
        "requestBody": {
            "required": False,
            "description": "params by name (this object) or by position (an array)",
            "content": {
                "application/json": {
                    "schema": {"anyOf": [params, {"type": "array"}]},
                }
            },
        },
        "responses": {
            "200": {
                "description": "the method's result",
                "content": {"application/json": {"schema": result}},
            },
            "400": _error("the body is not JSON, or nests too deep"),
            "404": _error("the agent stopped (-32001), or no longer has the method (-32601)"),
            "422": _error("invalid params (-32602)"),
            "502": _error("the agent answered with another error (its code and message)"),
            "503": _error("too many calls in flight on this worker (-32000), Retry-After: 1"),
            "504": _error("no reply within the call timeout (-32002)"),
        },
    }
    if isinstance(doc, str) and doc.strip():
        operation["description"] = doc
    return operation


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _SCHEMAS + "Error"}}},
    }
