"""The mesh's contract as an AsyncAPI 3.0 document, built from what the agents describe.

`asyncapi_document(agents, server_url=...)` is a pure function: `agents` is what `peers()`
(or the gateway's `GET /agents`) returns, each agent's `describe()`. The gateway serves the
result at `GET /asyncapi.json`; `munggoggo ctl asyncapi` prints it without a gateway.

The document is written from the agents' side (the application is the mesh):
* the exchanges: `munggoggo.fanout` is the `broadcast` channel (broadcasts, presence
  announcements, the `describe` discovery of `peers()`); each binding key of a
  behaviour is a channel on `munggoggo.topic` that the agent receives, with the
  behaviour's `body_schema` as the payload when it declares a body type. The binding key is
  in the channel's `x-munggoggo-binding-key` and its description; a literal key is also
  its address, while a pattern (a `*` or `#` word) is no address (`address: null`), nor is
  a key with braces, which an address would read as parameters, or with a `#`;
* each agent's inbox (queue `<identity>`, reached through the default exchange) is a
  channel; each exposed method is a `receive` operation on it with a `reply`: the request
  is a JSON-RPC 2.0 request whose `params` follow the method's params schema, the reply a
  JSON-RPC 2.0 response whose `result` follows its result schema, sent to the `reply_to`
  the request carried (the `replies` channel, whose address is only known at run time);
* message headers describe the AMQP properties of the wire contract (`app_id`, `type`,
  `content_type`, `correlation_id`, `reply_to`, `timestamp`, `expiration`, `headers`),
  which AMQP keeps apart from the application headers table.

Schemas the agents report stand alone (their own `$defs`); here those move to
`components.schemas` (`rpc_schemas.hoist_defs`), where a reference of the document resolves.
Keys (channel, operation and message ids) are the identities and names with every
character outside `[A-Za-z0-9_.-]` replaced by `_`, made unique when two collide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from . import envelope
from ._version import __version__
from .presence import Announcement
from .rpc_schemas import DefsIndex, hoist_defs, type_schema
from .url import parse_urls
from .wire import DEADLINE_HEADER, FANOUT_EXCHANGE, TOPIC_EXCHANGE

__all__ = ["ASYNCAPI_VERSION", "BINDING_KEY_EXTENSION", "REPLY_TO_LOCATION", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
# A topic channel's binding key, as given (its address may be null: see the docstring).
BINDING_KEY_EXTENSION = "x-munggoggo-binding-key"
# Where a request says the reply goes: its AMQP `reply_to` property (a runtime expression
# into the message headers, which stand for the AMQP properties here).
REPLY_TO_LOCATION = "$message.header#/reply_to"
_CORRELATION = {
    "description": "the AMQP `correlation_id` property: a reply carries its request's",
    "location": "$message.header#/correlation_id",
}
_SCHEMAS = "#/components/schemas/"
# The content types a typed body decodes from (core/envelope.py): JSON (application/json or
# any `+json` type) or msgpack, parameters such as charset allowed; media types are
# case-insensitive, the pattern names them in lower case.
_TYPED_CONTENT_TYPE: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\s*(application/json|[^;\s]+\+json|application/(x-)?msgpack)\s*(;.*)?$",
    "description": "JSON (application/json, any +json type) or msgpack "
    "(application/msgpack, application/x-msgpack), with parameters such as charset",
}
_AMQP = "0.3.0"  # the AsyncAPI AMQP bindings version
# The agents take an integer or a string (JSON-RPC's "number" without a fractional part
# would do, but a float id is refused); an error response may say null (unreadable id).
_JSONRPC_ID = {"type": ["string", "integer"]}
_JSONRPC_ERROR_ID = {"type": ["string", "integer", "null"]}

_PROPERTIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The AMQP basic properties a munggoggo message carries (the wire "
    "contract). AMQP keeps them apart from the application headers table, which is "
    "`headers` here.",
    "properties": {
        "app_id": {"type": "string", "description": "the sender's identity"},
        "type": {
            "type": "string",
            "description": "the message kind",
            "enum": [
                envelope.KIND_MESSAGE,
                envelope.KIND_RPC,
                envelope.KIND_CONTROL,
                envelope.KIND_PRESENCE,
            ],
        },
        "content_type": {
            "type": "string",
            "description": "how the body is encoded: usually application/json (structured), "
            "text/plain (a str), application/octet-stream (bytes); any media type may come, "
            "with parameters such as charset",
            "examples": [envelope.JSON, envelope.TEXT, envelope.OCTET, envelope.MSGPACK],
        },
        "correlation_id": {"type": "string", "description": "an RPC's call id"},
        "reply_to": {
            "type": "string",
            "description": "an RPC request's reply queue: the caller's inbox (its identity) "
            "or RabbitMQ's direct reply-to `amq.rabbitmq.reply-to`",
        },
        "timestamp": {"type": "integer", "description": "seconds since the epoch"},
        "expiration": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "milliseconds the broker keeps the message queued (an RPC "
            "request's: its caller's timeout, so that nobody starts it after the caller "
            "gave up)",
        },
        "headers": {
            "type": "object",
            "description": "the AMQP headers table",
            "properties": {
                DEADLINE_HEADER: {
                    "type": "integer",
                    "description": "an RPC request's deadline, milliseconds since the epoch: "
                    "the agent never starts it later",
                },
                "traceparent": {"type": "string", "description": "W3C trace context"},
            },
        },
    },
}

_ERROR_RESPONSE: dict[str, Any] = {
    "type": "object",
    "description": "a JSON-RPC 2.0 error response",
    "required": ["jsonrpc", "error", "id"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "data": {},
            },
        },
        "id": _JSONRPC_ERROR_ID,
    },
    "additionalProperties": False,
}


def asyncapi_document(
    agents: Iterable[Mapping[str, Any]],
    *,
    server_url: str | None = None,
    title: str = "munggoggo mesh",
    description: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of a running mesh.

    Args:
        agents: each agent's `describe()` answer (what `peers()` returns): `identity`,
            `behaviours` (with `binding_keys` and `body_schema`), `methods` and `schemas`.
        server_url: the broker URL (a failover list gives one server each; None reads
            `MUNGGOGGO_URL`). Credentials never reach the document.
        title: the document's title.
        description: its description (default: one naming the agents).

    Returns:
        The document, a JSON-encodable dict.

    Raises:
        URLError: an invalid `server_url`.
    """
    builder = _Builder()
    listed = sorted(
        (a for a in agents if isinstance(a, Mapping) and isinstance(a.get("identity"), str)),
        key=lambda a: str(a["identity"]),
    )
    for agent in listed:
        builder.add_agent(agent)
    names = ", ".join(str(a["identity"]) for a in listed if a["identity"]) or "none answered"
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": __version__,
            "description": description
            or f"The agents of a munggoggo mesh and their contracts. Agents: {names}.",
        },
        "servers": _servers(server_url),
        "channels": builder.channels,
        "operations": builder.operations,
        "components": {
            "schemas": builder.schemas,
        },
    }


