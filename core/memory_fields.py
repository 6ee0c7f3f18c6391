"""Moved to `munggoggo.memory.fields`; this name keeps old imports working."""

from .memory.fields import (
    TYPE_NAMES,
    Field,
    array_items,
    edit,
    erl_binary,
    erl_error_tuple,
    erl_float,
    erl_string,
    erl_term,
    fields,
    headers_span,
    headers_table,
    lookup,
    term,
    typed,
    with_headers_table,
)

__all__ = [
    "TYPE_NAMES",
    "Field",
    "array_items",
    "edit",
    "erl_binary",
    "erl_error_tuple",
    "erl_float",
    "erl_string",
    "erl_term",
    "fields",
    "headers_span",
    "headers_table",
    "lookup",
    "term",
    "typed",
    "with_headers_table",
]
