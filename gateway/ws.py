"""WebSocket `/ws`: live topic subscriptions, publishing and JSON-RPC over one socket.

Plain ASGI websocket protocol, JSON text frames. Any client frame may carry an `"id"`; the
acknowledgement or error it causes echoes it.

Client -> server:
    {"op": "subscribe", "topic": "sensors.*"}       ack {"op": "subscribed", "topic": ...}
    {"op": "unsubscribe", "topic": "sensors.*"}     ack {"op": "unsubscribed", "topic": ...}
    {"op": "subscribe", "presence": true}           ack {"op": "subscribed", "presence": true}
        then a "started" presence frame for each agent known to run, then the changes
    {"op": "unsubscribe", "presence": true}         ack {"op": "unsubscribed", "presence": true}
        presence events: which agents of the mesh start and stop (core/presence.py)
    {"op": "publish", "topic": "sensors.t1", "body": <any JSON>, "headers": {...}}
        no ack (a publish is fire-and-forget), unless it carries an "id": {"op": "published"}
        once the broker took it. A publish the broker cannot take now (its connection down,
        or no room within `settings.publish_timeout`) gets an error frame; one that waits
        for room holds none of the client's other frames (gateway/publisher.py: its
        publishes wait in order, at most `ws_buffer` of them and `ws_buffer_bytes`)
    {"jsonrpc": "2.0", "method": "IDENTITY.METHOD", "params": ..., "id": ...}
        the JSON-RPC 2.0 response, by the rules of POST /jsonrpc (gateway/jsonrpc.py: the
        method is split at the last dot; a batch gets a list of responses; notifications
        get none; -32000 when the worker's `max_in_flight` calls are all taken)

Server -> client:
    {"op": "message", "topic": routing key, "sender": app_id, "body": ...}
        body: the decoded JSON (or msgpack) value, else the text; a body that is not UTF-8
        comes base64-encoded with "encoding": "base64". A message matching several of a
        client's patterns is sent to it once.
    {"op": "presence", "identity": "ping-1", "state": "started"}   (or "stopped")
        to a client subscribed to presence: an agent started, or stopped (cleanly, or found
        gone: docs/how-to/presence.md); the gateway workers' own client agents never appear
    {"op": "dropped", "count": n}   where messages were dropped (once per burst)
    {"op": "error", "error": "a sentence for a person"}

The frames themselves, and how a client frame is decoded, are gateway/frames.py.

Each client has a bounded buffer (`settings.ws_buffer` messages and `settings.ws_buffer_bytes`
bytes of them) drained by its own sender task, so a slow reader never stalls the mesh or the
other clients: when its buffer is full, the newest messages are dropped (docs/decisions.md
says why). A message larger than the byte bound still goes out when nothing else waits.
Replies are never dropped; a client that stops reading them stops being read (TCP
backpressure on that socket only).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET

from munggoggo.message import Message

from . import jsonrpc
from .cors import describe
from .frames import (
    EXAMPLE,
    BadFrame,
    Call,
    Dropped,
    ErrorFrame,
    PresenceFrame,
    PresenceSubscribed,
    PresenceUnsubscribed,
    Publish,
    Published,
    ServerFrame,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    decode_frame,
    encode,
    encoded_message,
    message_frame,
)
from .guard import Answer
from .http import JSON, Response, decode_json, error_response
from .limits import OVERLOADED, json_too_deep
from .publisher import PublishQueue, PublishRefused
from .topics import pattern_problem, topic_problem
from .types import Receive, Scope, Send

if TYPE_CHECKING:
    from .types import GatewayState

log = logging.getLogger("munggoggo.gateway.ws")

# encoded_message and message_frame live in gateway/frames.py; they are this module's names too.
__all__ = [
    "WebSocketClient",
    "encoded_message",
    "message_frame",
    "origin_allowed",
    "refuse",
    "websocket_endpoint",
]


def origin_allowed(scope: Scope, state: GatewayState) -> bool:
    """Whether to accept a connection from this page origin (the `origin` header).

    Accepted: no Origin (not a browser), a page served by the gateway itself, or an origin
    in `settings.cors_origins` (gateway/cors.py). Browsers do not apply CORS to WebSockets,
    so without this check any web page a user visits could use their access to the
    gateway. Returning False refuses the handshake (403)."""
    return state.guard.websocket_origin_allowed(scope)


async def websocket_endpoint(
    scope: Scope, receive: Receive, send: Send, state: GatewayState
) -> None:
    """The ASGI websocket handler for `/ws` (`Endpoint` of gateway/types.py)."""
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    misdirected = state.guard.websocket_host_refusal(scope)  # DNS rebinding: gateway/hosts.py
    if misdirected is not None:
        await refuse(scope, send, misdirected.response())
        return
    if not origin_allowed(scope, state):
        origin = dict(scope["headers"]).get(b"origin", b"")
        message = (
            f"origin {describe(origin)} may not open this WebSocket: it is neither the "
            "gateway's own nor in its CORS allow-list"
        )
        await refuse(scope, send, error_response(403, 403, message))
        return
    try:
        key = state.guard.admit_websocket(scope)  # credentials, then the rate limit
    except Answer as answer:
        await refuse(scope, send, answer.response())
        return
    await send({"type": "websocket.accept"})
    state.count("ws_connected")
    state.metrics.ws_clients.inc()
    client = WebSocketClient(state, send, key)
    try:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                await client.handle_frame(text if text is not None else event.get("bytes"))
            elif kind == "websocket.disconnect":
                break
    finally:
        await client.close()
        state.count("ws_disconnected")
        state.metrics.ws_clients.dec()


async def refuse(scope: Scope, send: Send, response: Response) -> None:
    """Deny the handshake: the HTTP answer itself where the server lets us send one (status,
    JSON reason, WWW-Authenticate or Retry-After), else a close before accepting, which the
    server turns into 403 (the code 1008, policy violation, is what ASGI lets us say)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(b"content-type", JSON), *(response.headers or ())]
    await send(
        {"type": "websocket.http.response.start", "status": response.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": response.body})


class _Reply(str):
    """A frame that answers the client (ack, error, RPC response): never dropped."""


class _Gap:
    """Where messages were dropped: sent as {"op": "dropped", "count": n} in their place."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class WebSocketClient:
    """One connected socket: its subscriptions, its outgoing buffer and its sender task."""

    def __init__(self, state: GatewayState, send: Send, key: Hashable = None) -> None:
        self.state = state
        self.settings = state.settings
        self._send = send
        # Frames take from the same rate-limit bucket as the client's HTTP requests.
        self._limiter = state.guard.limiter
        self._key = key
        # Outgoing frames in order: message frames (str), replies (_Reply) and gaps (_Gap).
        self._out: deque[str | _Gap] = deque()
        self._limit = max(1, self.settings.ws_buffer)
        self._byte_limit = max(1, self.settings.ws_buffer_bytes)
        self._buffered = 0  # message frames in _out, including the one being written
        self._buffered_bytes = 0  # their encoded size
        self._sizes: deque[int] = deque()  # the size of each message frame in _out, in order
        self._replies = 0  # replies in _out
        self._gap: _Gap | None = None  # the open burst of drops, if any
        self._last: Message | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._subscriptions: dict[str, int] = {}  # pattern -> Mesh token
        self._presence: int | None = None  # the Mesh token of its presence subscription
        self._calls: set[asyncio.Task[None]] = set()
        # Publishes waiting for the broker, in order, bounded like the outgoing buffer.
        publisher = state.mesh.publisher
        self._publishes = (
            None
            if publisher is None
            else PublishQueue(
                publisher,
                self._published,
                max_messages=self._limit,
                max_bytes=self._byte_limit,
            )
        )
        self.closed = False
        self.dropped = 0
        self.sent = 0
        self._sender = asyncio.get_running_loop().create_task(self._pump())

    # -- client frames ---------------------------------------------------------

    async def handle_frame(self, data: str | bytes | None) -> None:
        """Answer one client frame (its text, or its bytes)."""
        if not self._room.is_set():
            await self._room.wait()
        if data is None:
            return self._error("an empty frame: send a JSON object such as " + EXAMPLE)
        body = data.encode() if isinstance(data, str) else data
        settings = self.settings
        if self._limiter is not None:
            wait = self._limiter.take(self._key)
            if wait:
                return self._rate_limited(body, wait)
        if len(body) > settings.max_body_bytes:
            return self._error(
                f"a frame of {len(body)} bytes is larger than the limit of "
                f"{settings.max_body_bytes} bytes"
            )
        if json_too_deep(body, settings.max_json_depth):
            return self._error(f"JSON nested deeper than {settings.max_json_depth} levels")
        try:
            frame = decode_frame(body)
        except BadFrame as bad:
            return self._error(bad.message, bad.id)
        match frame:
            case Call():
                self._start_call(frame.body)
            case Subscribe():
                await self._subscribe(frame)
            case Unsubscribe():
                await self._unsubscribe(frame)
            case Publish():
                await self._publish(frame)
        return None

    async def _subscribe(self, frame: Subscribe) -> None:
        if frame.presence is not UNSET:
            return self._subscribe_presence(frame)
        topic = frame.topic
        problem = pattern_problem(topic)
        if problem:
            return self._error(problem, frame.id)
        assert isinstance(topic, str)
        if topic not in self._subscriptions:
            limit = self.settings.ws_max_subscriptions
            if len(self._subscriptions) >= limit:
                return self._error(
                    f"too many subscriptions: at most {limit} patterns per connection; "
                    "unsubscribe from one first (or use a wider pattern with * or #)",
                    frame.id,
                )
            try:
                token = await self.state.mesh.subscribe(topic, self._deliver)
            except Exception as exc:
                log.warning("subscribe %r failed: %s", topic, exc)
                return self._error(f"cannot subscribe to {topic!r} now: {exc}", frame.id)
            if self.closed:  # the socket went away while the broker was binding
                await self.state.mesh.unsubscribe(token)
                return None
            self._subscriptions[topic] = token
        self._reply(Subscribed(topic, frame.id))

    def _subscribe_presence(self, frame: Subscribe) -> None:
        problem = _presence_problem(frame)
        if problem:
            return self._error(problem, frame.id)
        mesh = self.state.mesh
        self._reply(PresenceSubscribed(True, frame.id))
        if self._presence is None:
            self._presence = mesh.subscribe_presence(self._deliver_presence)
            for identity in mesh.running_agents:  # what is known so far, then the changes
                self._deliver_presence(identity, "started")
        return None

    def _unsubscribe_presence(self, frame: Unsubscribe) -> None:
        problem = _presence_problem(frame)
        if problem:
            return self._error(problem, frame.id)
        if self._presence is None:
            return self._error("not subscribed to presence", frame.id)
        self.state.mesh.unsubscribe_presence(self._presence)
        self._presence = None
        self._reply(PresenceUnsubscribed(True, frame.id))
        return None

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        if frame.presence is not UNSET:
            return self._unsubscribe_presence(frame)
        topic = frame.topic
        if not isinstance(topic, str):
            return self._error('unsubscribe needs the "topic" pattern you subscribed to', frame.id)
        token = self._subscriptions.pop(topic, None)
        if token is None:
            subscribed = ", ".join(repr(t) for t in self._subscriptions) or "nothing"
            return self._error(
                f"not subscribed to {topic!r} (subscribed to: {subscribed})", frame.id
            )
        await self.state.mesh.unsubscribe(token)
        self._reply(Unsubscribed(topic, frame.id))

    async def _publish(self, frame: Publish) -> None:
        topic = frame.topic
        problem = topic_problem(topic)  # the REST publish's rule too
        if problem:
            return self._error(problem, frame.id)
        if frame.body is UNSET:
            return self._error('publish needs a "body" (any JSON value)', frame.id)
        headers = frame.headers
        if headers is not None and not isinstance(headers, dict):
            return self._error('"headers" must be a JSON object', frame.id)
        assert isinstance(topic, str)
        publishes = self._publishes
        if publishes is None:  # the mesh never started: nothing to publish with
            return self._error(f"cannot publish to {topic!r} now: not connected", frame.id)
        try:
            data, props = publishes.publisher.encode(frame.body, headers)
        except ValueError as exc:
            return self._error(f"cannot publish to {topic!r}: {exc}", frame.id)
        # Never awaited here: a publish waiting for the broker holds no other frame.
        publishes.submit(topic, data, props, frame)
        return None

    def _published(self, frame: Publish, error: Exception | None) -> None:
        """How a publish ended (PublishQueue's `done`)."""
        if self.closed:
            return
        topic = frame.topic
        if error is None:
            self.state.count("ws_published")
            if frame.id is not UNSET:
                self._reply(Published(topic, frame.id))
        elif isinstance(error, PublishRefused):
            self.state.count("publish_refused")
            self._error(f"cannot publish to {topic!r} now: {error}", frame.id)
        else:  # the message itself cannot go (PropertiesTooLarge, ...)
            self._error(f"cannot publish to {topic!r}: {error}", frame.id)

    def _rate_limited(self, body: bytes, wait: float) -> None:
        """Refuse a frame over the rate limit, answering the way the frame expects: a
        JSON-RPC error (-32000, `retry_after` in its data) per request with an id, else an
        error frame. The frame is only decoded to find those ids; nothing of it runs."""
        message = self.state.guard.rate_limit_message(wait)
        data = {"retry_after": round(wait, 3)}
        value: Any = None
        if len(body) <= self.settings.max_body_bytes and not json_too_deep(
            body, self.settings.max_json_depth
        ):
            try:
                value = decode_json(body)
            except msgspec.DecodeError:
                value = None
        requests = value if isinstance(value, list) else [value]
        if any(isinstance(r, dict) and "jsonrpc" in r for r in requests):
            replies = [
                jsonrpc.error_reply(OVERLOADED, message, _reply_id(r.get("id")), data)
                for r in requests
                if isinstance(r, dict) and "id" in r
            ]
            self.state.count("ws_errors")
            if isinstance(value, list) and replies:
                self._put_reply((b"[" + b",".join(replies) + b"]").decode())
            elif replies:
                self._put_reply(replies[0].decode())
            return
        self._error(message, value.get("id", UNSET) if isinstance(value, dict) else UNSET)

    # -- JSON-RPC ----------------------------------------------------------------

    def _start_call(self, body: bytes) -> None:
        # A task per call, so a slow agent does not hold up this client's other frames.
        task = asyncio.get_running_loop().create_task(self._answer(body))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _answer(self, body: bytes) -> None:
        # The same JSON-RPC rules as POST /jsonrpc: one implementation, in gateway/jsonrpc.py.
        self.state.count("ws_calls")
        reply = await jsonrpc.handle_payload(body, self.state)
        if reply is not None and not self.closed:
            self._put_reply(reply.decode())

    # -- outgoing ------------------------------------------------------------------

    def _deliver(self, msg: Message) -> None:
        """Mesh subscriber callback: buffer a message frame or drop it. Never blocks."""
        if msg is self._last or self.closed:
            return  # the same message again through another of this client's patterns
        self._last = msg
        frame, size = encoded_message(msg)
        self._buffer(frame, size)

    def _deliver_presence(self, identity: str, state: str) -> None:
        """Mesh presence callback: buffer a presence frame (bounded like messages)."""
        if self.closed:
            return
        data = encode(PresenceFrame(identity, state))
        self._buffer(data, len(data.encode()))

    def _buffer(self, frame: str, size: int) -> None:
        """Queue a frame of `size` bytes for the client, or drop it when its buffer is
        full. Never blocks."""
        buffered = self._buffered
        if buffered >= self._limit or (buffered and self._buffered_bytes + size > self._byte_limit):
            self.dropped += 1
            self.state.count("ws_dropped")
            gap = self._gap
            if gap is None:
                gap = self._gap = _Gap()
                self._out.append(gap)
            gap.count += 1
            return
        self._gap = None
        self._out.append(frame)
        self._sizes.append(size)
        self._buffered = buffered + 1
        self._buffered_bytes += size
        self._wake.set()

    def _reply(self, frame: ServerFrame) -> None:
        self._put_reply(encode(frame))

    def _error(self, text: str, id: Any = UNSET) -> None:
        """Answer an error frame, echoing the id of the frame that caused it (if it had one)."""
        self.state.count("ws_errors")
        self._reply(ErrorFrame(text, id))

    def _put_reply(self, text: str) -> None:
        self._out.append(_Reply(text))
        self._replies += 1
        if self._replies >= self._limit:
            self._room.clear()  # stop reading this client until it reads its replies
        self._wake.set()

    async def _pump(self) -> None:
        """Write the buffered frames in order. A frame stays counted in the buffer until
        it is written, so at most `ws_buffer` messages wait per client."""
        out = self._out
        send = self._send
        state = self.state
        try:
            while True:
                if not out:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                entry = out[0]
                if entry.__class__ is str:
                    await send({"type": "websocket.send", "text": entry})
                    out.popleft()
                    self._buffered -= 1
                    self._buffered_bytes -= self._sizes.popleft()
                    self.sent += 1
                    state.count("ws_messages_out")
                elif entry.__class__ is _Gap:
                    assert isinstance(entry, _Gap)
                    if self._gap is entry:
                        self._gap = None  # the burst is over: later drops start a new gap
                    notice = encode(Dropped(entry.count))
                    await send({"type": "websocket.send", "text": notice})
                    out.popleft()
                else:
                    await send({"type": "websocket.send", "text": str(entry)})
                    out.popleft()
                    self._replies -= 1
                    if self._replies < self._limit:
                        self._room.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone; the receive loop will hear of it
            log.debug("websocket send failed: %s", exc)
            self.closed = True
            self._room.set()

    # -- end -------------------------------------------------------------------------

    async def close(self) -> None:
        """Unsubscribe everything, stop the sender and the calls still waiting."""
        self.closed = True
        tasks = [self._sender, *self._calls]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._publishes is not None:
            await self._publishes.close()
        subscriptions, self._subscriptions = self._subscriptions, {}
        for topic, token in subscriptions.items():
            try:
                await self.state.mesh.unsubscribe(token)
            except Exception as exc:
                log.warning("unsubscribe %r after disconnect failed: %s", topic, exc)
        if self._presence is not None:
            self.state.mesh.unsubscribe_presence(self._presence)
            self._presence = None
        self._out.clear()
        self._sizes.clear()
        self._buffered_bytes = 0
        self._last = None


# -- ids ------------------------------------------------------------------------------


def _presence_problem(frame: Subscribe | Unsubscribe) -> str | None:
    """Why a presence (un)subscription frame cannot be served, or None when it can."""
    if frame.presence is not True:
        return '"presence" takes true: {"op": "subscribe", "presence": true}'
    if frame.topic is not None:
        return 'a frame is about a "topic" or about "presence", not both'
    return None


def _reply_id(id: Any) -> Any:
    """A request's id as a reply may echo it (JSON-RPC: a string, number or null)."""
    return id if id is None or type(id) in (str, int, float) else None
