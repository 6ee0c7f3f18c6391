"""HTTP plumbing for the gateway's own handlers: the request, JSON responses, HTTP errors.

Plain ASGI, no framework. A `Request` wraps the scope and reads the body incrementally under
the size limit. Handlers return a `Response` and the app sends it, so an unexpected exception
can still become a clean JSON 500 (nothing was sent yet). `HTTPError` carries an HTTP status
plus the `code` and `message` of the JSON error body, `{"error": {"code", "message", "data"}}`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec

from .limits import BodyDeadlines, BodyTimeout, BodyTooLarge, read_body
from .types import Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"

encode_json = msgspec.json.Encoder().encode
decode_json = msgspec.json.Decoder().decode


class HTTPError(Exception):
    """Answer with this status and a JSON error body. `code` defaults to the status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | None = None,
        data: Any = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = status if code is None else code
        self.message = message
        self.data = data
        self.headers = headers

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message, self.data, self.headers)


class Response:
    """What a handler answers: status, body, content type and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: bytes | None = JSON,
        headers: Headers | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def json_response(value: Any, status: int = 200, headers: Headers | None = None) -> Response:
    return Response(status, encode_json(value), JSON, headers)


def error_body(code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode_json({"error": error})


def error_response(
    status: int, code: int, message: str, data: Any = None, headers: Headers | None = None
) -> Response:
    return Response(status, error_body(code, message, data), JSON, headers)


async def send_response(send: Send, response: Response) -> None:
    """Send `response`: its status and headers (Content-Length added), then its body."""
    body = response.body
    headers: Headers = [(b"content-length", b"%d" % len(body))]
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type))
    if response.headers:
        headers.extend(response.headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Request:
    """One HTTP request: scope, body reader, path parameters from the router."""

    __slots__ = ("body_deadlines", "params", "receive", "scope")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        params: tuple[str, ...] = (),
        body_deadlines: BodyDeadlines | None = None,
    ) -> None:
        """Args:
        scope: the ASGI HTTP scope.
        receive: the ASGI receive callable.
        params: the path parameters the router found.
        body_deadlines: the worker's time limit on reading bodies; None: no limit.
        """
        self.scope = scope
        self.receive = receive
        self.params = params
        self.body_deadlines = body_deadlines

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header; `name` in lower case."""
        headers: list[tuple[bytes, bytes]] = self.scope["headers"]
        for key, value in headers:
            if key == name:
                return value
        return None

    def query(self) -> dict[str, str]:
        # Blank values kept: `?wait=` is a wait that is not a number, not an absent one.
        query = self.scope.get("query_string", b"").decode("latin-1")
        return dict(parse_qsl(query, keep_blank_values=True))

    def has_json_body(self) -> bool:
        """True for Content-Type application/json (parameters such as charset allowed)."""
        value = self.header(b"content-type")
        if value is None:
            return False
        return value.split(b";", 1)[0].strip().lower() == JSON

    async def body(self, limit: int) -> bytes:
        """The whole body; HTTP 413 past `limit` bytes (reading stops there), HTTP 408 when
        it takes longer than the worker's body timeout (the connection is then closed: the
        rest of the body would otherwise be read as the next request)."""
        declared = self.header(b"content-length")
        try:
            return await read_body(self.receive, limit, declared, self.body_deadlines)
        except BodyTooLarge as exc:
            raise HTTPError(413, str(exc)) from None
        except BodyTimeout as exc:
            raise HTTPError(408, str(exc), headers=[(b"connection", b"close")]) from None
