"""The gateway's front door: origins, credentials and the rate limit, before any routing.

One `Guard` per worker, built from the settings when the worker starts (it reads the tokens
file, so a bad file fails the startup). `screen()` runs first for every HTTP request, in
this order:

1. `/healthz` and `/readyz` pass untouched: probes carry no credentials, and an orchestrator
   must not see a live gateway as dead because of a limit.
2. a browser's request (it carries `Origin` or `Sec-Fetch-Site`) must name an allowed host,
   else 421 (DNS rebinding, gateway/hosts.py); its CORS preflight is answered here (204 for a
   listed origin, 403 otherwise), and a POST from a page of another origin that is not
   listed is refused (gateway/cors.py);
3. with tokens configured, the credentials (gateway/auth.py); the dashboard page, its static
   files, /docs and /openapi.json stay open (they hold no data: the page's own API calls
   carry a token), and /metrics too when `metrics_public` is set;
4. the rate limit (gateway/ratelimit.py), per credential when one was accepted, else per
   client address; failed authentication counts too, so guessing tokens is throttled;
5. then 401 if the credentials were missing or wrong.

A refusal is raised as `Answer` (an HTTPError carrying its finished response), so the app's
error path sends it; nothing of the request has run. Refusals on `/jsonrpc` carry a JSON-RPC
error object like the endpoint's other early refusals (docs/decisions.md). Responses to a
listed origin get the CORS headers through a wrapped `send`.

WebSocket handshakes go through `websocket_host_refusal`, `websocket_origin_allowed` and
`admit_websocket`
(gateway/ws.py): the same rules, plus a `?token=` query parameter because browsers cannot set
headers on a WebSocket.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .auth import TokenSet, Unauthorized, load_tokens
from .cors import SAFE_METHODS, OriginPolicy, describe
from .hosts import HostPolicy, is_browser_request
from .http import JSON, Headers, HTTPError, Response, encode_json, error_body
from .ratelimit import RateLimiter, retry_after_header
from .types import Message, Scope, Send

if TYPE_CHECKING:
    from .types import GatewaySettings

log = logging.getLogger("munggoggo.gateway")

PROBES = frozenset({"/healthz", "/readyz"})
PAGES = frozenset({"/", "/docs", "/openapi.json"})  # open pages; no data in them
STATIC = "/static/"
JSONRPC_PATH = "/jsonrpc"
MISDIRECTED = 421  # a browser request for a host that is not the gateway's (RFC 9110 15.5.20)
_INVALID_REQUEST = -32600  # JSON-RPC: the codes of gateway/jsonrpc.py's early refusals
_OVERLOADED = -32000
_WWW_AUTHENTICATE = b'Bearer realm="munggoggo"'
_WWW_AUTHENTICATE_INVALID = b'Bearer realm="munggoggo", error="invalid_token"'


class Answer(HTTPError):
    """The guard answers this request itself: a refusal, or a preflight's 204."""

    def __init__(self, response: Response, message: str) -> None:
        super().__init__(response.status, message)
        self._response = response

    def response(self) -> Response:
        return self._response


