"""The gateway's ASGI application: lifespan, routing, and the last line of error handling.

`create_app()` is the factory granian serves (`munggoggo.gateway.app:create_app`). Each
worker's lifespan builds its `GatewayState` (settings from the environment, its own `Mesh`
client agent) and stops the mesh on shutdown. Plain ASGI with a small router of our own:
a dict lookup for fixed paths, a segment match for the few with parameters (see
docs/decisions.md for why not Starlette).

Our handlers take `(request, state)` and return a `Response`; the WebSocket and dashboard
endpoints follow the raw handler contract (`Endpoint`, gateway/types.py) and are imported on
first use (404 while their modules do not exist). Whatever a handler raises becomes a JSON
answer: HTTPError its status, anything else a logged 500 with a short message; the worker
keeps serving.
"""

from __future__ import annotations

import importlib
import logging
from contextvars import Token
from time import perf_counter
from typing import Any, cast
from urllib.parse import unquote

from munggoggo import tracing
from munggoggo.amqp.errors import AMQPError
from munggoggo.tracing import TRACEPARENT

from . import contracts, deadletters, jsonrpc, openapi, rest
from .guard import Guard
from .http import HTTPError, Request, Response, error_response, send_response
from .limits import RETRY_AFTER, ClientDisconnected
from .mesh import Mesh
from .metrics import UNMATCHED_ROUTE
from .state import GatewaySettings, GatewayState
from .types import Endpoint, Handler, Message, Receive, Scope, Send

log = logging.getLogger("munggoggo.gateway")


_INTERNAL_ERROR = error_response(500, 500, "internal error in the gateway (logged)")
# Counted as 499 (nginx's "client closed request"): the client left before the answer.
_CLIENT_LEFT = Response(499, b"", b"text/plain")


class Route:
    """`template` segments: literal, `{name}` (one segment) or `{name...}` (the rest).

    Args:
        template: the path template (`/agents/{identity}`).
        endpoint: what serves it.
        raw: whether the endpoint is an ASGI handler of its own (it answers by itself)
            rather than one returning a response.
        needs_state: whether it needs the started gateway state (503 until then).
    """

    __slots__ = ("endpoint", "needs_state", "raw", "segments", "tail", "template")

    def __init__(
        self, template: str, endpoint: Handler | Endpoint, *, raw: bool, needs_state: bool
    ) -> None:
        self.template = template
        self.segments = template.strip("/").split("/")
        self.tail = self.segments[-1].endswith("...}")
        self.endpoint = endpoint
        self.raw = raw
        self.needs_state = needs_state

    def match(self, parts: list[str]) -> tuple[str, ...] | None:
        """The path parameters if the path matches the template.

        Args:
            parts: the request path's segments, unquoted.

        Returns:
            The parameters in template order, or None (no match, or an empty parameter).
        """
        segments = self.segments
        if len(parts) != len(segments) and not (self.tail and len(parts) >= len(segments)):
            return None
        params = []
        for i, segment in enumerate(segments):
            if segment[0] != "{":
                if parts[i] != segment:
                    return None
            elif self.tail and i == len(segments) - 1:
                params.append("/".join(parts[i:]))
            else:
                params.append(parts[i])
        if any(not p for p in params):
            return None
        return tuple(params)


