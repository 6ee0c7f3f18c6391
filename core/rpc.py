"""JSON-RPC 2.0 between agents: `@expose`, request/response codec, parameter validation.

Requests and responses are the JSON-RPC 2.0 objects of the wire contract, so a plain AMQP
client can call an agent. Parameters are validated against the exposed method's type hints
with msgspec (mismatch: -32602); unknown methods: -32601; an exception inside a method
becomes an error reply (-32000, with the exception type in `data`), never a dead callee.
Only methods marked with `@expose` are callable: private (`_x`), dunder and undecorated
inherited attributes are refused.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from ._speedups import MunggoggoError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # an exception inside the exposed method
UNKNOWN_AGENT = -32001  # nobody has the target's inbox queue
TIMEOUT = -32002  # no reply within the caller's timeout
UNAVAILABLE = -32003  # the agent is stopping or not connected
# -32004 is the control plane's unknown behaviour (Agent.start_behaviour / stop_behaviour)
UNREACHABLE = -32005  # the target cannot be reached right now; a retry may work

_EXPOSED_ATTR = "__munggoggo_exposed__"


class RpcError(MunggoggoError):
    """An RPC failed: the callee answered with a JSON-RPC error, or nobody answered.

    Args:
        code: the JSON-RPC error code (-32601 no such method, -32602 invalid params,
            -32000 the method raised, -32001 unknown agent, -32002 timeout, -32003 the
            agent is unavailable, -32004 no such behaviour, -32005 unreachable).
        message: what went wrong.
        data: more about it, as the callee sent it (JSON), or None.

    Attributes:
        code: the JSON-RPC error code.
        message: what went wrong.
        data: more about it, or None.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"{message} (code {code})")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles its message alone; rebuild from the fields instead.
        return (type(self), (self.code, self.message, self.data))

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC 2.0 error object for it.

        Returns:
            `code`, `message`, and `data` when there is any.
        """
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class RpcTimeout(RpcError, TimeoutError):
    """No reply arrived within the timeout."""


class AgentUnreachable(RpcError, ConnectionError):
    """The call could not reach its target, or its reply could not come back, right now
    (-32005); a retry may work once the connection or the target is back.

    `may_have_run` (also in `data`) tells the two cases apart: True when the caller's
    connection was lost with the call in flight (the request may have reached the agent
    and run), False when the request came back unroutable right after the caller's
    connection recovered (it reached nobody). See core/reachability.py.

    Args:
        message: what went wrong.
        may_have_run: whether the request may have reached the agent and run.
    """

    def __init__(self, message: str, *, may_have_run: bool) -> None:
        super().__init__(UNREACHABLE, message, {"may_have_run": may_have_run})
        self.may_have_run = may_have_run

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = functools.partial(type(self), may_have_run=self.may_have_run)
        return (rebuild, (self.message,))


class Request(msgspec.Struct, gc=False, omit_defaults=True):
    """A JSON-RPC 2.0 request, as it travels.

    Attributes:
        jsonrpc: "2.0".
        method: the method's name.
        params: parameters by position (a list) or by name (a dict), or None.
        id: the call id; a request without one is a notification and gets no reply.
    """

    jsonrpc: str
    method: str
    params: list[Any] | dict[str, Any] | None = None
    id: str | int | None = msgspec.field(default=None)


class Response(msgspec.Struct, gc=False, omit_defaults=True):
    """A JSON-RPC 2.0 response, as it travels: a result or an error.

    Attributes:
        jsonrpc: "2.0".
        result: what the method returned (when there is no error).
        error: the error object (`code`, `message`, `data`), or None.
        id: the request's id.
    """

    jsonrpc: str = "2.0"
    result: Any = None
    error: dict[str, Any] | None = None
    id: str | int | None = None


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_response_decoder = msgspec.json.Decoder(Response)
_raw_decoder = msgspec.json.Decoder()
_MISSING = object()


F = TypeVar("F", bound=Callable[..., Any])


def expose(func: F) -> F:
    """Mark an agent method (sync or async) as callable by RPC under its own name.

    The method is returned as it is, marked: its signature stays what type checkers and
    direct callers see, and its parameters' type hints are what a call's params are
    validated against.

    Args:
        func: the method; its name must not start with an underscore.

    Returns:
        `func` itself.

    Raises:
        ValueError: a private (`_x`) or dunder method.
    """
    if func.__name__.startswith("_"):
        raise ValueError(
            f"cannot expose {func.__name__!r}: private and dunder methods stay private"
        )
    setattr(func, _EXPOSED_ATTR, True)
    return func


class ExposedMethod:
    """An exposed method with its parameter schema, built once per agent class.

    Args:
        name: the name it is called by.
        func: the method (unbound); its type hints validate the params.
    """

    __slots__ = ("args_type", "func", "is_async", "name", "params_type", "positional")

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self.func = func
        self.is_async = inspect.iscoroutinefunction(func)
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func)
        fields: list[Any] = []
        self.positional: list[str] = []
        for i, (pname, param) in enumerate(sig.parameters.items()):
            if i == 0 and pname == "self":
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            self.positional.append(pname)
            hint = hints.get(pname, Any)
            if param.default is inspect.Parameter.empty:
                fields.append((pname, hint))
            else:
                fields.append((pname, hint, param.default))
        self.params_type = msgspec.defstruct(f"{name}_params", fields, forbid_unknown_fields=True)
        # The same fields read from an array: params by position convert in one step.
        self.args_type = msgspec.defstruct(f"{name}_args", fields, array_like=True)

    def bind(self, params: list[Any] | dict[str, Any] | None) -> dict[str, Any]:
        """Validate JSON params (by position or by name) into keyword arguments.

        Args:
            params: the request's params: a list, a dict, or None (none).

        Returns:
            The method's arguments by name.

        Raises:
            RpcError: -32602 (invalid params): too many by position, an unknown name, a
                missing one, or a value of the wrong type.
        """
        if params is None:
            params = {}
        if isinstance(params, list):
            if len(params) > len(self.positional):
                raise RpcError(
                    INVALID_PARAMS,
                    f"{self.name}() takes {len(self.positional)} parameter(s), got {len(params)}",
                )
            try:
                return msgspec.structs.asdict(msgspec.convert(params, self.args_type, strict=False))
            except msgspec.ValidationError:
                pass  # told below by name, as params by name are
            params = dict(zip(self.positional, params, strict=False))
        try:
            values = msgspec.convert(params, self.params_type, strict=False)
        except msgspec.ValidationError as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params for {self.name}: {exc}") from None
        return msgspec.structs.asdict(values)


def exposed_methods(cls: type) -> dict[str, ExposedMethod]:
    """Every `@expose`d method of an agent class (including inherited ones), by name.

    A method overridden without `@expose` is no longer exposed.

    Args:
        cls: the agent class.

    Returns:
        Its exposed methods, by name.
    """
    found: dict[str, ExposedMethod] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if name.startswith("_"):
                continue
            func = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
            if callable(func) and getattr(func, _EXPOSED_ATTR, False):
                found[name] = ExposedMethod(name, func)
            elif name in found:
                del found[name]  # overridden without @expose: no longer callable
    return found


# -- codec ------------------------------------------------------------------------


def encode_request(method: str, params: list[Any] | dict[str, Any] | None, id: str | None) -> bytes:
    """A JSON-RPC 2.0 request.

    Args:
        method: the method's name.
        params: by position (a list) or by name (a dict); empty or None: left out.
        id: the call id; None makes it a notification (no reply).

    Returns:
        The request as JSON.

    Raises:
        TypeError: params holding a value msgspec cannot encode.
    """
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params:
        request["params"] = params
    if id is not None:
        request["id"] = id
    return _encoder.encode(request)


def encode_result(result: Any, id: Any) -> bytes:
    """The JSON-RPC response carrying `result`.

    Args:
        result: what the method returned.
        id: the request's id.

    Returns:
        The response as JSON.

    Raises:
        TypeError: the result holds a value msgspec cannot encode.
        ValueError: the result holds a float JSON cannot carry (inf, -inf, NaN): msgspec
            would write null, a different answer than the method gave.
    """
    data = _encoder.encode({"jsonrpc": "2.0", "result": result, "id": id})
    # msgspec writes every non-finite float as null: only then is the walk worth it.
    if b"null" in data and _holds_non_finite(result):
        raise ValueError("it holds inf or NaN, which JSON cannot carry")
    return data


def _holds_non_finite(value: Any) -> bool:
    """Whether an encodable value holds inf or NaN anywhere (iterative: no depth limit)."""
    stack = [msgspec.to_builtins(value)]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif type(item) is dict:
            stack.extend(item.values())
        elif type(item) is list or type(item) is tuple:
            stack.extend(item)
    return False


def encode_error(error: RpcError, id: Any) -> bytes:
    """The JSON-RPC response carrying an error.

    Args:
        error: the error.
        id: the request's id (None when it could not be read).

    Returns:
        The response as JSON.
    """
    return _encoder.encode({"jsonrpc": "2.0", "error": error.to_error(), "id": id})


def decode_request(body: bytes) -> Request:
    """Parse one JSON-RPC request.

    Args:
        body: the request as JSON.

    Returns:
        The request.

    Raises:
        RpcError: -32700 (not JSON) or -32600 (not a valid request), with the request id
            attached as `.request_id` when it could be read.
    """
    try:
        raw = _parse(body)
    except ValueError as exc:
        error = RpcError(PARSE_ERROR, f"Parse error: {exc}")
        error.request_id = None  # type: ignore[attr-defined]
        raise error from None
    try:
        request = msgspec.convert(raw, Request)
    except msgspec.ValidationError as exc:
        error = RpcError(INVALID_REQUEST, f"Invalid Request: {exc}")
        error.request_id = raw.get("id") if isinstance(raw, dict) else None  # type: ignore[attr-defined]
        raise error from None
    if request.jsonrpc != "2.0":
        error = RpcError(INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"')
        error.request_id = request.id  # type: ignore[attr-defined]
        raise error
    return request


def is_notification(body: bytes) -> bool:
    """Whether a request is a notification: one without an `id` member gets no reply
    (JSON-RPC 2.0 section 4.1).

    Args:
        body: the request as JSON.

    Returns:
        True for a JSON object without `id`; False otherwise, unreadable JSON included.
    """
    try:
        raw = _parse(body)
    except ValueError:
        return False
    return isinstance(raw, dict) and "id" not in raw


def _parse(body: bytes) -> Any:
    """Any JSON value, or ValueError. Requests come from anyone: besides msgspec's
    DecodeError, invalid UTF-8 in a string raises UnicodeDecodeError and deep nesting
    RecursionError, and either one escaping the inbox callback would drop the connection,
    after which the unacked request comes back and drops it again.
    """
    try:
        return _raw_decoder.decode(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def decode_response(body: bytes) -> Any:
    """The result of a JSON-RPC response, or raise its error as RpcError.

    Args:
        body: the response as JSON.

    Returns:
        The result.

    Raises:
        RpcError: the response's error, or -32603 for a malformed response.
    """
    try:
        response = _response_decoder.decode(body)
    except ValueError as exc:  # msgspec's errors and UnicodeDecodeError
        raise RpcError(INTERNAL_ERROR, f"malformed JSON-RPC response: {exc}") from None
    except RecursionError:
        raise RpcError(INTERNAL_ERROR, "malformed JSON-RPC response: nested too deeply") from None
    if response.error is not None:
        err = response.error
        raise RpcError(
            int(err.get("code", INTERNAL_ERROR)), str(err.get("message", "")), err.get("data")
        )
    return response.result


def exception_error(exc: BaseException) -> RpcError:
    """The RpcError a failed exposed method answers with.

    Args:
        exc: what the method raised.

    Returns:
        `exc` itself if it is an RpcError, else -32000 naming its type and message.
    """
    if isinstance(exc, RpcError):
        return exc
    return RpcError(SERVER_ERROR, f"{type(exc).__name__}: {exc}", {"type": type(exc).__name__})