class Guard:
    """Per worker: who may call (tokens), from which pages (origins), how often (limit)."""

    def __init__(self, settings: GatewaySettings) -> None:
        tokens = load_tokens(settings)
        self.tokens: TokenSet | None = TokenSet(tokens) if tokens else None
        self.origins = OriginPolicy(settings.cors_origins)
        self.hosts = HostPolicy(
            settings.allowed_hosts, settings.cors_origins, settings.bind_address
        )
        self.limiter: RateLimiter | None = None
        if settings.rate_limit > 0:
            self.limiter = RateLimiter(
                settings.rate_limit, settings.rate_burst, settings.rate_limit_clients
            )
        self.open_paths = PAGES | ({"/metrics"} if settings.metrics_public else set())

    def log_startup(self) -> None:
        """What this worker lets in, once at startup (no secret in it)."""
        if self.tokens is None:
            log.warning(
                "gateway authentication is OFF: no tokens configured, anyone who reaches this "
                "port can call every agent (set MUNGGOGGO_GATEWAY_TOKENS or "
                "MUNGGOGGO_GATEWAY_TOKENS_FILE, or munggoggo gateway --tokens-file)"
            )
        else:
            metrics = "open" if "/metrics" in self.open_paths else "needs a token"
            log.info(
                "gateway authentication on: %d token(s); /healthz, /readyz, the dashboard "
                "page and /docs open; /metrics %s",
                len(self.tokens),
                metrics,
            )
        origins = self.origins
        allowed = "any" if origins.any else ", ".join(sorted(origins.origins)) or "none"
        log.info("gateway cross-origin pages allowed: %s", allowed)
        hosts = "any" if self.hosts.any else ", ".join(sorted(self.hosts.names))
        log.info("gateway host names allowed for browsers: %s", hosts)
        limiter = self.limiter
        if limiter is None:
            log.info("gateway rate limit: off")
        else:
            log.info(
                "gateway rate limit: %g requests/s per client, bursts of %d (per worker)",
                limiter.rate,
                limiter.burst,
            )

    # -- HTTP ----------------------------------------------------------------------

    def screen(self, scope: Scope, send: Send) -> Send:
        """Let the request through (returning the `send` to answer it with) or raise
        `Answer`."""
        path = scope["path"]
        if path in PROBES:
            return send
        headers = dict(scope["headers"])
        if is_browser_request(headers) and not self.hosts.permits(headers.get(b"host")):
            raise _answer(path, MISDIRECTED, self.hosts.refusal(headers.get(b"host")), [])
        origin = headers.get(b"origin")
        cors: Headers | None = None
        if origin is not None:
            method = scope["method"]
            if method == "OPTIONS" and b"access-control-request-method" in headers:
                raise self._preflight(origin, headers)
            if method not in SAFE_METHODS and not self.origins.permits(
                origin, headers.get(b"host")
            ):
                raise _answer(
                    path,
                    403,
                    f"cross-origin request from {describe(origin)} refused: that origin is not "
                    "in the gateway's CORS allow-list",
                    self.origins.response_headers(origin),
                )
            cors = self.origins.response_headers(origin)
        key: Hashable | None = None
        refusal: Unauthorized | None = None
        if self.tokens is not None and path not in self.open_paths and not path.startswith(STATIC):
            try:
                key = self.tokens.check(headers.get(b"authorization"), headers.get(b"x-api-key"))
            except Unauthorized as exc:
                refusal = exc
        if self.limiter is not None:
            wait = self.limiter.take(client_address(scope) if key is None else key)
            if wait:
                raise self._rate_limited(path, wait, cors)
        if refusal is not None:
            raise _unauthorized(path, refusal, cors)
        if cors is None:
            return send
        return _with_headers(send, cors)

    def _preflight(self, origin: bytes, headers: dict[bytes, bytes]) -> Answer:
        if not self.origins.listed(origin):
            return Answer(
                Response(
                    403,
                    error_body(
                        403,
                        f"origin {describe(origin)} is not allowed: it is not in the "
                        "gateway's CORS allow-list",
                    ),
                    JSON,
                    [(b"vary", b"Origin")],
                ),
                "preflight refused",
            )
        requested = headers.get(b"access-control-request-method", b"").strip().upper()
        if requested not in (b"GET", b"HEAD", b"POST"):
            return Answer(
                Response(
                    403,
                    error_body(403, "the gateway accepts only GET and POST"),
                    JSON,
                    self.origins.preflight_headers(origin),
                ),
                "preflight refused",
            )
        return Answer(Response(204, b"", None, self.origins.preflight_headers(origin)), "ok")

    def _rate_limited(self, path: str, wait: float, cors: Headers | None) -> Answer:
        retry = retry_after_header(wait)
        message = self.rate_limit_message(wait)
        headers = [(b"retry-after", retry), *(cors or ())]
        data = {"retry_after": round(wait, 3)}
        if path == JSONRPC_PATH:
            body = _jsonrpc_error(_OVERLOADED, message, data)
        else:
            body = error_body(429, message, data)
        return Answer(Response(429, body, JSON, headers), message)

    def rate_limit_message(self, wait: float) -> str:
        limiter = self.limiter
        assert limiter is not None
        return (
            f"rate limit exceeded: {limiter.rate:g} requests/s per client (bursts of "
            f"{limiter.burst}); retry after {retry_after_header(wait).decode()} s"
        )

    # -- WebSocket -----------------------------------------------------------------

    def websocket_host_refusal(self, scope: Scope) -> Answer | None:
        """None when a handshake names an allowed host (or comes from no browser); else
        the 421 refusal to send.

        Args:
            scope: the ASGI websocket scope.

        Returns:
            None, or the `Answer` refusing the handshake.
        """
        headers = dict(scope["headers"])
        host = headers.get(b"host")
        if not is_browser_request(headers) or self.hosts.permits(host):
            return None
        return _answer("/ws", MISDIRECTED, self.hosts.refusal(host), [])

    def websocket_origin_allowed(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        return origin is None or self.origins.permits(origin, headers.get(b"host"))

    def admit_websocket(self, scope: Scope) -> Hashable:
        """The client's rate-limit key once its credentials pass; `Answer` otherwise.
        Opening a socket counts against the rate limit like a request."""
        key: Hashable | None = None
        if self.tokens is not None:
            headers = dict(scope["headers"])
            try:
                key = self.tokens.check(
                    headers.get(b"authorization"), headers.get(b"x-api-key"), query_token(scope)
                )
            except Unauthorized as exc:
                raise _unauthorized("/ws", exc, None) from None
        if key is None:
            key = client_address(scope)
        if self.limiter is not None:
            wait = self.limiter.take(key)
            if wait:
                raise self._rate_limited("/ws", wait, None)
        return key


def client_address(scope: Scope) -> str:
    """The peer's address: the rate-limit key of a client without credentials. Behind a
    proxy this is the proxy (X-Forwarded-For is not trusted: any client can send it)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


def query_token(scope: Scope) -> bytes | None:
    query: bytes | None = scope.get("query_string")
    if not query or b"token=" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "token":
            return value.encode("latin-1")
    return None


def _unauthorized(path: str, exc: Unauthorized, cors: Headers | None) -> Answer:
    message = str(exc)
    challenge = (
        _WWW_AUTHENTICATE if exc.cause == "missing credentials" else (_WWW_AUTHENTICATE_INVALID)
    )
    headers = [(b"www-authenticate", challenge), *(cors or ())]
    if path == JSONRPC_PATH:
        body = _jsonrpc_error(_INVALID_REQUEST, f"Invalid Request: {message}")
    else:
        body = error_body(401, message)
    return Answer(Response(401, body, JSON, headers), message)


def _answer(path: str, status: int, message: str, headers: Headers) -> Answer:
    if path == JSONRPC_PATH:
        body = _jsonrpc_error(_INVALID_REQUEST, f"Invalid Request: {message}")
    else:
        body = error_body(status, message)
    return Answer(Response(status, body, JSON, headers), message)


def _jsonrpc_error(code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode_json({"jsonrpc": "2.0", "error": error, "id": None})


def _with_headers(send: Send, extra: Headers) -> Send:
    """`send` that adds `extra` to the response's headers (CORS for a listed origin)."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_headers
