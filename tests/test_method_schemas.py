"""Method contracts in `describe()["schemas"]`, on RabbitMQ and memory://: the JSON Schema of
each exposed method's parameters (an object: properties by name, the required ones) and of
its result, and its docstring, built from the type hints; behaviours' methods while they
run. `"methods"` stays the list of names.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from mesh_tools import Calc, Point, uid

from munggoggo import Agent, Behaviour, expose


class Documented(Behaviour):
    async def run(self) -> None:
        await asyncio.sleep(0.05)

    @expose
    async def scale(self, p: Point, factor: float = 1.0) -> list[float]:
        """Scale a point.

        Args:
            p: the point.
            factor: by how much.
        """
        return [p.x * factor, p.y * factor]


async def test_describe_carries_each_methods_contract(mesh_url):
    async with Calc(uid("calc"), url=mesh_url) as calc, Agent(uid("c"), url=mesh_url) as caller:
        info = await caller.call(calc.identity, "describe")
        schemas = info["schemas"]
        assert isinstance(info["methods"], list)
        assert sorted(schemas) == info["methods"]
        mul = schemas["mul"]
        assert mul["params"]["type"] == "object"
        assert mul["params"]["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer"}}
        assert mul["params"]["required"] == ["a", "b"]
        assert mul["result"] == {"type": "integer"}
        assert mul["doc"] is None  # Calc.mul has no docstring
        total = schemas["sum"]["params"]
        assert total["required"] == [] and total["properties"]["a"]["default"] == 0
        assert schemas["echo"]["result"] == {}  # Any: anything
        assert schemas["update"]["result"] == {"type": "null"}
        # A Struct parameter: its definition travels with the schema.
        norm = schemas["norm"]["params"]
        ref = norm["properties"]["p"]["$ref"]
        point = norm["$defs"][ref.rsplit("/", 1)[1]]
        assert point["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer"}}
        # The control plane documents itself.
        assert schemas["traces"]["params"]["properties"]["limit"] == {
            "type": "integer",
            "default": 100,
        }
        assert schemas["ping"]["doc"].startswith("Liveness over the mesh.")
        assert schemas["ping"]["result"] == {"type": "string"}


async def test_a_behaviours_methods_have_contracts_while_it_runs(mesh_url):
    async with Agent(uid("host"), url=mesh_url) as host, Agent(uid("c"), url=mesh_url) as caller:
        await host.add_behaviour(Documented(host))
        scale = (await caller.call(host.identity, "describe"))["schemas"]["scale"]
        assert scale["params"]["required"] == ["p"]
        assert scale["params"]["properties"]["factor"] == {"type": "number", "default": 1.0}
        assert scale["result"] == {"type": "array", "items": {"type": "number"}}
        assert scale["doc"].startswith("Scale a point.\n\nArgs:")
        await host.stop_behaviour("Documented")
        info = await caller.call(host.identity, "describe")
        assert "scale" not in info["schemas"] and "scale" not in info["methods"]


def test_the_params_schema_says_what_the_method_accepts():
    """What the schema requires and allows is what `bind` (the request's validation)
    requires and allows: checked by converting through msgspec with the same hints."""
    from munggoggo.rpc import ExposedMethod, RpcError
    from munggoggo.rpc_schemas import method_schema

    def f(self, a: int, b: str = "x", *, c: list[int] | None = None) -> dict[str, Any]:
        return {}

    method = ExposedMethod("f", f)
    schema = method_schema(method)
    params = schema["params"]
    assert params["required"] == ["a"]
    assert set(params["properties"]) == {"a", "b", "c"}
    assert params["additionalProperties"] is False
    assert schema["result"] == {"type": "object"}
    assert method.bind({"a": 1}) == {"a": 1, "b": "x", "c": None}
    for refused in ({}, {"a": 1, "d": 2}, {"a": "one"}):
        try:
            method.bind(refused)
        except RpcError as exc:
            assert exc.code == -32602
        else:
            raise AssertionError(f"{refused} accepted")
    assert msgspec.json.decode(msgspec.json.encode(schema)) == schema  # JSON all through


class Shade(msgspec.Struct):
    name: str


class S(msgspec.Struct):
    shade: Shade


class Tree(msgspec.Struct):
    children: list[Tree] = []


def test_a_result_type_stands_alone_unless_it_refers_to_itself():
    """A struct whose name begins another's (`S`, `Shade`) is inlined at the top like any
    other; only a recursive type stays a `$ref` to its definition."""
    from munggoggo.rpc_schemas import type_schema

    s = type_schema(S)
    assert s["type"] == "object" and "$ref" not in s
    assert s["properties"]["shade"] == {"$ref": "#/$defs/Shade"}
    assert set(s["$defs"]) == {"Shade"}
    tree = type_schema(Tree)
    assert tree["$ref"] == "#/$defs/Tree" and "Tree" in tree["$defs"]
