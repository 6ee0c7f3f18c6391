"""Method contracts: the JSON Schema of an exposed method's parameters and result.

Built from the method's type hints by msgspec (`msgspec.json.schema_components`), the same
hints that validate a request's params, so the schema says what the agent accepts:
`params` is an object schema (`properties` by parameter name, `required` for those without
a default, no other members allowed), `result` the schema of the return annotation (`{}`,
anything, when there is none). Types the schema refers to more than once (a msgspec Struct
parameter, say) are in the schema's own `$defs`, so each schema stands alone. A hint
msgspec cannot describe becomes `{}` rather than failing `describe()`.

`body_schema` is the same for a behaviour's declared body type (`Behaviour.describe()`), and
`hoist_defs` moves a schema's own `$defs` into a document's shared definitions (the AsyncAPI
and OpenAPI documents, where a `$ref` resolves against the whole document).
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import msgspec

from .rpc import ExposedMethod

__all__ = ["DefsIndex", "body_schema", "hoist_defs", "method_schema", "type_schema"]

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


def body_schema(body_type: Any) -> dict[str, Any] | None:
    """The JSON Schema of a declared message body type.

    Args:
        body_type: the type a body decodes into (a msgspec Struct, a builtin type), or None
            when none is declared.

    Returns:
        Its schema (`type_schema`), or None when no type is declared.
    """
    return None if body_type is None else type_schema(body_type)


class DefsIndex:
    """What `hoist_defs` remembers of one document's shared definitions between calls.

    Without it each call looks for a free `Name_<n>` from 2 up, comparing with every copy
    hoisted before: a document of many agents that each define their own `Name` costs
    time quadratic in their number. Pass one `DefsIndex` along with the same `defs`.

    Attributes:
        variants: (safe name, canonical JSON of a hoisted definition) -> its key in `defs`.
        next_suffix: safe name -> the next numbered suffix to try.
    """

    __slots__ = ("next_suffix", "variants")

    def __init__(self) -> None:
        self.variants: dict[tuple[str, bytes], str] = {}
        self.next_suffix: dict[str, int] = {}


def _canonical(definition: Any) -> bytes:
    try:
        return msgspec.json.encode(definition, order="sorted")
    except (TypeError, ValueError, OverflowError):  # not JSON: never matches another
        return repr(id(definition)).encode()


def hoist_defs(
    schema: Any, defs: dict[str, Any], ref_prefix: str, index: DefsIndex | None = None
) -> Any:
    """A schema whose own `$defs` move into a document's shared definitions.

    A schema from `type_schema` stands alone: its references point at its own `$defs`
    (`#/$defs/Name`). Inside a larger document (AsyncAPI, OpenAPI) a reference resolves
    against the document, so the definitions go to one place of it (`defs`, e.g. the
    document's `components.schemas`) and the references are rewritten to point there. A
    name already taken by a different definition gets a numbered suffix (`Name_2`).

    Args:
        schema: the schema (not modified).
        defs: the document's shared definitions, filled in place.
        ref_prefix: what a reference to a shared definition starts with
            (`#/components/schemas/`).
        index: what earlier calls with the same `defs` hoisted (updated), so that a
            clash is resolved without trying every suffix again; None: a fresh one.

    Returns:
        The schema without `$defs`, its references rewritten.
    """
    if not isinstance(schema, dict):
        return schema
    own: dict[str, Any] = schema.get("$defs") or {}
    if not isinstance(own, dict):
        own = {}  # no definitions a reference could name
    if index is None:
        index = DefsIndex()
    renames = {name: _safe_name(name) for name in own}
    # Reusing a copy hoisted before can be undone when a name it refers to moves later;
    # past this many rounds only new keys are handed out, which never clash again.
    rounds = 2 * len(own) + 2
    while True:
        moved = {name: _rewrite_refs(d, renames, ref_prefix) for name, d in own.items()}
        clashes = [n for n in own if renames[n] in defs and defs[renames[n]] != moved[n]]
        if not clashes:
            break
        # One name moves per round, one that refers to no other clashing one if there is
        # such: a definition clashes too when only a name it refers to does, and moving
        # that name first lets it match a copy hoisted before (`Name_2` again).
        name = next((n for n in clashes if not _refers_to(own[n], set(clashes) - {n})), clashes[0])
        base = _safe_name(name)
        rounds -= 1
        known = index.variants.get((base, _canonical(moved[name]))) if rounds > 0 else None
        if known is not None and known not in renames.values() and defs.get(known) == moved[name]:
            renames[name] = known
        else:
            taken = set(renames.values())
            renames[name] = _free_key(base, moved[name], defs, taken, index, rounds > 0)
    for name, definition in moved.items():
        defs[renames[name]] = definition
        index.variants.setdefault((_safe_name(name), _canonical(definition)), renames[name])
    return _rewrite_refs({k: v for k, v in schema.items() if k != "$defs"}, renames, ref_prefix)


def _free_key(
    base: str,
    definition: Any,
    defs: dict[str, Any],
    renamed: set[str],
    index: DefsIndex,
    reuse: bool = True,
) -> str:
    """The first `base_<n>` from the index's next suffix on that holds this same
    definition already, or is neither in `defs` nor taken by this schema's own renames.
    """
    n = index.next_suffix.get(base, 2)
    while True:
        candidate = f"{base}_{n}"
        if candidate not in renamed:
            if candidate not in defs:
                index.next_suffix[base] = n + 1
                return candidate
            if reuse and defs[candidate] == definition:
                return candidate
        n += 1


def _refers_to(value: Any, names: set[str]) -> bool:
    """Whether a schema refers to one of its document's `$defs` by these names."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in names:
            return True
        return any(_refers_to(v, names) for v in value.values())
    if isinstance(value, list):
        return any(_refers_to(v, names) for v in value)
    return False


def _safe_name(name: str) -> str:
    """A definition name a document accepts as a key: letters, digits, `_`, `.`, `-`."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "_"


def _rewrite_refs(value: Any, renames: dict[str, str], ref_prefix: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith("#/$defs/"):
                name = item[len("#/$defs/") :]
                out[key] = ref_prefix + renames.get(name, _safe_name(name))
            else:
                out[key] = _rewrite_refs(item, renames, ref_prefix)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(v, renames, ref_prefix) for v in value]
    return value


def _inline(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A top-level `$ref` replaced by what it names; the other components kept in `$defs`
    (references inside still resolve against the document root, which is this schema).
    """
    ref = schema.get("$ref")
    if ref is not None and len(schema) == 1 and ref.startswith("#/$defs/"):
        name = ref[len("#/$defs/") :]
        target = components.get(name)
        # A recursive type refers to itself: it must stay a definition.
        if target is not None and not _refers_to(target, {name}):
            schema = dict(target)
            components = {k: v for k, v in components.items() if k != name}
    if components:
        schema = {**schema, "$defs": components}
    return schema


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
