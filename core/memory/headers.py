"""The headers exchange of the memory:// broker, matched as RabbitMQ 4.x matches it.

A binding's arguments are compared in the form RabbitMQ receives them: encoded by pamqp
(the real client's encoder for method arguments: the smallest integer type, floats as
32-bit floats) and read with their types (fields.py). A message's headers are read
from its encoded properties. RabbitMQ 4.x (rabbit_exchange_type_headers) then compares
with Erlang's exact equality: a long 1 equals a byte 1 but never the float 1.0, a long
string equals a byte array of the same bytes, array and table values must match item by
item with their types, and a timestamp header counts in milliseconds. RabbitMQ 3.10
compared with `==`, under which 1.0 also matched 1 and a timestamp counted in seconds;
memory:// follows 4.x (see docs/decisions.md).

`x-match` is `all` (the default) or `any`, which skip binding keys starting with `x-`,
or `all-with-x` / `any-with-x`, which compare those too; `x-match` itself is never
compared, and a void binding value only asks for the header to be present.
"""

from __future__ import annotations

from typing import Any

from pamqp import encode as pamqp_encode

from . import fields

MODES = ("all", "any", "all-with-x", "any-with-x")


class Pattern:
    """What a binding of a headers exchange asks of a message's headers."""

    __slots__ = ("any", "wanted")

    def __init__(self, arguments: dict[str, Any]) -> None:
        table = pamqp_encode.field_table(arguments)  # the bytes the real client sends
        entries = fields.fields(table)
        mode = "all"
        for f in entries:
            if f.key == "x-match":
                if f.tag == "S":
                    mode = fields.typed(table, f.tag, f.value).decode("utf-8", "surrogateescape")
                break
        with_x = mode.endswith("-with-x")
        self.any = mode.startswith("any")
        wanted = []
        for f in entries:
            if f.key == "x-match" or (not with_x and f.key.startswith("x-")):
                continue
            void = f.tag == "V"
            value = None if void else fields.term(f.tag, fields.typed(table, f.tag, f.value))
            wanted.append((f.key, void, value))
        # (key, only presence asked, typed value)
        self.wanted: tuple[tuple[str, bool, Any], ...] = tuple(wanted)

    def matches(self, headers: dict[str, Any]) -> bool:
        """Whether headers (as `routing_headers` returns them) satisfy this binding."""
        for key, void, value in self.wanted:
            found = key in headers if void else headers.get(key) == value
            if found and self.any:
                return True
            if not found and not self.any:
                return False
        return not self.any


def binding_problem(arguments: dict[str, Any]) -> str | None:
    """RabbitMQ's PRECONDITION_FAILED text for a headers-exchange binding whose x-match is
    not one of MODES (or not a string), else None."""
    table = pamqp_encode.field_table(arguments)
    f = fields.lookup(table, "x-match")
    if f is None:
        return None
    value = fields.typed(table, f.tag, f.value)
    if f.tag == "S":
        if value.decode("utf-8", "surrogateescape") in MODES:
            return None
        return (
            f"Invalid x-match field value {fields.erl_binary(value)}; "
            "expected all, any, all-with-x, or any-with-x"
        )
    name = fields.TYPE_NAMES[f.tag]
    return (
        f"Invalid x-match field type {name} (value {fields.erl_term(name, value)}); "
        "expected longstr"
    )


def routing_headers(raw: bytes) -> dict[str, Any]:
    """A message's headers, from its encoded properties, as RabbitMQ 4.x routes on them:
    typed values by key (the last of a repeated key wins), timestamps in milliseconds."""
    table = fields.headers_table(raw)
    if table is None:
        return {}
    out: dict[str, Any] = {}
    for f in fields.fields(table):
        value = fields.typed(table, f.tag, f.value)
        if f.tag == "T":
            value *= 1000
        out[f.key] = fields.term(f.tag, value)
    return out
