"""JSON-RPC 2.0 over HTTP at `POST /jsonrpc`: the whole specification, forwarded to the mesh.

A method name is `IDENTITY.METHOD`, split at the last dot: `calc.subtract` calls `subtract`
of agent `calc`. Single calls, batches and notifications as in the specification:
* a notification (no `id`) is called like any request, but its reply and errors are
  dropped; a payload of only notifications answers HTTP 204 without a body;
* a batch runs its calls concurrently and answers the replies in request order;
* -32700 for a body that is not JSON, -32600 for an invalid request object (a wrong
  `jsonrpc`, a non-object entry, an `id` that is not a string, number or null, `params`
  that are not an array or object, an empty or too large batch, nesting too deep),
  -32601 for a name without a dot or an `rpc.` name. The id is echoed when it could be
  read, null otherwise.
* errors from the agent (its RpcError code, message and data) pass through unchanged, as do
  the mesh's own -32001 (unknown agent), -32002 (timeout) and -32003 (unavailable); a
  worker with every call slot taken answers -32000 without calling the agent.
HTTP-level refusals keep the HTTP status (413 body too large, 408 body too slow) and still
carry a JSON-RPC error object; every JSON-RPC answer is HTTP 200.

Content-Type: `application/json` is what a client should send, but a body that is a JSON
object or array is taken whatever the Content-Type says, or without one (`curl -d` sends
`application/x-www-form-urlencoded`; many JSON-RPC servers accept it). Any other body under
another Content-Type (not JSON, or a bare `1`, `true`, `null`) is refused with HTTP 415
(and -32600): it was most likely never meant as JSON-RPC. Under `application/json` it is
the protocol's answer (-32700 parse error, -32600 invalid request; HTTP 200).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from munggoggo.rpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNKNOWN_AGENT,
    RpcError,
)

from .http import JSON, HTTPError, Request, Response, decode_json, encode_json
from .limits import OVERLOADED, json_too_deep, overloaded_message, release, try_acquire

if TYPE_CHECKING:
    from .types import GatewayState

log = logging.getLogger("munggoggo.gateway.jsonrpc")

NO_CONTENT = Response(204, b"", None)
_MAX_ROUTING_KEY = 255  # an AMQP short string: longer identities cannot exist


def error_reply(code: int, message: str, id: Any = None, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode_json({"jsonrpc": "2.0", "error": error, "id": id})


def _http_refusal(error: HTTPError) -> Response:
    return Response(error.status, error_reply(INVALID_REQUEST, error.message), JSON, error.headers)


async def jsonrpc_endpoint(request: Request, state: GatewayState) -> Response:
    """`POST /jsonrpc`: a JSON-RPC 2.0 request or batch (HTTP 204 for notifications only)."""
    settings = state.settings
    try:
        body = await request.body(settings.max_body_bytes)
    except HTTPError as exc:
        return _http_refusal(exc)
    declared_json = request.has_json_body()
    if json_too_deep(body, settings.max_json_depth):
        # JSON, whatever the Content-Type says: the protocol's answer refuses the nesting.
        return Response(200, _too_deep(settings.max_json_depth), JSON)
    try:
        payload = decode_json(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        if not declared_json:
            return _not_json()
        return Response(200, error_reply(PARSE_ERROR, f"Parse error: {exc}"), JSON)
    if not declared_json and type(payload) is not dict and type(payload) is not list:
        # A form body `1`, `true` or `null` is JSON by accident, not a JSON-RPC request.
        return _not_json()
    reply = await handle_value(payload, state)
    if reply is None:
        return NO_CONTENT
    return Response(200, reply, JSON)


def _not_json() -> Response:
    return Response(
        415,
        error_reply(
            INVALID_REQUEST,
            "Content-Type must be application/json (the body is not a JSON object or array)",
        ),
        JSON,
    )


def _too_deep(max_depth: int) -> bytes:
    return error_reply(
        INVALID_REQUEST, f"Invalid Request: JSON nested deeper than {max_depth} levels"
    )


async def handle_payload(body: bytes, state: GatewayState) -> bytes | None:
    """The JSON-RPC answer to a request body, or None when nothing is to be answered."""
    settings = state.settings
    if json_too_deep(body, settings.max_json_depth):
        return _too_deep(settings.max_json_depth)
    try:
        payload = decode_json(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        return error_reply(PARSE_ERROR, f"Parse error: {exc}")
    return await handle_value(payload, state)


async def handle_value(payload: Any, state: GatewayState) -> bytes | None:
    """The JSON-RPC answer to a decoded request or batch, or None when nothing is to be
    answered."""
    settings = state.settings
    if type(payload) is not list:
        return await handle_request(payload, state)
    if not payload:
        return error_reply(INVALID_REQUEST, "Invalid Request: empty batch")
    if len(payload) > settings.max_batch:
        return error_reply(
            INVALID_REQUEST,
            f"Invalid Request: batch of {len(payload)} exceeds the limit of {settings.max_batch}",
        )
    state.count("jsonrpc_batches")
    replies = await asyncio.gather(*(handle_request(entry, state) for entry in payload))
    answered = [reply for reply in replies if reply is not None]
    if not answered:
        return None
    return b"[" + b",".join(answered) + b"]"


async def handle_request(entry: Any, state: GatewayState) -> bytes | None:
    """Answer one request object (None for a notification)."""
    if type(entry) is not dict:
        return error_reply(INVALID_REQUEST, "Invalid Request: not an object")
    notification = "id" not in entry
    id = entry.get("id")
    if not (id is None or type(id) is str or type(id) is int or type(id) is float):
        return error_reply(INVALID_REQUEST, "Invalid Request: id must be a string, number or null")
    if entry.get("jsonrpc") != "2.0":
        return error_reply(INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"', id)
    method = entry.get("method")
    if type(method) is not str:
        return error_reply(INVALID_REQUEST, "Invalid Request: method must be a string", id)
    params = entry.get("params")
    if "params" in entry and type(params) is not list and type(params) is not dict:
        return error_reply(
            INVALID_REQUEST, "Invalid Request: params must be an array or object", id
        )

    target, _, name = method.rpartition(".")
    if not target or not name or method.startswith("rpc."):
        if notification:
            return None
        return error_reply(
            METHOD_NOT_FOUND, f"Method not found: {method} (expected IDENTITY.METHOD)", id
        )
    if len(target.encode()) > _MAX_ROUTING_KEY:
        return None if notification else error_reply(UNKNOWN_AGENT, "unknown agent", id)
    if not try_acquire(state):
        if notification:
            return None
        return error_reply(OVERLOADED, overloaded_message(state), id, {"retry_after": 1})
    state.count("jsonrpc_calls")
    try:
        result = await state.mesh.call(target, name, params, state.settings.call_timeout)
    except RpcError as exc:
        state.count("jsonrpc_errors")
        if notification:
            return None
        return encode_json({"jsonrpc": "2.0", "error": exc.to_error(), "id": id})
    except Exception as exc:
        log.exception("JSON-RPC call %s failed inside the gateway", method)
        state.count("jsonrpc_errors")
        if notification:
            return None
        return error_reply(INTERNAL_ERROR, f"Internal error: {type(exc).__name__}", id)
    finally:
        release(state)
    if notification:
        return None
    return encode_json({"jsonrpc": "2.0", "result": result, "id": id})