def _servers(server_url: str | None) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for i, url in enumerate(parse_urls(server_url)):
        server: dict[str, Any] = {"protocol": url.scheme}
        if url.is_memory:
            server["host"] = url.host
            server["description"] = "an in-process broker (memory://)"
        else:
            host = f"[{url.host}]" if ":" in url.host else url.host  # IPv6, as in a URL
            server["host"] = f"{host}:{url.port}"
            # The vhost percent-encoded as in an AMQP URI: vhost `prod` is `/prod`, vhost
            # `/prod` is `/%2Fprod`, the default vhost `/` is `/%2F`.
            server["pathname"] = "/" + quote(url.vhost, safe="")
            server["protocolVersion"] = "0.9.1"
            server["description"] = "RabbitMQ (AMQP 0-9-1)"
        servers["broker" if i == 0 else f"broker-{i + 1}"] = server
    return servers


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text) or "_"


def _is_pattern(binding_key: str) -> bool:
    """Whether a binding key has a topic wildcard (a word that is `*` or `#`)."""
    return any(word in ("*", "#") for word in binding_key.split("."))


def _address(text: str) -> str | None:
    """A queue name or routing key as a channel address; None when it holds braces,
    which an address reads as parameters (AsyncAPI has no escape for them), or `#`,
    which no address may hold.
    """
    return None if "{" in text or "}" in text or "#" in text else text


