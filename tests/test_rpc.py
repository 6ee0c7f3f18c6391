"""core/rpc.py: JSON-RPC 2.0 between agents, on RabbitMQ and memory://.

Calls by position and by name, parameter validation against the method's type hints
(-32602), unexposed and private methods (-32601), an exception inside a method (-32000,
the callee keeps serving), unknown agents and timeouts; the codec on its own (requests,
responses, notifications, parse errors); and a result JSON cannot carry (inf, -inf, NaN,
anywhere inside it), answered with a JSON-RPC error (-32603) for any caller: msgspec would
write it as null, a different answer than the method gave.

Other RPC files: test_rpc_replies.py (which replies answer a call), test_reachability.py
(calls in flight when a connection drops), test_poison_rpc.py (malformed requests),
test_interop_rpc.py (a plain AMQP client on the wire).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import msgspec
import pytest
from mesh_tools import Calc, uid

from munggoggo import Agent, RpcError, RpcTimeout, expose
from munggoggo.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    SERVER_ERROR,
    ExposedMethod,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
    exception_error,
    exposed_methods,
    is_notification,
)

pytestmark = pytest.mark.timeout(30)


class Box(msgspec.Struct):
    value: float


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Numbers(Agent):
    @expose
    def infinite(self) -> float:
        return math.inf

    @expose
    async def not_a_number(self) -> list[float]:
        return [1.0, math.nan]

    @expose
    def boxed(self) -> dict[str, Box]:
        return {"b": Box(-math.inf)}

    @expose
    def point(self) -> Point:
        return Point(0.0, math.nan)

    @expose
    def finite(self) -> list[float | None]:
        return [1.5, None, -0.0]


@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, math.nan, [1, [2, (math.nan,)]], {"a": {"b": math.inf}}, {math.nan}],
)
def test_encoding_a_non_finite_result_raises(value):
    with pytest.raises(ValueError, match="inf or NaN"):
        encode_result(value, 1)


def test_finite_results_and_nulls_encode_as_before():
    assert encode_result([1.5, None, {"x": None}], 7) == (
        b'{"jsonrpc":"2.0","result":[1.5,null,{"x":null}],"id":7}'
    )
    assert encode_result(None, None) == b'{"jsonrpc":"2.0","result":null,"id":null}'


async def test_an_agent_answers_a_non_finite_result_with_an_error(mesh_url):
    async with (
        Numbers(uid("numbers"), url=mesh_url) as numbers,
        Agent(uid("caller"), url=mesh_url) as caller,
    ):
        for method in ("infinite", "not_a_number", "boxed", "point"):
            with pytest.raises(RpcError) as caught:
                await caller.call(numbers.identity, method, timeout=5)
            assert caught.value.code == INTERNAL_ERROR, method
            assert "inf or NaN" in caught.value.message
        assert await caller.call(numbers.identity, "finite", timeout=5) == [1.5, None, -0.0]


# -- calls between agents ------------------------------------------------------------


async def test_rpc_results_and_errors(mesh_url):
    calc = Calc(uid("calc"), url=mesh_url)
    caller = Agent(uid("caller"), url=mesh_url)
    async with calc, caller:
        assert await caller.call(calc.identity, "mul", 6, 7) == 42
        assert await caller.call(calc.identity, "mul", a=3, b=5) == 15
        assert await caller.call(calc.identity, "norm", {"x": 3, "y": 4}) == 25
        # Param names that are also call()'s own keywords travel as data with call_params.
        named = {"target": "t", "method": "m", "timeout": 3}
        assert await caller.call_params(calc.identity, "schedule", named) == "t.m in 3s"
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "mul", "six", 7)
        assert info.value.code == -32602
        # Our prefix names the method; msgspec's account of the mismatch follows it.
        prefix = "invalid params for mul: "
        assert info.value.message.startswith(prefix) and info.value.message[len(prefix) :].strip()
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "not_exposed")
        assert info.value.code == -32601
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "_exposed")
        assert info.value.code == -32601
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "div", 1, 0)
        assert info.value.code == -32000 and "ZeroDivisionError" in info.value.message
        # The callee survived its exception.
        assert await caller.call(calc.identity, "div", 1, 4) == 0.25
        with pytest.raises(RpcError) as info:
            await caller.call(uid("nobody"), "mul", 1, 2)
        assert info.value.code == -32001 and "unknown agent" in info.value.message
        with pytest.raises(RpcTimeout):
            await caller.call(calc.identity, "slow", 2.0, timeout=0.2)
        # A late reply to a timed-out call is dropped, the next call is unaffected.
        assert await caller.call(calc.identity, "mul", 2, 2) == 4


async def test_an_agent_can_call_its_own_methods(mesh_url):
    calc = Calc(uid("calc"), url=mesh_url)
    async with calc:
        # The request lands in the caller's own inbox: it must be served, not taken for
        # the reply (it carries the caller's call id).
        assert await calc.call(calc.identity, "mul", 6, 7) == 42
        with pytest.raises(RpcError) as info:
            await calc.call(calc.identity, "not_exposed")
        assert info.value.code == -32601
        assert calc.identity not in {p["identity"] for p in await calc.peers(timeout=0.3)}


async def test_many_concurrent_rpc_calls(mesh_url):
    calc = Calc(uid("calc"), url=mesh_url)
    caller = Agent(uid("caller"), url=mesh_url)
    async with calc, caller:
        results = await asyncio.gather(
            *(caller.call(calc.identity, "mul", i, 2) for i in range(300))
        )
        assert results == [i * 2 for i in range(300)]


# -- the codec and the method table, on their own -------------------------------------


def test_a_request_round_trips_and_a_missing_id_makes_a_notification():
    body = encode_request("calc.mul", [6, 7], "call-1")
    request = decode_request(body)
    assert (request.jsonrpc, request.method, request.params, request.id) == (
        "2.0",
        "calc.mul",
        [6, 7],
        "call-1",
    )
    assert not is_notification(body)
    named = decode_request(encode_request("m", {"a": 1}, None))
    assert named.params == {"a": 1} and named.id is None
    assert is_notification(encode_request("m", None, None))
    assert b"params" not in encode_request("m", [], "x")  # no params: the member is left out
    assert not is_notification(b"{not json")


@pytest.mark.parametrize(
    ("body", "code", "request_id"),
    [
        (b"{", PARSE_ERROR, None),
        (b"\xff", PARSE_ERROR, None),
        (b"[" * 100_000, PARSE_ERROR, None),
        (b'{"jsonrpc": "2.0", "id": 5}', INVALID_REQUEST, 5),
        (b'{"jsonrpc": "1.0", "method": "m", "id": "a"}', INVALID_REQUEST, "a"),
        (b"[1, 2]", INVALID_REQUEST, None),
    ],
)
def test_a_bad_request_is_an_error_that_keeps_the_id_it_could_read(body, code, request_id):
    with pytest.raises(RpcError) as caught:
        decode_request(body)
    assert caught.value.code == code
    assert caught.value.request_id == request_id


def test_a_response_gives_its_result_or_raises_its_error():
    assert decode_response(encode_result({"x": [1, 2]}, "c1")) == {"x": [1, 2]}
    error = RpcError(-32050, "refused", {"why": "asked to"})
    with pytest.raises(RpcError) as caught:
        decode_response(encode_error(error, "c2"))
    assert (caught.value.code, caught.value.message, caught.value.data) == (
        -32050,
        "refused",
        {"why": "asked to"},
    )
    for garbage in (b"", b"{", b'{"result": 1, "id": []}', b"[" * 100_000):
        with pytest.raises(RpcError) as caught:
            decode_response(garbage)
        assert caught.value.code == INTERNAL_ERROR


def test_an_exception_in_a_method_becomes_a_server_error_an_rpc_error_stays_itself():
    error = exception_error(ValueError("no such thing"))
    assert (error.code, error.message, error.data) == (
        SERVER_ERROR,
        "ValueError: no such thing",
        {"type": "ValueError"},
    )
    own = RpcError(-32050, "mine")
    assert exception_error(own) is own


def test_private_methods_cannot_be_exposed():
    def _hidden(self) -> None: ...

    with pytest.raises(ValueError, match="private and dunder methods stay private"):
        expose(_hidden)


def test_exposed_methods_are_inherited_until_overridden_without_expose():
    class Base(Agent):
        @expose
        def kept(self) -> int:
            return 1

        @expose
        def hidden_later(self) -> int:
            return 2

        def plain(self) -> int:
            return 3

    class Child(Base):
        def hidden_later(self) -> int:  # no @expose: no longer callable
            return 4

        @expose
        async def added(self) -> int:
            return 5

    assert {"kept", "hidden_later"} <= set(exposed_methods(Base))
    methods = exposed_methods(Child)
    assert {"kept", "added"} <= set(methods)
    assert "hidden_later" not in methods and "plain" not in methods
    assert methods["added"].is_async and not methods["kept"].is_async


def test_params_bind_by_position_or_by_name_against_the_type_hints():
    def schedule(self, target: str, delay: float, repeat: int = 1) -> None: ...

    method = ExposedMethod("schedule", schedule)
    assert method.positional == ["target", "delay", "repeat"]
    assert method.bind(["t", 2]) == {"target": "t", "delay": 2.0, "repeat": 1}
    assert method.bind({"repeat": 3, "delay": 0.5, "target": "u"}) == {
        "target": "u",
        "delay": 0.5,
        "repeat": 3,
    }
    for bad in (["t", 1, 2, 3], {"target": "t"}, {"target": "t", "delay": 1, "other": 0}):
        with pytest.raises(RpcError) as caught:
            method.bind(bad)
        assert caught.value.code == INVALID_PARAMS
    with pytest.raises(RpcError) as caught:
        method.bind(["t", 1, 2, 3])
    assert caught.value.message == "schedule() takes 3 parameter(s), got 4"
    with pytest.raises(RpcError) as caught:
        method.bind({"target": 1, "delay": "soon"})
    assert caught.value.message.startswith("invalid params for schedule: ")
