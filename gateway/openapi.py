"""The gateway's OpenAPI 3.1 description (`GET /openapi.json`) and its docs page (`GET /docs`).

Written by hand, next to the routes it describes: a route added in app.py gets its entry
here (tests/test_gateway_rest.py checks that every route is listed). The docs page
(gateway/docs/index.html) is self-contained: it reads /openapi.json and offers a form per
operation; it loads nothing from other hosts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from munggoggo._version import __version__

from . import contracts, openapi_ops
from .guard import PAGES, PROBES
from .http import HTML, JSON, HTTPError, Request, Response, encode_json

if TYPE_CHECKING:
    from .types import GatewayState

log = logging.getLogger("munggoggo.gateway.openapi")

DOCS_PAGE = Path(__file__).resolve().parent / "docs" / "index.html"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _refusal(description: str, headers: dict[str, Any], jsonrpc: bool) -> dict[str, Any]:
    response = _json(_ref("JsonRpcResponse" if jsonrpc else "Error"), description)
    response["headers"] = headers
    return response


_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
}
_CHALLENGE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


def _guard_responses(path: str, method: str) -> dict[str, Any]:
    """What gateway/guard.py may answer before the route runs (JSON-RPC errors on /jsonrpc)."""
    if path in OPEN_PATHS:
        return {}
    rpc = path == "/jsonrpc"
    responses = {
        "429": _refusal("over the per-client rate limit; Retry-After says when", _RETRY_AFTER, rpc),
        "421": _refusal(
            "a browser request for a host name that is not one of the gateway's", {}, rpc
        ),
    }
    if path not in PAGE_PATHS:
        responses["401"] = _refusal(
            '"missing credentials" or "invalid credentials" (gateway with tokens)', _CHALLENGE, rpc
        )
    if method == "post":
        responses["403"] = _refusal(
            "a request from a web page whose origin the gateway does not allow", {}, rpc
        )
    return responses


OPEN_PATHS = PROBES  # never refused by the guard
PAGE_PATHS = PAGES | {"/static/{path}"}  # rate-limited, but open without credentials
_IDENTITY = _path_param("identity", "the agent's identity")
_RPC_ERRORS = {
    "404": _error("unknown agent (-32001) or unknown method (-32601)"),
    "422": _error("invalid params (-32602)"),
    "502": _error("the agent answered with another error (its code and message)"),
    "503": _error("too many calls in flight on this worker (-32000), Retry-After: 1"),
    "504": _error("no reply within the call timeout (-32002)"),
}
_BODY_ERRORS = {
    "400": _error("the body is not JSON, or nests too deep"),
    "408": _error("the body did not arrive within the body timeout"),
    "413": _error("the body exceeds the size limit"),
    "415": _error("a body that is not Content-Type application/json"),
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "integer",
                        "description": "the JSON-RPC error code of an RPC error, "
                        "else the HTTP status",
                    },
                    "message": {"type": "string"},
                    "data": {"description": "details from the agent, if any"},
                },
            }
        },
    },
    "Params": {
        "description": "an array (params by position) or an object (params by name)",
        "oneOf": [{"type": "array"}, {"type": "object"}],
    },
    "JsonRpcRequest": {
        "type": "object",
        "required": ["jsonrpc", "method"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "method": {
                "type": "string",
                "description": "IDENTITY.METHOD (split at the last dot)",
                "examples": ["calculator.mul"],
            },
            "params": _ref("Params"),
            "id": {
                "type": ["string", "number", "null"],
                "description": "omitted for a notification (no reply)",
            },
        },
    },
    "JsonRpcError": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "integer"},
            "message": {"type": "string"},
            "data": {},
        },
    },
    "JsonRpcResponse": {
        "type": "object",
        "required": ["jsonrpc", "id"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "result": {},
            "error": _ref("JsonRpcError"),
            "id": {"type": ["string", "number", "null"]},
        },
    },
    "Behaviour": {
        "type": "object",
        "description": "a behaviour as the agent describes it",
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string"},
            "binding_keys": {"type": "array", "items": {"type": "string"}},
            "body_schema": {
                "type": ["object", "null"],
                "description": "the JSON Schema of the body type it declares, or null",
            },
        },
        "additionalProperties": True,
    },
    "Agent": {
        "type": "object",
        "description": "an agent's `describe` answer",
        "required": ["identity"],
        "properties": {
            "identity": {"type": "string"},
            "state": {"type": "string"},
            "behaviours": {"type": "array", "items": _ref("Behaviour")},
            "methods": {"type": "array", "items": {"type": "string"}},
            "schemas": {
                "type": "object",
                "description": "method name -> its contract: `params` and `result` (JSON "
                "Schemas), `doc` (its docstring or null)",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "params": {"type": "object"},
                        "result": {"type": "object"},
                        "doc": {"type": ["string", "null"]},
                    },
                },
            },
            "started_at": {"type": ["number", "null"]},
        },
    },
    "AgentStatus": {
        "description": "an agent's `status` answer: `describe` plus runtime figures",
        "allOf": [
            _ref("Agent"),
            {
                "type": "object",
                "properties": {
                    "url": {"type": "string"},
                    "connected": {"type": "boolean"},
                    "reconnects": {"type": "integer"},
                    "uptime": {"type": "number"},
                    "counters": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                    },
                    "pending_calls": {"type": "integer"},
                    "unconfirmed": {"type": "integer"},
                },
            },
        ],
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "Published": {
        "type": "object",
        "required": ["published", "routing_key"],
        "properties": {"published": {"const": True}, "routing_key": {"type": "string"}},
    },
}


def _behaviour_operation(action: str) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["agents"],
            "operationId": f"{action}_behaviour",
            "summary": f"{action.capitalize()} one of an agent's behaviours",
            "parameters": [_IDENTITY, _path_param("name", "the behaviour's name")],
            "responses": {
                "200": _json(_ref("Behaviour"), "the behaviour after the change"),
                **_RPC_ERRORS,
                "404": _error("unknown agent (-32001) or behaviour (-32004)"),
            },
        }
    }


PATHS: dict[str, Any] = {
    "/jsonrpc": {
        "post": {
            "tags": ["json-rpc"],
            "operationId": "jsonrpc",
            "summary": "JSON-RPC 2.0: call IDENTITY.METHOD (single, batch, notifications)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _ref("JsonRpcRequest"),
                                {"type": "array", "items": _ref("JsonRpcRequest")},
                            ]
                        },
                        "example": {
                            "jsonrpc": "2.0",
                            "method": "calculator.mul",
                            "params": [6, 7],
                            "id": 1,
                        },
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "oneOf": [
                            _ref("JsonRpcResponse"),
                            {"type": "array", "items": _ref("JsonRpcResponse")},
                        ]
                    },
                    "the response (errors too), or an array for a batch",
                ),
                "204": {"description": "only notifications: nothing to answer"},
                "408": _json(
                    _ref("JsonRpcResponse"), "the body did not arrive within the body timeout"
                ),
                "413": _json(_ref("JsonRpcResponse"), "the body exceeds the size limit"),
                "415": _json(
                    _ref("JsonRpcResponse"),
                    "a body that is not JSON under a Content-Type other than application/json",
                ),
            },
        }
    },
    "/agents": {
        "get": {
            "tags": ["agents"],
            "operationId": "list_agents",
            "summary": "The running agents (collected for `wait` seconds)",
            "parameters": [
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.3},
                }
            ],
            "responses": {
                "200": _json({"type": "array", "items": _ref("Agent")}, "the agents"),
                "400": _error("wait is not a number from 0 to 5"),
                "503": _error("too many calls in flight, or the broker connection is down"),
            },
        }
    },
    "/agents/{identity}": {
        "get": {
            "tags": ["agents"],
            "operationId": "agent_status",
            "summary": "An agent's status",
            "parameters": [_IDENTITY],
            "responses": {
                "200": _json(_ref("AgentStatus"), "the agent's status"),
                **_RPC_ERRORS,
            },
        }
    },
    "/agents/{identity}/call/{method}": {
        "post": {
            "tags": ["agents"],
            "operationId": "call_method",
            "summary": "Call an exposed method",
            "parameters": [_IDENTITY, _path_param("method", "the exposed method")],
            "requestBody": {
                "required": False,
                "description": "array: params by position; object: by name; empty: none",
                "content": {"application/json": {"schema": _ref("Params"), "example": [6, 7]}},
            },
            "responses": {
                "200": _json({}, "the method's result"),
                **_BODY_ERRORS,
                **_RPC_ERRORS,
            },
        }
    },
    "/agents/{identity}/behaviours/{name}/start": _behaviour_operation("start"),
    "/agents/{identity}/behaviours/{name}/stop": _behaviour_operation("stop"),
    "/topics/{routing_key}": {
        "post": {
            "tags": ["topics"],
            "operationId": "publish",
            "summary": "Publish the body (JSON, or text/plain text) on munggoggo.topic",
            "parameters": [
                _path_param("routing_key", "the topic, e.g. sensors.t1 (no `*` or `#`)")
            ],
            "requestBody": openapi_ops.message_body({"value": 21.5}),
            "responses": {
                "202": _json(_ref("Published"), "handed to the broker"),
                **openapi_ops.MESSAGE_BODY_ERRORS,
                "400": _error(
                    "empty, not JSON (and not text/plain) or nests too deep, or the routing "
                    "key holds a wildcard (`*`, `#`) or exceeds 255 bytes"
                ),
                "503": _error(
                    "the broker cannot take it now: its connection is down (answered at "
                    "once), or no room within the publish timeout (-32003); or too many "
                    "calls in flight (-32000). Retry-After: 1"
                ),
            },
        }
    },
    "/healthz": {
        "get": {
            "tags": ["operations"],
            "operationId": "healthz",
            "summary": "Liveness: the worker answers",
            "responses": {"200": _json(_ref("Status"), "alive")},
        }
    },
    "/readyz": {
        "get": {
            "tags": ["operations"],
            "operationId": "readyz",
            "summary": "Readiness: connected to the broker",
            "responses": {
                "200": _json(_ref("Status"), "ready"),
                "503": _json(_ref("Status"), "not connected"),
            },
        }
    },
    "/metrics": {
        "get": {
            "tags": ["operations"],
            "operationId": "metrics",
            "summary": "Prometheus text exposition of this worker's counters",
            "responses": {
                "200": {
                    "description": "metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["operations"],
            "operationId": "openapi",
            "summary": "This description",
            "description": "With the broker connected, it also has a path per running "
            "agent and exposed method, `/agents/<identity>/call/<method>` (tag `live`), "
            "with that method's params and result schemas; `?live=false` leaves them out. "
            "A gateway with tokens adds them only for a request with valid credentials.",
            "parameters": [
                {
                    "name": "live",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                }
            ],
            "responses": {
                "200": _json({"type": "object"}, "OpenAPI 3.1"),
                "400": _error("live is not true, false, 1 or 0"),
            },
        }
    },
    "/asyncapi.json": {
        "get": {
            "tags": ["operations"],
            "operationId": "asyncapi",
            "summary": "The running agents' contracts as an AsyncAPI 3.0 document",
            "parameters": [
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.3},
                }
            ],
            "responses": {
                "200": _json({"type": "object"}, "AsyncAPI 3.0"),
                "400": _error("wait is not a number from 0 to 5"),
                "503": _error("too many calls in flight, or the broker connection is down"),
            },
        }
    },
    "/docs": {
        "get": {
            "tags": ["operations"],
            "operationId": "docs",
            "summary": "Interactive docs page (served locally)",
            "responses": {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/": {
        "get": {
            "tags": ["dashboard"],
            "operationId": "dashboard",
            "summary": "The dashboard page",
            "responses": {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/static/{path}": {
        "get": {
            "tags": ["dashboard"],
            "operationId": "dashboard_static",
            "summary": "The dashboard's static files",
            "parameters": [_path_param("path", "file below gateway/static/")],
            "responses": {"200": {"description": "the file"}, "404": {"description": "none"}},
        }
    },
    "/ws": {
        "get": {
            "tags": ["websocket"],
            "operationId": "websocket",
            "summary": "WebSocket: topic subscriptions, calls and publishes",
            "description": "Upgrade to a WebSocket (see the WebSocket protocol in the docs). "
            "A browser passes its token as `?token=` (it cannot set headers on a WebSocket).",
            "parameters": [
                {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "description": "the bearer token, for clients that cannot send headers",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "101": {"description": "switching protocols"},
                "426": _error("a plain HTTP request: this path is the WebSocket"),
            },
        }
    },
}

# The message and dead-letter routes (gateway/openapi_ops.py).
SCHEMAS.update(openapi_ops.schemas())
PATHS.update(openapi_ops.paths())

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "munggoggo gateway",
        "version": __version__,
        "description": "REST and JSON-RPC 2.0 to the agents of a munggoggo mesh.",
    },
    "servers": [{"url": "/"}],
    "tags": [
        {"name": "json-rpc", "description": "JSON-RPC 2.0 to any agent's exposed methods"},
        {"name": "agents", "description": "agents, their methods and behaviours"},
        {"name": "topics", "description": "publish on munggoggo.topic"},
        {"name": "dead-letters", "description": "what the mesh gave up on (ctl dead-letters)"},
        {"name": "operations", "description": "health, readiness, metrics, this description"},
        {"name": "live", "description": "the running agents' methods, with their schemas"},
        {"name": "dashboard", "description": "the dashboard (gateway.dashboard)"},
        {"name": "websocket", "description": "the WebSocket (gateway.ws)"},
    ],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
    },
}
for _path, _item in PATHS.items():
    for _method, _operation in _item.items():
        for _status, _response in _guard_responses(_path, _method).items():
            _operation["responses"].setdefault(_status, _response)

_spec_bodies: dict[tuple[bool, bool], bytes] = {}
_docs_body: bytes | None = None


def spec_for(secured: bool, metrics_public: bool) -> dict[str, Any]:
    """The description as this gateway runs: with tokens, every operation but the open ones
    requires a bearer token or an API key."""
    if not secured:
        return SPEC
    open_paths = OPEN_PATHS | PAGE_PATHS | ({"/metrics"} if metrics_public else set())
    paths = {
        path: {
            method: {**operation, "security": []} if path in open_paths else operation
            for method, operation in item.items()
        }
        for path, item in PATHS.items()
    }
    return {**SPEC, "paths": paths, "security": [{"bearer": []}, {"apiKey": []}]}


async def openapi_endpoint(request: Request, state: GatewayState | None) -> Response:
    guard = getattr(state, "guard", None)
    secured = guard is not None and guard.tokens is not None
    metrics_public = guard is not None and "/metrics" in guard.open_paths
    key = (secured, metrics_public)
    if contracts.wants_live(request) and contracts.may_see_agents(request, guard):

        def build(agents: list[dict[str, Any]]) -> bytes:
            return _live_body(key, agents)

        body = await contracts.live_body(state, ("openapi", key), build)
        return Response(200, body, JSON, contracts.PER_CLIENT)
    return Response(200, _generic_body(key), JSON, contracts.PER_CLIENT)


def _generic_body(key: tuple[bool, bool]) -> bytes:
    body = _spec_bodies.get(key)
    if body is None:
        body = _spec_bodies[key] = encode_json(spec_for(*key))
    return body


def _live_body(key: tuple[bool, bool], agents: list[dict[str, Any]]) -> bytes:
    """The description with the running agents' paths (none running: the generic one)."""
    if not agents:
        return _generic_body(key)
    guarded = _guard_responses("/agents/{identity}/call/{method}", "post")
    try:
        spec = contracts.with_live_calls(spec_for(*key), agents, guarded)
    except Exception:  # an answer the builder did not expect: the generic one
        log.exception("documenting the running agents in /openapi.json failed")
        return _generic_body(key)
    return encode_json(spec)


async def websocket_upgrade_required(request: Request, state: GatewayState | None) -> Response:
    """A plain HTTP GET of /ws (the WebSocket itself never reaches the HTTP router)."""
    raise HTTPError(
        426,
        "/ws is a WebSocket: connect with a WebSocket client (Upgrade: websocket)",
        headers=[(b"upgrade", b"websocket")],
    )


async def docs_endpoint(request: Request, state: GatewayState | None) -> Response:
    global _docs_body
    if _docs_body is None:
        _docs_body = DOCS_PAGE.read_bytes()
    return Response(200, _docs_body, HTML)
