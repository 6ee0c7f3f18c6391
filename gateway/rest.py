"""The REST face of the mesh: agents, their methods and behaviours, topics, direct messages
and broadcasts, health. (The dead-letter routes are gateway/deadletters.py.)

Every route answers JSON. RPC errors become HTTP statuses with the error's `code` and
`message` in the body (`{"error": {"code", "message", "data"}}`):
-32601 unknown method and -32001 unknown agent -> 404, -32602 invalid params -> 422,
-32002 timeout -> 504, -32003 gateway not connected, -32005 agent unreachable right now and
-32000 overload -> 503 with `Retry-After`, an unknown behaviour (-32004, behaviour routes)
-> 404, anything else the agent answered -> 502. A publish the broker cannot take (its
connection down: at once; no room within `publish_timeout`) -> 503 with -32003 and
`Retry-After`; a routing key with `*` or `#` -> 400, as the WebSocket `publish` refuses it.

A message (topic publish, direct send, broadcast) is the request body: a `text/plain` body is
sent as text (content type text/plain, the agent's `msg.decode()` is a str), any other body
must be JSON and is sent as its value, whatever its Content-Type says. A direct message
waits for the broker's verdict: an agent without an inbox -> 404 / -32001 (the broker returned
it), no confirm within the call timeout -> 504 / -32002 (it may still arrive).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
from .publisher import PublishRefused, VerdictTimeout
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
EMPTY_BODY = object()  # what json_body answers for an empty body


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
    """The decoded JSON body, or `EMPTY_BODY` for an empty one: 413, 415 or 400 if refused."""
    settings = state.settings
    body = await request.body(settings.max_body_bytes)
    if not body.strip():
        return EMPTY_BODY
    if not request.has_json_body():
        raise HTTPError(415, "Content-Type must be application/json")
    if json_too_deep(body, settings.max_json_depth):
        raise HTTPError(400, f"JSON nested deeper than {settings.max_json_depth} levels")
    try:
        return decode_json(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HTTPError(400, f"invalid JSON: {exc}") from None


# -- agents ------------------------------------------------------------------------


async def discover(state: GatewayState, raw_wait: str) -> list[dict[str, Any]]:
    """The running agents' `describe()` answers, waiting `raw_wait` seconds (0 to 5) for
    them, under the worker's call limits.

    Args:
        state: the worker's state (its mesh and limits).
        raw_wait: the `wait` query parameter as given.

    Returns:
        One `describe()` answer per agent.

    Raises:
        HTTPError: 400 for a wait that is no number or out of range, 503 when no call slot
            is free.
    """
    try:
        wait = float(raw_wait)
    except ValueError:
        raise HTTPError(400, f"wait must be a number of seconds, got {raw_wait!r}") from None
    if not 0 <= wait <= 5:
        raise HTTPError(400, "wait must be between 0 and 5 seconds")
    # Discovery broadcasts to every agent: it takes a call slot like any call.
    if not try_acquire(state):
        raise HTTPError(503, overloaded_message(state), code=OVERLOADED, headers=RETRY_AFTER)
    try:
        return await state.mesh.peers(wait)
    finally:
        release(state)


async def list_agents(request: Request, state: GatewayState) -> Response:
    return json_response(await discover(state, request.query().get("wait", "0.3")))


async def agent_status(request: Request, state: GatewayState) -> Response:
    (identity,) = request.params
    return json_response(await call_agent(state, identity, "status", None))


async def call_method(request: Request, state: GatewayState) -> Response:
    identity, method = request.params
    params = await json_body(request, state)
    if params is EMPTY_BODY:
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


# -- messages: topics, direct messages, broadcasts ----------------------------------

_TEXT = b"text/plain"


async def message_body(request: Request, state: GatewayState) -> Any:
    """The message a publish, send or broadcast carries: a str for a `text/plain` body,
    else the body's JSON value (whatever the Content-Type). 413, 415 (a charset Python does
    not know) or 400 (empty, not JSON, nested too deep, not in its charset) if refused."""
    settings = state.settings
    body = await request.body(settings.max_body_bytes)
    media_type, charset = _content_type(request.header(b"content-type"))
    if media_type == _TEXT:
        if not body:
            raise HTTPError(400, "a body is required (the message)")
        try:
            return body.decode(charset)
        except LookupError:
            raise HTTPError(415, f"unknown charset {charset!r} (use utf-8)") from None
        except UnicodeDecodeError:
            raise HTTPError(400, f"the text/plain body is not valid {charset}") from None
    if not body.strip():
        raise HTTPError(400, "a body is required (the message: JSON, or text/plain text)")
    if json_too_deep(body, settings.max_json_depth):
        raise HTTPError(400, f"JSON nested deeper than {settings.max_json_depth} levels")
    try:
        return decode_json(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HTTPError(
            400, f"invalid JSON: {exc} (send text with Content-Type: text/plain)"
        ) from None


def _content_type(value: bytes | None) -> tuple[bytes, str]:
    """The media type (lower case) and the charset (default utf-8) of a Content-Type."""
    if value is None:
        return b"", "utf-8"
    media_type, _, params = value.partition(b";")
    charset = "utf-8"
    for param in params.split(b";"):
        name, _, raw = param.partition(b"=")
        if name.strip().lower() == b"charset":
            charset = raw.strip().strip(b'"').decode("latin-1") or "utf-8"
    return media_type.strip().lower(), charset


async def _hand_over(
    state: GatewayState, what: str, publish: Callable[[], Awaitable[None]]
) -> None:
    """Publish under the worker's limits: a publish may wait for room (publish_timeout)
    or for the broker's verdict, holding a slot like a call meanwhile."""
    if not try_acquire(state):
        raise HTTPError(503, overloaded_message(state), code=OVERLOADED, headers=RETRY_AFTER)
    try:
        await publish()
    except PublishRefused as exc:
        state.count("publish_refused")
        raise HTTPError(503, str(exc), code=UNAVAILABLE, headers=RETRY_AFTER) from None
    except ValueError as exc:  # the message cannot go at all (too large properties, ...)
        raise HTTPError(400, f"cannot {what}: {exc}") from None
    finally:
        release(state)