def _items(value: Any) -> list[Any]:
    """A list from an agent's answer; anything else (a str, an object) counts as empty."""
    return list(value) if isinstance(value, list | tuple) else []


def _strings(value: Any) -> list[str]:
    """The strings of a list from an agent's answer (the rest is skipped)."""
    return [v for v in _items(value) if isinstance(v, str)]


def _mapping(value: Any) -> Mapping[str, Any]:
    """An object from an agent's answer; anything else counts as empty."""
    return value if isinstance(value, Mapping) else {}


def _unique(key: str, taken: Mapping[str, Any]) -> str:
    candidate, n = key, 2
    while candidate in taken:
        candidate, n = f"{key}_{n}", n + 1
    return candidate


def _headers(
    kind: str, content_type: str | None, required: list[str], typed: bool = False
) -> dict[str, Any]:
    """The properties schema of one kind of message: the wire properties, narrowed."""
    narrowed: dict[str, Any] = {"type": {"const": kind}}
    if typed:
        narrowed["content_type"] = _TYPED_CONTENT_TYPE
    elif content_type is not None:
        narrowed["content_type"] = {"const": content_type}
    return {
        "allOf": [
            {"$ref": _SCHEMAS + "WireProperties"},
            {"type": "object", "properties": narrowed, "required": required},
        ]
    }


def _message(
    name: str,
    kind: str,
    payload: Any,
    content_type: str | None,
    required: list[str],
    typed: bool = False,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "headers": _headers(kind, content_type, required, typed),
        "payload": payload,
        "bindings": {"amqp": {"messageType": kind, "bindingVersion": _AMQP}},
    }
    if content_type is not None:
        message["contentType"] = content_type
    return message


def _request(name: str, method: str, params: Any, kind: str = envelope.KIND_RPC) -> dict[str, Any]:
    """A JSON-RPC 2.0 request message for `method`, its params following `params`."""
    message = _message(
        name,
        kind,
        {
            "type": "object",
            "description": "a JSON-RPC 2.0 request (no `id`: a notification, no reply)",
            "required": ["jsonrpc", "method"],
            "properties": {
                "jsonrpc": {"const": "2.0"},
                "method": {"const": method},
                "params": {
                    "description": "by name (the object) or by position (an array); "
                    "null or absent: none",
                    "anyOf": [params, {"type": "array"}, {"type": "null"}],
                },
                "id": _JSONRPC_ID,
            },
            "additionalProperties": False,
        },
        envelope.JSON,
        ["type", "content_type"],
    )
    message["correlationId"] = _CORRELATION
    return message


def _reply(name: str, result: Any, kind: str = envelope.KIND_RPC) -> dict[str, Any]:
    """A JSON-RPC 2.0 response message: `result` following `result`, or an error."""
    success = {
        "type": "object",
        "description": "a JSON-RPC 2.0 response with the method's result",
        "required": ["jsonrpc", "result", "id"],
        "properties": {"jsonrpc": {"const": "2.0"}, "result": result, "id": _JSONRPC_ID},
        "additionalProperties": False,
    }
    message = _message(
        name,
        kind,
        {"oneOf": [success, _ERROR_RESPONSE]},
        envelope.JSON,
        ["type", "content_type", "app_id", "correlation_id"],
    )
    message["correlationId"] = _CORRELATION
    return message


def _exchange(name: str, type_: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": name, "type": type_, "durable": True, "autoDelete": False},
            "bindingVersion": _AMQP,
        }
    }


def _ref(*parts: str) -> dict[str, str]:
    # JSON Pointer escaping; our keys hold neither "~" nor "/", but a pointer stays exact.
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


def _summary(doc: Any) -> str | None:
    if not isinstance(doc, str) or not doc.strip():
        return None
    return doc.strip().splitlines()[0]


