"""The gateway's limits, one worker at a time: calls in flight, body size, JSON nesting.

Every limit answers the client at once instead of queueing or crashing:
* calls in flight above `settings.max_in_flight`: HTTP 503 + `Retry-After: 1`, or the
  JSON-RPC server error -32000 (the call is never sent to the mesh);
* a body above `settings.max_body_bytes`: HTTP 413, decided from Content-Length when the
  client declares it, else while reading (reading stops at the limit);
* a body still arriving `settings.body_timeout` seconds after the handler began reading
  it (a client that trickles it in, or stops sending): HTTP 408 and the connection closed.
  One `BodyDeadlines` per worker tracks the reads in progress (a dict entry each, no timer
  per request) and a watchdog task, alive only while reads are in progress, cancels the
  overdue ones;
* JSON nested deeper than `settings.max_json_depth`: HTTP 400 / -32600, decided by a
  pre-scan of the brackets outside strings before the body is decoded;
* the per-call timeout (`settings.call_timeout`) is handed to the mesh with each call and
  the batch size (`settings.max_batch`) is checked by the JSON-RPC handler.
"""

from __future__ import annotations

import asyncio
from itertools import accumulate
from time import monotonic
from typing import TYPE_CHECKING, Any

from .types import Receive

if TYPE_CHECKING:
    from .types import GatewayState

OVERLOADED = -32000  # JSON-RPC: implementation-defined server error
RETRY_AFTER = [(b"retry-after", b"1")]


class BodyTooLarge(ValueError):
    pass


class ClientDisconnected(Exception):
    """The client went away while we read its request."""


class BodyTimeout(Exception):
    """The request body did not arrive within the time allowed."""


# -- calls in flight -----------------------------------------------------------------


def try_acquire(state: GatewayState) -> bool:
    """Take a call slot of this worker; False when all `max_in_flight` are taken."""
    if state.in_flight >= state.settings.max_in_flight:
        state.count("overloaded")
        return False
    state.call_started()
    return True


def release(state: GatewayState) -> None:
    """Give back a call slot taken by `try_acquire`."""
    state.call_finished()


def overloaded_message(state: GatewayState) -> str:
    """The sentence a refused call gets when every call slot is taken."""
    return (
        f"server overloaded: {state.settings.max_in_flight} calls in flight on this "
        "gateway worker; retry later"
    )


# -- request body ------------------------------------------------------------------


class BodyDeadlines:
    """Per worker: cut off request bodies that take longer than `timeout` seconds."""

    def __init__(self, timeout: float) -> None:
        """Args:
        timeout: seconds a body may take, from the first read on; 0 or less: no limit.
        """
        self.timeout = timeout
        # Checked this often: a read is cut off at most a quarter of the timeout late.
        self._interval = min(1.0, max(0.05, timeout / 4))
        self._reading: dict[asyncio.Task[Any], float] = {}  # task -> deadline (monotonic)
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def begin(self) -> asyncio.Task[Any] | None:
        """The current task starts reading a body. Returns the token for `end`."""
        if self.timeout <= 0:
            return None
        task = asyncio.current_task()
        if task is None:
            return None
        self._reading[task] = monotonic() + self.timeout
        if self._watchdog is None:
            self._watchdog = task.get_loop().create_task(self._watch())
        return task

    def end(self, task: asyncio.Task[Any] | None) -> bool:
        """The read of `begin` is over. Returns True when it was cut off (the watchdog
        cancelled the task: the caller turns that cancellation into `BodyTimeout`)."""
        if task is None:
            return False
        self._reading.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _watch(self) -> None:
        try:
            while self._reading:
                await asyncio.sleep(self._interval)
                now = monotonic()
                for task, deadline in list(self._reading.items()):
                    if deadline <= now:
                        del self._reading[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._watchdog = None


async def read_body(
    receive: Receive,
    limit: int,
    declared: bytes | None = None,
    deadlines: BodyDeadlines | None = None,
) -> bytes:
    """Read an ASGI request body of at most `limit` bytes.

    Args:
        receive: the ASGI receive callable.
        limit: the most bytes accepted.
        declared: the Content-Length header's value, if any.
        deadlines: the worker's `BodyDeadlines`; None: no time limit.

    Returns:
        The body.

    Raises:
        BodyTooLarge: past `limit` (without reading the rest).
        ClientDisconnected: the client left.
        BodyTimeout: the body took longer than the deadlines allow.
    """
    if deadlines is None:
        return await _read_body(receive, limit, declared)
    task = deadlines.begin()
    try:
        body = await _read_body(receive, limit, declared)
    except asyncio.CancelledError:
        if deadlines.end(task):
            raise BodyTimeout(
                f"the request body did not arrive within {deadlines.timeout:g} s"
            ) from None
        raise
    except BaseException:
        deadlines.end(task)
        raise
    deadlines.end(task)
    return body


async def _read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    size = -1
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            size = -1  # not a number: the server's own framing decides; we count below
        if size > limit:
            raise BodyTooLarge(f"request body of {size} bytes exceeds the limit of {limit}")
    message = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if len(body) <= limit and (len(body) == size or not message.get("more_body", False)):
        # The common case: one message. Once the declared length is complete, waiting for
        # the server's empty closing message would only cost another await.
        return body
    chunks = [body]
    total = len(body)
    while True:
        if total > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        if total == size or not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        total += len(chunk)
        chunks.append(chunk)


# -- JSON nesting ------------------------------------------------------------------

# The pre-scan keeps only what decides the nesting: quotes and brackets.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
# Openers become +1 and closers -1 as signed bytes, so a running sum is the depth.
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_OPEN, _CLOSE = b"\x01", b"\xff"


def json_too_deep(body: bytes, max_depth: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than `max_depth`.

    Every step is a C-level pass over bytes; no Python loop per character:
    * a body with at most `max_depth` opening brackets cannot be too deep (the usual case);
    * escaped backslashes and quotes are dropped, then everything but quotes and brackets,
      then what lies between quotes: the brackets outside strings remain;
    * a run of `max_depth + 1` openers answers at once (the typical attack); otherwise the
      innermost pairs are removed (one level off every deepest branch, usually most of the
      brackets) and the depth of the rest is a running sum.
    Invalid JSON may get either answer; the decoder reports it.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    if b"\\" in body:
        # Left to right like the JSON lexer: `\\` first, so `\\"` still ends a string.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = body.translate(None, _NOT_STRUCTURE)
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    steps = structure.translate(_BRACKET_STEPS)
    if _OPEN * (max_depth + 1) in steps:
        return True
    inner = steps.replace(_OPEN + _CLOSE, b"")
    if not inner:
        return bool(steps) and max_depth < 1
    return max(accumulate(memoryview(inner).cast("b"))) + 1 > max_depth
