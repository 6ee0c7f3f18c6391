"""The dashboard's files: `GET /` (index.html) and `GET /static/{path}` from gateway/static/.

Plain HTML, CSS and JavaScript (no build step, nothing from a CDN); the page talks to the
gateway through its REST endpoints and the `/ws` socket, with URLs relative to the page so
it works behind a path prefix too. index.html loads common.js (token, `api()`, DOM helpers),
dashboard.js (the agent list, kept current by `/ws` presence events after one `GET /agents`;
the live stream and sparkline), fsmgraph.js (an FSM as inline SVG and as Mermaid text),
agent.js (one agent's detail: counters, behaviours, FSM graphs, recent messages) and the
panels' own scripts; they share top-level names as classic scripts. The page's
Content-Security-Policy (below) runs only those files: no inline script, no other origin.

Only regular files under gateway/static/ are served: no `..`, no hidden files, no symlink
that leads outside. Caching: every response carries an ETag (a request with a matching
If-None-Match gets 304); the page itself is revalidated on each load (`no-cache`), the assets
it links may be reused for a few minutes (they are not fingerprinted).
"""

from __future__ import annotations

import hashlib
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING

from .types import Receive, Scope, Send

if TYPE_CHECKING:
    from .types import GatewayState

STATIC_ROOT = Path(__file__).resolve().parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
PAGE_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=300"

# A page that loads only its own files and talks only to its own origin (ws included).
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]

# path -> (mtime_ns, size, body, etag, last-modified)
_cache: dict[Path, tuple[int, int, bytes, str, str]] = {}


async def dashboard_endpoint(
    scope: Scope, receive: Receive, send: Send, state: GatewayState
) -> None:
    """The ASGI http handler for `/` and `/static/{path}` (`Endpoint` of gateway/types.py)."""
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    method = scope.get("method", "GET")
    if method not in ("GET", "HEAD"):
        await _respond(send, 405, b"only GET and HEAD here\n", [(b"allow", b"GET, HEAD")])
        return
    if path in ("/", "/index.html"):
        name, cache_control = "index.html", PAGE_CACHE
    elif path.startswith("/static/"):
        name, cache_control = path[len("/static/") :], ASSET_CACHE
    else:
        await _respond(send, 404, b"not found\n")
        return
    file = resolve_static(name)
    loaded = _load(file) if file is not None else None
    if loaded is None:
        await _respond(send, 404, b"not found\n")
        return
    body, etag, last_modified = loaded
    assert file is not None
    headers = [
        (b"etag", etag.encode()),
        (b"last-modified", last_modified.encode()),
        (b"cache-control", cache_control.encode()),
        *SECURITY_HEADERS,
    ]
    if _etag_matches(_header(scope, b"if-none-match"), etag):
        await _respond(send, 304, b"", headers)
        return
    content_type = CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
    headers.append((b"content-type", content_type.encode()))
    await _respond(send, 200, body, headers, head=method == "HEAD")


def resolve_static(name: str) -> Path | None:
    """The file under STATIC_ROOT that `name` (a URL path below /static/) means, or None."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        return None
    parts = name.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    candidate = STATIC_ROOT.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(STATIC_ROOT) or not resolved.is_file():
        return None
    return resolved


def _load(file: Path) -> tuple[bytes, str, str] | None:
    try:
        stat = file.stat()
    except OSError:
        return None
    cached = _cache.get(file)
    if cached is not None and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
        return cached[2], cached[3], cached[4]
    try:
        body = file.read_bytes()
    except OSError:
        return None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    last_modified = formatdate(stat.st_mtime, usegmt=True)
    _cache[file] = (stat.st_mtime_ns, stat.st_size, body, etag, last_modified)
    return body, etag, last_modified


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    head: bool = False,
) -> None:
    headers = list(headers or ())
    if status != 304:
        if not any(key == b"content-type" for key, _ in headers):
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head or status == 304 else body})