async def publish_topic(request: Request, state: GatewayState) -> Response:
    (routing_key,) = request.params
    problem = topic_problem(routing_key)  # the WebSocket publish's rule too
    if problem:
        raise HTTPError(400, problem)
    body = await message_body(request, state)
    await _hand_over(
        state, f"publish to {routing_key!r}", lambda: state.mesh.publish(routing_key, body)
    )
    state.count("published")
    return json_response({"published": True, "routing_key": routing_key}, 202)


async def send_message(request: Request, state: GatewayState) -> Response:
    """`POST /agents/{identity}/send`: a direct message to the agent's inbox.

    Args:
        request: the request (path parameter: the identity; body: the message).
        state: the worker's state.

    Returns:
        202 `{"sent": true, "to": identity}` once the broker confirmed it in the inbox.

    Raises:
        HTTPError: 400/413/415 for the body, 404 (-32001) without such an inbox, 503
            when busy or the broker cannot take it, 504 (-32002) without a confirm in time.
    """
    (identity,) = request.params
    body = await message_body(request, state)
    timeout = state.settings.call_timeout
    try:
        await _hand_over(
            state,
            f"send to agent {identity!r}",
            lambda: state.mesh.send(identity, body, verdict_timeout=timeout),
        )
    except RpcError as exc:  # only -32001: no inbox of that name
        raise HTTPError(404, exc.message, code=exc.code) from None
    except VerdictTimeout as exc:
        raise HTTPError(504, f"message to agent {identity!r}: {exc}", code=TIMEOUT) from None
    state.count("sent")
    return json_response({"sent": True, "to": identity}, 202)


async def broadcast(request: Request, state: GatewayState) -> Response:
    """`POST /broadcast`: a message to every agent's inbox (`munggoggo.fanout`).

    Args:
        request: the request (body: the message).
        state: the worker's state.

    Returns:
        202 `{"broadcast": true}` once the broker has it in hand.

    Raises:
        HTTPError: 400/413/415 for the body, 503 when busy or the broker cannot take it.
    """
    body = await message_body(request, state)
    await _hand_over(state, "broadcast", lambda: state.mesh.broadcast(body))
    state.count("broadcast")
    return json_response({"broadcast": True}, 202)


# -- health and metrics ------------------------------------------------------------


async def healthz(request: Request, state: GatewayState | None) -> Response:
    return json_response({"status": "alive"})


async def readyz(request: Request, state: GatewayState | None) -> Response:
    if state is not None and state.mesh.connected:
        return json_response({"status": "ready"})
    return json_response({"status": "not ready: not connected to the broker"}, 503)


async def metrics_endpoint(request: Request, state: GatewayState) -> Response:
    return Response(200, metrics.render(state), metrics.CONTENT_TYPE)
