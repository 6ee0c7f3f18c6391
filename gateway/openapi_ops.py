"""The OpenAPI description of the message and dead-letter routes (direct sends, broadcasts,
`/dead-letters`), and of the message bodies every publishing route takes.

gateway/openapi.py merges `paths()` and `schemas()` into `/openapi.json`; the guard's
answers (401, 403, 421, 429) are added there like for every other route.
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_IDENTITY = {
    "name": "identity",
    "in": "path",
    "required": True,
    "description": "the agent's identity",
    "schema": {"type": "string"},
}
_BODY_ERRORS = {
    "400": _error("the body is not JSON, or nests too deep"),
    "408": _error("the body did not arrive within the body timeout"),
    "413": _error("the body exceeds the size limit"),
    "415": _error("a body that is not Content-Type application/json"),
}


def message_body(example: Any) -> dict[str, Any]:
    """A message as a request body: JSON (any Content-Type but text/plain), or text.

    Args:
        example: the JSON example.

    Returns:
        The OpenAPI request body.
    """
    return {
        "required": True,
        "description": "the message: a text/plain body is sent as text (content type "
        "text/plain); any other body must be JSON and is sent as its value",
        "content": {
            "application/json": {"schema": {}, "example": example},
            "text/plain": {"schema": {"type": "string"}, "example": "hello"},
        },
    }


MESSAGE_BODY_ERRORS = {
    "400": _error("empty, not JSON (and not text/plain), nests too deep, or not in its charset"),
    "408": _BODY_ERRORS["408"],
    "413": _BODY_ERRORS["413"],
    "415": _error("a text/plain body in a charset the gateway does not know"),
}
_PUBLISH_REFUSED = _error(
    "the broker cannot take it now: its connection is down (answered at once), or no room "
    "within the publish timeout (-32003); or too many calls in flight (-32000). Retry-After: 1"
)
_DEAD_LETTER_REFUSED = _error(
    "too many calls in flight (-32000), the broker connection is down or dropped halfway "
    "(-32003), or another reader kept the dead letters past the lock wait (-32003, "
    '"dead letters busy"). Retry-After: 1'
)
_DEAD_LETTER_TIMEOUT = _error(
    "the scan ran out of time, or the broker did not confirm requeued copies in time "
    "(-32002); for requeue and purge the error's `data` is what was done (its `kept` names "
    "letters whose copy may have arrived all the same)"
)
_AGENT_FILTER = {
    "type": ["string", "null"],
    "description": "only the dead letters the agent with this identity gave up on",
}


def _selection_body(action: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"which dead letters to {action}: `ids`, or `all: true`; either one "
        "may be narrowed by `agent`",
        "content": {
            "application/json": {
                "schema": _ref("DeadLetterSelection"),
                "example": {"ids": ["3f2a9c0d1b7e4f65"]},
            }
        },
    }


def _selection_errors() -> dict[str, Any]:
    return {
        **_BODY_ERRORS,
        "400": _error(
            "not a JSON object, an unknown field, a field of the wrong type, "
            "both `ids` and `all`, or neither"
        ),
        "503": _DEAD_LETTER_REFUSED,
        "504": _DEAD_LETTER_TIMEOUT,
    }


def schemas() -> dict[str, Any]:
    """The schemas of the message and dead-letter routes.

    Returns:
        Schema name -> JSON Schema.
    """
    return {
        "Sent": {
            "type": "object",
            "required": ["sent", "to"],
            "properties": {"sent": {"const": True}, "to": {"type": "string"}},
        },
        "Broadcast": {
            "type": "object",
            "required": ["broadcast"],
            "properties": {"broadcast": {"const": True}},
        },
        "DeadLetter": {
            "type": "object",
            "description": "a dead letter, as its headers tell (`DeadLetter.as_dict()`)",
            "required": ["id", "reason", "retries", "size"],
            "properties": {
                "id": {"type": "string"},
                "queue": {"type": ["string", "null"], "description": "where requeue sends it"},
                "agent": {"type": ["string", "null"]},
                "behaviour": {"type": ["string", "null"]},
                "exchange": {"type": ["string", "null"]},
                "routing_key": {"type": ["string", "null"]},
                "reason": {"type": "string"},
                "retries": {"type": "integer"},
                "dead_lettered_at": {"type": ["number", "null"]},
                "age": {"type": ["number", "null"], "description": "seconds"},
                "sender": {"type": ["string", "null"]},
                "kind": {"type": ["string", "null"]},
                "content_type": {"type": ["string", "null"]},
                "size": {"type": "integer", "description": "body bytes"},
            },
        },
        "DeadLetterInspected": {
            "description": "a dead letter with its headers and body: `body` (its JSON value, "
            "else its UTF-8 text) or `body_base64`",
            "allOf": [
                _ref("DeadLetter"),
                {
                    "type": "object",
                    "required": ["headers"],
                    "properties": {
                        "headers": {"type": "object"},
                        "body": {},
                        "body_base64": {"type": "string"},
                    },
                },
            ],
        },
        "DeadLetterSelection": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "all": {"type": "boolean"},
                "agent": _AGENT_FILTER,
            },
        },
        "Requeued": {
            "type": "object",
            "required": ["requeued", "kept", "missing"],
            "properties": {
                "requeued": {"type": "array", "items": {"type": "string"}},
                "kept": {
                    "type": "object",
                    "description": "id -> why it is still a dead letter",
                    "additionalProperties": {"type": "string"},
                },
                "missing": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Purged": {
            "type": "object",
            "required": ["purged", "ids", "missing", "left"],
            "properties": {
                "purged": {"type": "integer"},
                "ids": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "empty when the whole queue was purged",
                },
                "missing": {"type": "array", "items": {"type": "string"}},
                "left": {
                    "type": ["integer", "null"],
                    "description": "after purging the whole queue: how many dead letters it "
                    "held right after (arrived meanwhile, or held by another reader); "
                    "null otherwise",
                },
            },
        },
    }


def paths() -> dict[str, Any]:
    """The message and dead-letter routes: direct sends, broadcasts, dead letters.

    Returns:
        Path -> path item.
    """
    return {
        "/agents/{identity}/send": {
            "post": {
                "tags": ["agents"],
                "operationId": "send_message",
                "summary": "Send a direct message to an agent's inbox",
                "parameters": [_IDENTITY],
                "requestBody": message_body({"order": 17}),
                "responses": {
                    "202": _json(_ref("Sent"), "in the agent's inbox (confirmed by the broker)"),
                    **MESSAGE_BODY_ERRORS,
                    "404": _error("unknown agent: no inbox of that name (-32001)"),
                    "503": _PUBLISH_REFUSED,
                    "504": _error(
                        "the broker did not confirm it within the call timeout (-32002): "
                        "it may still arrive"
                    ),
                },
            }
        },
        "/broadcast": {
            "post": {
                "tags": ["agents"],
                "operationId": "broadcast",
                "summary": "Send a message to every agent's inbox (munggoggo.fanout)",
                "requestBody": message_body({"reload": True}),
                "responses": {
                    "202": _json(_ref("Broadcast"), "handed to the broker"),
                    **MESSAGE_BODY_ERRORS,
                    "503": _PUBLISH_REFUSED,
                },
            }
        },
        "/dead-letters": {
            "get": {
                "tags": ["dead-letters"],
                "operationId": "list_dead_letters",
                "summary": "Dead letters, oldest first (the queue is unchanged)",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    },
                    {
                        "name": "agent",
                        "in": "query",
                        "required": False,
                        "description": _AGENT_FILTER["description"],
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["dead_letters"],
                            "properties": {
                                "dead_letters": {"type": "array", "items": _ref("DeadLetter")}
                            },
                        },
                        "the dead letters, without their bodies",
                    ),
                    "400": _error("limit is not a whole number from 1 to 1000, or agent is empty"),
                    "503": _DEAD_LETTER_REFUSED,
                    "504": _DEAD_LETTER_TIMEOUT,
                },
            }
        },
        "/dead-letters/{id}": {
            "get": {
                "tags": ["dead-letters"],
                "operationId": "inspect_dead_letter",
                "summary": "One dead letter with its headers and body (the queue is unchanged)",
                "parameters": [{**_IDENTITY, "name": "id", "description": "the dead letter's id"}],
                "responses": {
                    "200": _json(_ref("DeadLetterInspected"), "the dead letter"),
                    "404": _error("no dead letter has that id"),
                    "503": _DEAD_LETTER_REFUSED,
                    "504": _DEAD_LETTER_TIMEOUT,
                },
            }
        },
        "/dead-letters/requeue": {
            "post": {
                "tags": ["dead-letters"],
                "operationId": "requeue_dead_letters",
                "summary": "Send dead letters back to their queue with a fresh retry count",
                "requestBody": _selection_body("requeue"),
                "responses": {
                    "200": _json(_ref("Requeued"), "what was requeued, kept, not found"),
                    **_selection_errors(),
                },
            }
        },
        "/dead-letters/purge": {
            "post": {
                "tags": ["dead-letters"],
                "operationId": "purge_dead_letters",
                "summary": "Delete dead letters for good",
                "requestBody": _selection_body("purge"),
                "responses": {
                    "200": _json(_ref("Purged"), "how many were purged, which, not found"),
                    **_selection_errors(),
                },
            }
        },
    }
