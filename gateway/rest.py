"""The REST face of the mesh: agents, their methods and behaviours, topics, health.

Every route answers JSON. RPC errors become HTTP statuses with the error's `code` and
`message` in the body (`{"error": {"code", "message", "data"}}`):
-32601 unknown method and -32001 unknown agent -> 404, -32602 invalid params -> 422,
-32002 timeout -> 504, -32003 gateway not connected, -32005 agent unreachable right now and
-32000 overload -> 503 with `Retry-After`, an unknown behaviour (-32004, behaviour routes)
-> 404, anything else the agent answered -> 502. A publish the broker cannot take (its
connection down: at once; no room within `publish_timeout`) -> 503 with -32003 and
`Retry-After`; a routing key with `*` or `#` -> 400, as the WebSocket `publish` refuses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from munggoggo.rpc import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    TIMEOUT,
    UNAVAILABLE,
    UNKNOWN_AGENT,
    UNREACHABLE,
    RpcError,
    RpcTimeout,
)

from . import metrics
from .http import HTTPError, Request, Response, decode_json, json_response
from .limits import OVERLOADED, RETRY_AFTER, json_too_deep, overloaded_message, release, try_acquire
from .publisher import PublishRefused
from .topics import topic_problem

if TYPE_CHECKING:
    from .types import GatewayState

UNKNOWN_BEHAVIOUR = -32004  # what Agent.start_behaviour / stop_behaviour raise
_MAX_NAME = 255  # identities and routing keys are AMQP short strings
_STATUS_FOR_CODE = {
    METHOD_NOT_FOUND: 404,
    UNKNOWN_AGENT: 404,
    INVALID_PARAMS: 422,
    TIMEOUT: 504,
    UNAVAILABLE: 503,
    UNREACHABLE: 503,  # the connection or the target is coming back: retry
}
_EMPTY = object()


# -- helpers ---------------------------------------------------------------------


def status_for(error: RpcError, not_found: tuple[int, ...] = ()) -> int:
    if isinstance(error, RpcTimeout):
        return 504
    if error.code in not_found:
        return 404
    return _STATUS_FOR_CODE.get(error.code, 502)


async def call_agent(
    state: GatewayState,
    identity: str,
    method: str,
    params: list[Any] | dict[str, Any] | None,
    not_found: tuple[int, ...] = (),
) -> Any:
    """Call through the mesh under the worker's limits; RPC errors become HTTPError."""
    if not identity or len(identity.encode()) > _MAX_NAME:
        raise HTTPError(404, f"unknown agent {identity!r}", code=UNKNOWN_AGENT)
    if not try_acquire(state):
        raise HTTPError(503, overloaded_message(state), code=OVERLOADED, headers=RETRY_AFTER)
    state.count("rest_calls")
    try:
        return await state.mesh.call(identity, method, params, state.settings.call_timeout)
    except RpcError as exc:
        status = status_for(exc, not_found)
        raise HTTPError(
            status,
            exc.message,
            code=exc.code,
            data=exc.data,
            headers=RETRY_AFTER if status == 503 else None,
        ) from None
    finally:
        release(state)


async def json_body(request: Request, state: GatewayState) -> Any:
    """The decoded JSON body, or `_EMPTY` for an empty one: 413, 415 or 400 if refused."""
    settings = state.settings
    body = await request.body(settings.max_body_bytes)
    if not body.strip():
        return _EMPTY
    if not request.has_json_body():
        raise HTTPError(415, "Content-Type must be application/json")
    if json_too_deep(body, settings.max_json_depth):
        raise HTTPError(400, f"JSON nested deeper than {settings.max_json_depth} levels")
    try:
        return decode_json(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HTTPError(400, f"invalid JSON: {exc}") from None


# -- agents ------------------------------------------------------------------------


async def list_agents(request: Request, state: GatewayState) -> Response:
    raw = request.query().get("wait", "0.3")
    try:
        wait = float(raw)
    except ValueError:
        raise HTTPError(400, f"wait must be a number of seconds, got {raw!r}") from None
    if not 0 <= wait <= 5:
        raise HTTPError(400, "wait must be between 0 and 5 seconds")
    # Discovery broadcasts to every agent: it takes a call slot like any call.
    if not try_acquire(state):
        raise HTTPError(503, overloaded_message(state), code=OVERLOADED, headers=RETRY_AFTER)
    try:
        peers = await state.mesh.peers(wait)
    finally:
        release(state)
    return json_response(peers)


async def agent_status(request: Request, state: GatewayState) -> Response:
    (identity,) = request.params
    return json_response(await call_agent(state, identity, "status", None))


async def call_method(request: Request, state: GatewayState) -> Response:
    identity, method = request.params
    params = await json_body(request, state)
    if params is _EMPTY:
        params = None
    elif type(params) is not list and type(params) is not dict:
        raise HTTPError(
            422,
            "the body must be a JSON array (params by position), an object (params by name) "
            "or empty",
            code=INVALID_PARAMS,
        )
    return json_response(await call_agent(state, identity, method, params))


async def start_behaviour(request: Request, state: GatewayState) -> Response:
    return await _behaviour(request, state, "start_behaviour")


async def stop_behaviour(request: Request, state: GatewayState) -> Response:
    return await _behaviour(request, state, "stop_behaviour")


async def _behaviour(request: Request, state: GatewayState, control: str) -> Response:
    identity, name = request.params
    result = await call_agent(state, identity, control, [name], not_found=(UNKNOWN_BEHAVIOUR,))
    return json_response(result)


# -- topics ------------------------------------------------------------------------


async def publish_topic(request: Request, state: GatewayState) -> Response:
    (routing_key,) = request.params
    problem = topic_problem(routing_key)  # the WebSocket publish's rule too
    if problem:
        raise HTTPError(400, problem)
    body = await json_body(request, state)
    if body is _EMPTY:
        raise HTTPError(400, "a JSON body is required (the message to publish)")
    # A publish may wait (publish_timeout) for room: it holds a slot like a call meanwhile.
    if not try_acquire(state):
        raise HTTPError(503, overloaded_message(state), code=OVERLOADED, headers=RETRY_AFTER)
    try:
        await state.mesh.publish(routing_key, body)
    except PublishRefused as exc:
        state.count("publish_refused")
        raise HTTPError(503, str(exc), code=UNAVAILABLE, headers=RETRY_AFTER) from None
    except ValueError as exc:  # the message cannot go at all (too large properties, ...)
        raise HTTPError(400, f"cannot publish to {routing_key!r}: {exc}") from None
    finally:
        release(state)
    state.count("published")
    return json_response({"published": True, "routing_key": routing_key}, 202)


# -- health and metrics ------------------------------------------------------------


async def healthz(request: Request, state: GatewayState | None) -> Response:
    return json_response({"status": "alive"})


async def readyz(request: Request, state: GatewayState | None) -> Response:
    if state is not None and state.mesh.connected:
        return json_response({"status": "ready"})
    return json_response({"status": "not ready: not connected to the broker"}, 503)


async def metrics_endpoint(request: Request, state: GatewayState) -> Response:
    return Response(200, metrics.render(state), metrics.CONTENT_TYPE)
