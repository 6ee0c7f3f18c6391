"""Which web pages may use the gateway: the CORS allow-list and the origin checks.

`settings.cors_origins` lists page origins (`https://app.example.com`, `http://localhost:3000`;
`*` for any). The same list decides three things, all about requests made by browsers
(they send an `Origin` header; other clients do not, and none of this applies to them):

* CORS: a response to a listed origin carries `Access-Control-Allow-Origin` (the origin, or
  `*` when the list says `*`) and `Vary: Origin`; other origins get no CORS headers, so the
  browser keeps the answer from the page. A preflight (`OPTIONS` with
  `Access-Control-Request-Method`) from a listed origin is answered 204 with the methods and
  headers the gateway accepts; from any other origin, 403.
* cross-origin writes: a POST from a page of another origin that is not listed is refused
  (403) before it runs. CORS alone would only hide the answer: a plain form-like POST (no
  preflight) would still call the agent, which is cross-site request forgery against a
  gateway that runs without tokens.
* WebSocket handshakes (not covered by CORS at all): a page of another origin that is not
  listed is refused (403, gateway/ws.py).

A page on the gateway itself (the dashboard, /docs) is same-origin: its `Origin` names the
`Host` it talks to, and it is always allowed. Behind a proxy that rewrites `Host`, list the
public origin.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from .http import Headers

ALLOW_METHODS = b"GET, POST"
ALLOW_HEADERS = b"authorization, content-type, x-api-key"
EXPOSE_HEADERS = b"retry-after, www-authenticate"
MAX_AGE = b"600"  # seconds a browser may cache a preflight answer
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_VARY_ORIGIN: Headers = [(b"vary", b"Origin")]
_VARY_PREFLIGHT = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def normalize_origin(origin: str) -> str:
    """`scheme://host[:port]` as browsers send it (lower case, no default port); ValueError
    for anything else."""
    if origin == "*":
        return origin
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a CORS origin is http(s)://host[:port] or *, got {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"a CORS origin has no path, query or user: {origin!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"a CORS origin has an invalid port: {origin!r}") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _authority(origin: str) -> str | None:
    """host[:port] of a serialized origin, without the scheme's default port."""
    scheme, sep, rest = origin.partition("://")
    if not sep or not rest:
        return None
    default = _DEFAULT_PORTS.get(scheme)
    host, colon, port = rest.rpartition(":")
    if colon and not port.endswith("]") and port == str(default):
        return host
    return rest


class OriginPolicy:
    """The allow-list, with the response headers for each listed origin built once."""

    def __init__(self, origins: Iterable[str]) -> None:
        normalized = [normalize_origin(o) for o in origins]
        self.any = "*" in normalized
        self.origins = frozenset(o for o in normalized if o != "*")
        self._headers: dict[bytes, Headers] = {}

    def __bool__(self) -> bool:
        return self.any or bool(self.origins)

    def listed(self, origin: bytes) -> bool:
        return self.any or origin.decode("latin-1").lower() in self.origins

    def permits(self, origin: bytes, host: bytes | None) -> bool:
        """A browser page of `origin` may write to the gateway / open its WebSocket."""
        return self.listed(origin) or same_origin(origin, host)

    def response_headers(self, origin: bytes) -> Headers:
        """Headers for a response to a page of `origin`: CORS ones only if it is listed."""
        if not self.listed(origin):
            return _VARY_ORIGIN
        headers = self._headers.get(origin)
        if headers is None:
            headers = [
                (b"access-control-allow-origin", b"*" if self.any else origin),
                (b"access-control-expose-headers", EXPOSE_HEADERS),
                (b"vary", b"Origin"),
            ]
            if len(self._headers) < 1000:  # bounded: only listed origins get here
                self._headers[origin] = headers
        return headers

    def preflight_headers(self, origin: bytes) -> Headers:
        """The 204 answer's headers for a preflight from a listed origin."""
        return [
            (b"access-control-allow-origin", b"*" if self.any else origin),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE),
            (b"vary", _VARY_PREFLIGHT),
        ]


def same_origin(origin: bytes, host: bytes | None) -> bool:
    """The page's origin names the host the request was sent to (a page of the gateway)."""
    if host is None:
        return False
    authority = _authority(origin.decode("latin-1").lower())
    if authority is None:
        return False
    host_text = host.decode("latin-1").lower()
    # Compared without the scheme's default port either side (`Host: a:80` is `http://a`);
    # the scheme itself may differ behind a proxy that terminates TLS.
    return authority in (
        host_text,
        _authority("http://" + host_text),
        _authority("https://" + host_text),
    )


def describe(origin: bytes) -> str:
    """The origin for an error message: shown, but cut short (it comes from the client)."""
    text = origin.decode("latin-1")
    return repr(text if len(text) <= 100 else text[:100] + "...")
