"""The gateway's dead-letter routes: what `munggoggo ctl dead-letters` does, over HTTP.

`GET /dead-letters` lists them (oldest first, `limit` 1..1000, `agent` narrows),
`GET /dead-letters/{id}` shows one with its headers and body, `POST /dead-letters/requeue`
and `POST /dead-letters/purge` take `{"ids": [...]}` or `{"all": true}`, each narrowed by an
optional `"agent"`. The work is `munggoggo.deadletters.DeadLetters` on the worker's own
connection (`Mesh.dead_letters()`): nothing is lost or reordered by a look, and a requeued
letter leaves the queue only once the broker confirmed its copy.

AMQP has no peek, so a scan holds what it read until it is done. Two scans at once would
each miss what the other holds (an inspect would answer 404 for a letter that is there), so
every operation holds the queue's broker-wide lock (`munggoggo.deadletter_lock`, shared with
every worker and `ctl dead-letters`); each holds a call slot meanwhile, like a call. While
the broker connection is down, or when it drops halfway, they are refused (503 / -32003,
Retry-After); so are they when another reader keeps the queue longer than the lock wait
("dead letters busy"). A scan that runs out of time, or a requeue whose copies the broker
did not confirm in time, answers 504 / -32002 with what was done in the error's `data`
(`kept` names the letters whose copy may have arrived all the same).

Bad input gets 400: a body that is not a JSON object, unknown fields, wrong field types,
both `ids` and `all` or neither, a limit out of range. An unknown id is 404 on inspect, and
listed in `missing` by requeue and purge.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from munggoggo.amqp.errors import AMQPError
from munggoggo.deadletters import (
    DeadLetter,
    DeadLetters,
    DeadLettersBusy,
    DeadLettersTimeout,
    PurgeResult,
    RequeueResult,
)
from munggoggo.rpc import TIMEOUT, UNAVAILABLE

from .http import HTTPError, Request, Response, decode_json, json_response
from .limits import OVERLOADED, RETRY_AFTER, overloaded_message, release, try_acquire
from .mesh import NotConnected
from .rest import EMPTY_BODY, json_body

if TYPE_CHECKING:
    from .types import GatewayState

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_MAX_ID = 255  # ids travel as AMQP short strings
_SELECTION_FIELDS = frozenset({"ids", "all", "agent"})


# -- routes ------------------------------------------------------------------------


async def list_dead_letters(request: Request, state: GatewayState) -> Response:
    """`GET /dead-letters?limit=50&agent=ID`: the oldest dead letters, without bodies.

    Args:
        request: the request (its query: `limit`, `agent`).
        state: the worker's state.

    Returns:
        200 `{"dead_letters": [DeadLetter.as_dict(), ...]}`, oldest first.

    Raises:
        HTTPError: 400 for a bad limit or agent, 503 when busy or not connected.
    """
    query = request.query()
    limit = _limit(query.get("limit"))
    agent = _agent(query.get("agent"))
    letters = await _run(state, lambda dead: dead.list(limit, agent=agent))
    return json_response({"dead_letters": [letter.as_dict() for letter in letters]})


async def inspect_dead_letter(request: Request, state: GatewayState) -> Response:
    """`GET /dead-letters/{id}`: one dead letter with its headers and body.

    Args:
        request: the request (its path parameter: the id).
        state: the worker's state.

    Returns:
        200 with `as_dict()`, `"headers"`, and `"body"` or `"body_base64"`.

    Raises:
        HTTPError: 404 when no dead letter has that id, 503 when busy or not connected.
    """
    (letter_id,) = request.params
    letter = None
    if len(letter_id.encode()) <= _MAX_ID:
        letter = await _run(state, lambda dead: dead.get(letter_id))
    if letter is None:
        raise HTTPError(404, f"no dead letter with id {letter_id!r}")
    return json_response(inspected(letter))


async def requeue_dead_letters(request: Request, state: GatewayState) -> Response:
    """`POST /dead-letters/requeue`: send dead letters back to the queue each came from.

    Args:
        request: the request (its JSON body: `ids` or `all`, optional `agent`).
        state: the worker's state.

    Returns:
        200 `{"requeued": [ids], "kept": {id: why}, "missing": [ids]}`.

    Raises:
        HTTPError: 400 for a bad selection, 503 when busy or not connected.
    """
    ids, all_, agent = await _selection(request, state)
    result = await _run(state, lambda dead: dead.requeue(ids, agent=agent, all=all_))
    state.count("dead_letters_requeued", len(result.requeued))
    return json_response(_requeued(result))


async def purge_dead_letters(request: Request, state: GatewayState) -> Response:
    """`POST /dead-letters/purge`: delete dead letters for good.

    Args:
        request: the request (its JSON body: `ids` or `all`, optional `agent`).
        state: the worker's state.

    Returns:
        200 `{"purged": n, "ids": [ids], "missing": [ids], "left": n | null}` (`ids` is
        empty when the whole queue was purged, `all` without `agent`, and `left` says how
        many dead letters it held right after; null otherwise).

    Raises:
        HTTPError: 400 for a bad selection, 503 when busy or not connected.
    """
    ids, all_, agent = await _selection(request, state)
    result = await _run(state, lambda dead: dead.purge(ids, agent=agent, all=all_))
    state.count("dead_letters_purged", result.purged)
    return json_response(_purged(result))


# -- answers -----------------------------------------------------------------------


def inspected(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as `GET /dead-letters/{id}` shows it: `as_dict()` plus its headers
    and its body: `"body"` (its JSON value, else its text when it is UTF-8) or
    `"body_base64"`.

    Header values travel as JSON: byte arrays base64, decimals [scale, value].

    Args:
        letter: the dead letter.

    Returns:
        The JSON-friendly dict.
    """
    shown = letter.as_dict()
    shown["headers"] = letter.headers
    body = letter.body
    try:
        shown["body"] = decode_json(body)
        return shown
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        shown["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        shown["body_base64"] = base64.b64encode(body).decode("ascii")
    return shown


def _requeued(result: RequeueResult) -> dict[str, Any]:
    return {"requeued": result.requeued, "kept": result.kept, "missing": result.missing}


def _purged(result: PurgeResult) -> dict[str, Any]:
    return {
        "purged": result.purged,
        "ids": result.ids,
        "missing": result.missing,
        "left": result.left,
    }


# -- input -------------------------------------------------------------------------


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise HTTPError(400, f"limit must be a whole number, got {raw!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise HTTPError(400, f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def _agent(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise HTTPError(400, "agent must be an agent's identity (a non-empty string)")
    return value


async def _selection(
    request: Request, state: GatewayState
) -> tuple[list[str] | None, bool, str | None]:
    """`(ids, all, agent)` from a requeue or purge body; 400 unless exactly one of `ids`
    (a non-empty list of ids) and `"all": true` is there."""
    body = await json_body(request, state)
    if body is EMPTY_BODY:
        raise HTTPError(400, 'a JSON body is required: {"ids": [...]} or {"all": true}')
    if type(body) is not dict:
        raise HTTPError(400, 'the body must be a JSON object: {"ids": [...]} or {"all": true}')
    unknown = sorted(set(body) - _SELECTION_FIELDS)
    if unknown:
        raise HTTPError(400, f"unknown field(s) {', '.join(unknown)}: expected ids, all, agent")
    ids = body.get("ids")
    all_ = body.get("all", False)
    if ids is not None and (type(ids) is not list or not all(type(i) is str and i for i in ids)):
        raise HTTPError(400, "ids must be a list of dead-letter ids (non-empty strings)")
    if type(all_) is not bool:
        raise HTTPError(400, "all must be true or false")
    if ids is not None and all_:
        raise HTTPError(400, 'choose dead letters either by "ids" or with "all": true, not both')
    if not ids and not all_:
        raise HTTPError(400, 'choose dead letters: {"ids": [...]} (at least one) or {"all": true}')
    return ids, all_, _agent(body.get("agent"))


# -- running -----------------------------------------------------------------------


async def _run(state: GatewayState, operation: Callable[[DeadLetters], Awaitable[T]]) -> T:
    """Run one dead-letter operation under a call slot and the queue's lock; 503 at once
    when busy or while the broker connection is down (module docstring)."""
    if not try_acquire(state):
        raise HTTPError(503, overloaded_message(state), code=OVERLOADED, headers=RETRY_AFTER)
    try:
        try:
            dead = state.mesh.dead_letters()
        except NotConnected as exc:
            raise HTTPError(503, str(exc), code=UNAVAILABLE, headers=RETRY_AFTER) from None
        try:
            return await operation(dead)
        except DeadLettersBusy as exc:
            raise HTTPError(503, str(exc), code=UNAVAILABLE, headers=RETRY_AFTER) from None
        except DeadLettersTimeout as exc:
            data: dict[str, Any] | None = None
            if isinstance(exc.result, RequeueResult):
                data = _requeued(exc.result)
            elif isinstance(exc.result, PurgeResult):
                data = _purged(exc.result)
            raise HTTPError(504, str(exc), code=TIMEOUT, data=data) from None
        except AMQPError as exc:  # the connection dropped halfway; the mesh reconnects
            raise HTTPError(
                503,
                f"not connected to the broker ({exc}); retry later",
                code=UNAVAILABLE,
                headers=RETRY_AFTER,
            ) from None
    finally:
        release(state)