class _Builder:
    """Collects channels, operations and shared schemas, agent by agent."""

    def __init__(self) -> None:
        # Seeded, so that an agent's type of the same name is hoisted as `WireProperties_2`.
        self.schemas: dict[str, Any] = {"WireProperties": _PROPERTIES_SCHEMA}
        self.defs_index = DefsIndex()
        self.agent_keys: dict[str, None] = {}
        self.channels: dict[str, Any] = {
            "broadcast": {
                "address": None,
                "title": FANOUT_EXCHANGE,
                "description": f"`{FANOUT_EXCHANGE}` (fanout): to every agent's inbox",
                "messages": {
                    "broadcast": _message("broadcast", envelope.KIND_MESSAGE, {}, None, ["type"]),
                    "presence": _message(
                        "presence",
                        envelope.KIND_PRESENCE,
                        type_schema(Announcement),
                        envelope.JSON,
                        ["type", "content_type", "app_id"],
                    ),
                    # peers(): `describe` to every agent, answers to the caller's reply_to.
                    "discover": _request("discover", "describe", {}, envelope.KIND_CONTROL),
                },
                "bindings": _exchange(FANOUT_EXCHANGE, "fanout"),
            },
            "replies": {
                "address": None,
                "title": "RPC replies",
                "description": "the queue a request names in `reply_to`, reached through the "
                "default exchange: known only at run time",
                "messages": {
                    "discover.reply": _reply(
                        "discover reply", {"type": "object"}, envelope.KIND_CONTROL
                    )
                },
            },
        }
        self.operations: dict[str, Any] = {
            "broadcast": {
                "action": "receive",
                "channel": _ref("channels", "broadcast"),
                "title": "broadcast",
                "summary": "Every agent receives what is broadcast, in its inbox",
                "messages": [_ref("channels", "broadcast", "messages", "broadcast")],
            },
            "presence": {
                "action": "receive",
                "channel": _ref("channels", "broadcast"),
                "title": "presence",
                "summary": "Agents announce that they started or stopped (core/presence.py)",
                "messages": [_ref("channels", "broadcast", "messages", "presence")],
            },
            "discover": {
                "action": "receive",
                "channel": _ref("channels", "broadcast"),
                "title": "discover",
                "summary": "Every agent answers `describe` (what peers() collects)",
                "messages": [_ref("channels", "broadcast", "messages", "discover")],
                "reply": {
                    "address": {
                        "location": REPLY_TO_LOCATION,
                        "description": "the request's `reply_to` property",
                    },
                    "channel": _ref("channels", "replies"),
                    "messages": [_ref("channels", "replies", "messages", "discover.reply")],
                },
            },
        }

    def schema(self, schema: Any) -> Any:
        """A schema from an agent, its `$defs` moved to `components.schemas` (anything
        that is no JSON Schema, an object or a boolean, becomes `{}`).
        """
        if not isinstance(schema, dict | bool):
            schema = {}
        return hoist_defs(schema, self.schemas, _SCHEMAS, self.defs_index)

    def add_agent(self, agent: Mapping[str, Any]) -> None:
        identity = str(agent.get("identity", ""))
        if not identity:
            return
        key = _unique(_key(identity), self.agent_keys)
        self.agent_keys[key] = None
        inbox_id = f"inbox.{key}"
        inbox: dict[str, Any] = {
            "address": _address(identity),
            "title": f"{identity}'s inbox",
            "description": f"queue `{identity}`, reached through the default exchange with "
            "routing key = the identity: RPC requests and direct messages",
            "messages": {},
            "bindings": {
                "amqp": {"is": "queue", "queue": {"name": identity}, "bindingVersion": _AMQP}
            },
        }
        self.channels[inbox_id] = inbox
        schemas = _mapping(agent.get("schemas"))
        methods = _strings(agent.get("methods")) or sorted(k for k in schemas if isinstance(k, str))
        for method in methods:
            self.add_method(identity, key, inbox_id, method, _mapping(schemas.get(method)))
        for behaviour in _items(agent.get("behaviours")):
            if isinstance(behaviour, Mapping):
                self.add_behaviour(identity, key, inbox_id, behaviour)

    def add_method(
        self, identity: str, key: str, inbox_id: str, method: str, contract: Mapping[str, Any]
    ) -> None:
        inbox = self.channels[inbox_id]
        name = _key(method)
        request_id = _unique(f"{name}.request", inbox["messages"])
        params = self.schema(contract.get("params"))
        result = self.schema(contract.get("result"))
        inbox["messages"][request_id] = _request(f"{identity}.{method} request", method, params)
        reply_id = _unique(f"{key}.{name}.reply", self.channels["replies"]["messages"])
        self.channels["replies"]["messages"][reply_id] = _reply(
            f"{identity}.{method} reply", result
        )
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": _ref("channels", inbox_id),
            "title": f"{identity}.{method}",
            "messages": [_ref("channels", inbox_id, "messages", request_id)],
            "reply": {
                "address": {
                    "location": REPLY_TO_LOCATION,
                    "description": "the request's `reply_to` property",
                },
                "channel": _ref("channels", "replies"),
                "messages": [_ref("channels", "replies", "messages", reply_id)],
            },
            "tags": [{"name": identity}],
        }
        summary = _summary(contract.get("doc"))
        if summary:
            operation["summary"] = summary
            operation["description"] = str(contract["doc"])
        self.operations[_unique(f"{key}.{name}", self.operations)] = operation

    def add_behaviour(
        self, identity: str, key: str, inbox_id: str, behaviour: Mapping[str, Any]
    ) -> None:
        name = str(behaviour.get("name", ""))
        body = behaviour.get("body_schema")
        if not isinstance(body, dict | bool):
            body = None  # none declared, or something that is no schema
        payload = self.schema(body) if body is not None else {}
        # A typed body is JSON or msgpack (`contentType` names the usual one); an untyped
        # one may be anything (text/plain, octet-stream, ...): no content type is promised.
        typed = body is not None
        message = _message(
            f"{identity}.{name}",
            envelope.KIND_MESSAGE,
            payload,
            envelope.JSON if typed else None,
            ["type"],  # a body without content type is taken as JSON
            typed,
        )
        base = f"{key}.{_key(name)}"
        keys = _strings(behaviour.get("binding_keys"))
        for i, binding_key in enumerate(keys, 1):
            channel_id = _unique(f"topic.{base}.{i}", self.channels)
            pattern = _is_pattern(binding_key)
            self.channels[channel_id] = {
                # A pattern is no address (`#` is not even allowed in one), nor is a key
                # with braces (they would be address parameters): those say it elsewhere.
                "address": None if pattern else _address(binding_key),
                "title": f"{binding_key} ({identity}.{name})",
                "description": (
                    f"routing keys matching the pattern `{binding_key}`"
                    if pattern
                    else f"routing key `{binding_key}`"
                )
                + f" on `{TOPIC_EXCHANGE}` (topic), queued for behaviour `{name}` of "
                f"`{identity}`",
                BINDING_KEY_EXTENSION: binding_key,
                "messages": {"message": message},
                "bindings": _exchange(TOPIC_EXCHANGE, "topic"),
            }
            self.operations[_unique(f"{base}.receive.{i}", self.operations)] = {
                "action": "receive",
                "channel": _ref("channels", channel_id),
                "title": f"{identity}.{name} receives {binding_key}",
                "messages": [_ref("channels", channel_id, "messages", "message")],
                "tags": [{"name": identity}],
            }
        if not keys and body is not None:
            # A behaviour fed from the inbox (its template) that says its body type.
            inbox = self.channels[inbox_id]
            message_id = _unique(f"{_key(name)}.direct", inbox["messages"])
            inbox["messages"][message_id] = message
            self.operations[_unique(f"{base}.direct", self.operations)] = {
                "action": "receive",
                "channel": _ref("channels", inbox_id),
                "title": f"{identity}.{name} receives direct messages",
                "messages": [_ref("channels", inbox_id, "messages", message_id)],
                "tags": [{"name": identity}],
            }
