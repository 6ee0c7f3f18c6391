"""Method contracts: the JSON Schema of an exposed method's parameters and result.

Built from the method's type hints by msgspec (`msgspec.json.schema_components`), the same
hints that validate a request's params, so the schema says what the agent accepts:
`params` is an object schema (`properties` by parameter name, `required` for those without
a default, no other members allowed), `result` the schema of the return annotation (`{}`,
anything, when there is none). Types the schema refers to more than once (a msgspec Struct
parameter, say) are in the schema's own `$defs`, so each schema stands alone. A hint
msgspec cannot describe becomes `{}` rather than failing `describe()`.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import msgspec

from .rpc import ExposedMethod

__all__ = ["method_schema", "type_schema"]

_REF_TEMPLATE = "#/$defs/{name}"


def type_schema(type_: Any) -> dict[str, Any]:
    """The JSON Schema of one type, standing alone.

    Args:
        type_: a type msgspec understands (`Any` for anything).

    Returns:
        The schema, with the definitions it refers to in its `$defs`; `{}` (anything)
        when msgspec cannot describe the type.
    """
    try:
        (schema,), components = msgspec.json.schema_components((type_,), ref_template=_REF_TEMPLATE)
    except (TypeError, ValueError):
        return {}
    return _inline(schema, components)


def _inline(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A top-level `$ref` replaced by what it names; the other components kept in `$defs`
    (references inside still resolve against the document root, which is this schema).
    """
    ref = schema.get("$ref")
    if ref is not None and len(schema) == 1 and ref.startswith("#/$defs/"):
        name = ref[len("#/$defs/") :]
        target = components.get(name)
        # A recursive type refers to itself: it must stay a definition.
        if target is not None and not _refers_to(target, ref):
            schema = dict(target)
            components = {k: v for k, v in components.items() if k != name}
    if components:
        schema = {**schema, "$defs": components}
    return schema


def _refers_to(node: Any, ref: str) -> bool:
    """Whether a `$ref` equal to `ref` occurs anywhere in `node` (a whole value, so a
    definition `Shade` is not taken for a reference to `S`).
    """
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_refers_to(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_refers_to(v, ref) for v in node)
    return False


def _params_schema(method: ExposedMethod) -> dict[str, Any]:
    schema = type_schema(method.params_type)
    if schema.get("type") == "object":
        schema.pop("title", None)  # the generated struct's name says nothing to a caller
        return schema
    # msgspec could not describe one of the hints: describe each parameter on its own.
    fields = msgspec.structs.fields(method.params_type)
    return {
        "type": "object",
        "properties": {f.name: type_schema(f.type) for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }


def method_schema(method: ExposedMethod) -> dict[str, Any]:
    """The contract of one exposed method, as `describe()` reports it under `schemas`.

    Args:
        method: the exposed method.

    Returns:
        `params` (the JSON Schema of its parameters: an object, `properties` by name,
        `required`), `result` (the JSON Schema of its return type) and `doc` (its
        docstring, cleaned of indentation, or None).
    """
    try:
        hints = typing.get_type_hints(method.func)
    except Exception:  # an unresolvable annotation: the params were built without it too
        hints = {}
    result = type_schema(hints["return"]) if "return" in hints else {}
    return {
        "params": _params_schema(method),
        "result": result,
        "doc": inspect.getdoc(method.func),
    }