class Router:
    """Fixed paths by dict lookup; templated ones tried in order."""

    def __init__(self) -> None:
        self.fixed: dict[str, dict[str, Route]] = {}
        self.templated: list[tuple[str, Route]] = []

    def add(
        self,
        method: str,
        template: str,
        endpoint: Handler | Endpoint,
        *,
        raw: bool = False,
        needs_state: bool = True,
    ) -> None:
        """Add a route.

        Args:
            method: the HTTP method.
            template: the path, or a template with `{name}` / `{name...}` parameters.
            endpoint: what serves it.
            raw: the endpoint is an ASGI handler of its own.
            needs_state: it needs the started gateway state.
        """
        route = Route(template, endpoint, raw=raw, needs_state=needs_state)
        if "{" in template:
            self.templated.append((method, route))
        else:
            self.fixed.setdefault(template, {})[method] = route

    def routes(self) -> list[tuple[str, str]]:
        """(path, method) of every route, paths as OpenAPI writes them (`{name}`).

        Returns:
            The pairs, fixed paths first.
        """
        found = [(path, m) for path, by_method in self.fixed.items() for m in by_method]
        found += [(r.template.replace("...}", "}"), m) for m, r in self.templated]
        return found

    def templates(self) -> list[tuple[str, str]]:
        """(template, method) of every route: the labels its requests are counted under.

        Returns:
            The pairs, fixed paths first.
        """
        found = [(path, m) for path, by_method in self.fixed.items() for m in by_method]
        found += [(r.template, m) for m, r in self.templated]
        return found

    def resolve(self, method: str, scope: Scope) -> tuple[Route, tuple[str, ...]]:
        """The route and its path parameters. HEAD is served wherever GET is (by the GET
        route; the app sends no body).

        Args:
            method: the request's method.
            scope: the ASGI scope (its `path` and `raw_path`).

        Returns:
            The route and its path parameters.

        Raises:
            HTTPError: 404 for a path no route has, 405 (with Allow) for a method it lacks.
        """
        by_method = self.fixed.get(scope["path"])
        if by_method is not None:
            route = by_method.get(method)
            if route is None and method == "HEAD":
                route = by_method.get("GET")
            if route is not None:
                return route, ()
            raise _not_allowed(by_method)
        # Split the raw path so an escaped "/" (%2F) stays inside its segment.
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        parts = [unquote(p) for p in path.strip("/").split("/")]
        allowed = []
        for route_method, route in self.templated:
            params = route.match(parts)
            if params is None:
                continue
            if route_method == method or (method == "HEAD" and route_method == "GET"):
                return route, params
            allowed.append(route_method)
        if allowed:
            raise _not_allowed(dict.fromkeys(allowed))
        raise HTTPError(404, f"no route for {scope['path']}")


def _not_allowed(methods: dict[str, Any]) -> HTTPError:
    names = set(methods)
    if "GET" in names:
        names.add("HEAD")
    allow = ", ".join(sorted(names))
    return HTTPError(405, "method not allowed", headers=[(b"allow", allow.encode())])


def build_router(app: GatewayApp) -> Router:
    """Every route of the gateway: JSON-RPC, REST, health, metrics, OpenAPI, dashboard.

    Args:
        app: the app, whose optional endpoints (dashboard, WebSocket) load on first use.

    Returns:
        The router.
    """
    r = Router()
    r.add("POST", "/jsonrpc", jsonrpc.jsonrpc_endpoint)
    r.add("GET", "/agents", rest.list_agents)
    r.add("GET", "/agents/{identity}", rest.agent_status)
    r.add("POST", "/agents/{identity}/call/{method}", rest.call_method)
    r.add("POST", "/agents/{identity}/behaviours/{name}/start", rest.start_behaviour)
    r.add("POST", "/agents/{identity}/behaviours/{name}/stop", rest.stop_behaviour)
    r.add("POST", "/topics/{routing_key...}", rest.publish_topic)
    r.add("POST", "/agents/{identity}/send", rest.send_message)
    r.add("POST", "/broadcast", rest.broadcast)
    r.add("GET", "/dead-letters", deadletters.list_dead_letters)
    r.add("GET", "/dead-letters/{id}", deadletters.inspect_dead_letter)
    r.add("POST", "/dead-letters/requeue", deadletters.requeue_dead_letters)
    r.add("POST", "/dead-letters/purge", deadletters.purge_dead_letters)
    r.add("GET", "/healthz", rest.healthz, needs_state=False)
    r.add("GET", "/readyz", rest.readyz, needs_state=False)
    r.add("GET", "/metrics", rest.metrics_endpoint)
    r.add("GET", "/openapi.json", openapi.openapi_endpoint, needs_state=False)
    r.add("GET", "/asyncapi.json", contracts.asyncapi_endpoint)
    r.add("GET", "/docs", openapi.docs_endpoint, needs_state=False)
    r.add("GET", "/ws", openapi.websocket_upgrade_required, needs_state=False)  # plain HTTP
    dashboard = app.optional("dashboard", "dashboard_endpoint")
    r.add("GET", "/", dashboard, raw=True)
    r.add("GET", "/static/{path...}", dashboard, raw=True)
    return r


