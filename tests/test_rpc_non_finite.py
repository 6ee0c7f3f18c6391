"""An RPC result JSON cannot carry (inf, -inf, NaN, anywhere inside it) is answered with a
JSON-RPC error (-32603), for any caller: msgspec would write it as null, a different answer
than the method gave. On RabbitMQ and memory://.
"""

from __future__ import annotations

import dataclasses
import math

import msgspec
import pytest
from mesh_tools import uid

from munggoggo import Agent, RpcError, expose
from munggoggo.rpc import INTERNAL_ERROR, encode_result

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