class GatewayApp:
    """The ASGI callable. `settings=None` reads them from the environment at startup.

    Args:
        settings: the gateway's settings, or None for `GatewaySettings.from_env()` at
            startup (the lifespan).
    """

    def __init__(self, settings: GatewaySettings | None = None) -> None:
        self.settings = settings
        self.state: GatewayState | None = None
        self.router = build_router(self)
        self._websocket = self.optional("ws", "websocket_endpoint")

    def routes(self) -> list[tuple[str, str]]:
        """(path, method) of every route, as OpenAPI writes them.

        Returns:
            The pairs.
        """
        return self.router.routes()

    def optional(self, module: str, name: str) -> Endpoint:
        """An endpoint from a sibling module imported on first use; 404 while the module
        does not exist.

        Args:
            module: the module's name in munggoggo.gateway.
            name: the endpoint's name in it.

        Returns:
            The endpoint.
        """
        resolved: list[Endpoint | None] = []

        async def endpoint(scope: Scope, receive: Receive, send: Send, state: GatewayState) -> None:
            if not resolved:
                resolved.append(_import_endpoint(module, name))
            target = resolved[0]
            if target is None:
                await _not_found(scope, receive, send)
                return
            await target(scope, receive, send, state)

        return endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: an HTTP request, a WebSocket or the lifespan.

        Args:
            scope: the ASGI scope.
            receive: the ASGI receive callable.
            send: the ASGI send callable.
        """
        kind = scope["type"]
        # A caller's W3C traceparent becomes current for the request (or the WebSocket
        # connection): every call and publish it makes carries a child of it.
        trace = _adopt_traceparent(scope) if kind != "lifespan" else None
        if trace is not None:
            try:
                await self._dispatch(kind, scope, receive, send)
            finally:
                TRACEPARENT.reset(trace)
        else:
            await self._dispatch(kind, scope, receive, send)

    async def _dispatch(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            if scope["path"] != "/ws" or self.state is None:
                await _not_found(scope, receive, send)
                return
            await _call_raw(self._websocket, scope, receive, send, self.state)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        started = perf_counter()
        template = UNMATCHED_ROUTE
        if scope["method"] == "HEAD":
            send = _without_body(send)
        try:
            if state is not None:
                # Origins, credentials, rate limit (gateway/guard.py): refusals raise.
                send = state.guard.screen(scope, send)
            route, params = self.router.resolve(scope["method"], scope)
            template = route.template
            if route.needs_state and state is None:
                raise HTTPError(503, "the gateway is starting or stopping")
            if route.raw:
                endpoint = cast(Endpoint, route.endpoint)
                status = await _call_raw(endpoint, scope, receive, send, state)
                if state is not None:
                    state.metrics.observe_request(
                        template, scope["method"], status, perf_counter() - started
                    )
                return
            deadlines = state.body_deadlines if state is not None else None
            handler = cast(Handler, route.endpoint)
            # state is None only on a route that does not need it (needs_state=False), whose
            # handler takes None (`state: GatewayState | None`).
            response = await handler(
                Request(scope, receive, params, deadlines), cast(GatewayState, state)
            )
        except HTTPError as exc:
            response = exc.response()
        except ClientDisconnected:
            response = _CLIENT_LEFT
        except AMQPError as exc:  # the broker connection is down; the mesh reconnects by itself
            response = error_response(
                503, 503, f"not connected to the broker ({exc}); retry later", None, RETRY_AFTER
            )
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            response = _INTERNAL_ERROR
        if response is not _CLIENT_LEFT:
            try:
                await send_response(send, response)
            except OSError:  # the client left while we worked (ASGI servers may say so)
                response = _CLIENT_LEFT
        if state is not None:
            state.metrics.observe_request(
                template, scope["method"], response.status, perf_counter() - started
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    settings = self.settings or GatewaySettings.from_env()
                    guard = Guard(settings)  # reads the tokens file: a bad one stops here
                    mesh = Mesh(
                        settings.url,
                        publish_timeout=settings.publish_timeout,
                        publish_buffer=settings.publish_buffer,
                        publish_buffer_bytes=settings.publish_buffer_bytes,
                    )
                    await mesh.start()
                except Exception as exc:
                    # A broker that does not answer is news, not a bug: no traceback.
                    expected = isinstance(exc, AMQPError | OSError | ValueError)
                    log.error("gateway startup failed: %s", exc, exc_info=not expected)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.state = GatewayState(settings=settings, mesh=mesh, guard=guard)
                self.state.metrics.declare_routes(self.router.templates())
                log.info("gateway worker connected to the mesh as %s", mesh.identity)
                guard.log_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                state, self.state = self.state, None
                if state is not None:
                    state.metrics.close()
                    try:
                        await state.mesh.stop()
                    except Exception as exc:
                        log.exception("gateway shutdown failed")
                        await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                        return
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _call_raw(
    endpoint: Endpoint,
    scope: Scope,
    receive: Receive,
    send: Send,
    state: GatewayState | None,
) -> int:
    """Run an endpoint that sends for itself; a 500 if it fails before sending anything.
    Returns the HTTP status it sent (0 when it sent none).
    """
    status = 0

    async def tracking_send(message: Message) -> None:
        nonlocal status
        if not status:
            status = message.get("status", 0) or 101  # 101: an accepted WebSocket
        await send(message)

    try:
        # None only on a route registered with needs_state=False, whose endpoint takes None.
        await endpoint(scope, receive, tracking_send, cast(GatewayState, state))
    except Exception:
        log.exception("%s %s failed", scope.get("method", "WEBSOCKET"), scope.get("path"))
        if not status and scope["type"] == "http":
            await send_response(send, _INTERNAL_ERROR)
            status = 500
    return status


def _without_body(send: Send) -> Send:
    """`send` for a HEAD request: the GET answer's status and headers (its Content-Length
    included, as HTTP wants), no body.
    """

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_head


def _adopt_traceparent(scope: Scope) -> Token[str | None] | None:
    """Make a valid `traceparent` request header current; the token to reset, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            traceparent = value.decode("latin-1")
            return TRACEPARENT.set(traceparent) if tracing.is_valid(traceparent) else None
    return None


def _import_endpoint(module: str, name: str) -> Endpoint | None:
    full_name = f"{__package__}.{module}"
    try:
        imported = importlib.import_module(full_name)
    except ModuleNotFoundError as exc:
        if exc.name == full_name:
            return None
        raise
    endpoint: Endpoint = getattr(imported, name)
    return endpoint


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send_response(send, error_response(404, 404, f"no route for {scope['path']}"))
        return
    # A WebSocket handshake: deny it with an HTTP 404 where the server supports that.
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        body = b'{"error":{"code":404,"message":"no WebSocket here"}}'
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def create_app(settings: GatewaySettings | None = None) -> GatewayApp:
    """The gateway's ASGI app (granian: `munggoggo.gateway.app:create_app`, factory).

    Args:
        settings: the settings, or None to read `MUNGGOGGO_GATEWAY_*` at startup.

    Returns:
        The app.
    """
    return GatewayApp(settings)
