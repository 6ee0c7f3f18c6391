"""Encoded field tables as RabbitMQ reads them, for the memory:// broker.

The client decodes a field table into Python values, which loses what RabbitMQ keeps: the
type of every value (a byte 1, a long 1 and a double 1.0 are three values to it) and the
bytes of the entries it does not touch. This module reads the encoded form instead: the
type names RabbitMQ quotes in its errors, values typed the way RabbitMQ compares them, and
edits of a message's headers (BCC stripped, x-death set, reply-to rewritten) that keep
every other entry byte for byte, as RabbitMQ does. Erlang's formatting of the few terms
that appear in error texts lives here too. Standard library only; the tables it reads
were decoded successfully before (the broker decodes every publish), so they are
well-formed.
"""

from __future__ import annotations

import struct
from typing import Any

from .._speedups import Properties, encode_properties
from ..field_tables import Field, edit, fields, headers_span, headers_table, value_end

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

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

# RabbitMQ's names for the field types (rabbit_binary_parser): what its errors quote.
TYPE_NAMES = {
    "b": "byte",
    "B": "unsignedbyte",
    "s": "short",
    "u": "unsignedshort",
    "I": "signedint",
    "i": "unsignedint",
    "l": "long",
    "L": "long",  # RabbitMQ reads both as a signed 64-bit long
    "f": "float",
    "d": "double",
    "D": "decimal",
    "T": "timestamp",
    "t": "bool",
    "S": "longstr",
    "x": "binary",
    "V": "void",
    "A": "array",
    "F": "table",
}
_NUMBERS = {
    "b": struct.Struct(">b"),
    "B": struct.Struct(">B"),
    "s": struct.Struct(">h"),
    "u": struct.Struct(">H"),
    "I": struct.Struct(">i"),
    "i": struct.Struct(">I"),
    "l": struct.Struct(">q"),
    "L": struct.Struct(">q"),
    "f": struct.Struct(">f"),
    "d": struct.Struct(">d"),
    "T": struct.Struct(">Q"),
}
_INTEGERS = frozenset("bBsuIilLT")
_FLOATS = frozenset("fd")


# --------------------------------------------------------------------------- reading


def lookup(table: bytes | None, key: str) -> Field | None:
    """The first entry called `key` (RabbitMQ's table_lookup), or None."""
    if table is None:
        return None
    for field in fields(table):
        if field.key == key:
            return field
    return None


def typed(data: bytes, tag: str, pos: int) -> Any:
    """The value at `pos` as Erlang holds it after rabbit_binary_parser: numbers as int or
    float, strings and byte arrays as bytes, bool as bool, void as None, decimal as
    (scale, unsigned value), timestamp as int seconds; an array as a tuple of
    (type name, value) and a table as a tuple of (key, type name, value), in order."""
    if tag in _NUMBERS:
        return _NUMBERS[tag].unpack_from(data, pos)[0]
    if tag in "Sx":
        return data[pos + 4 : pos + 4 + _U32.unpack_from(data, pos)[0]]
    if tag == "t":
        return data[pos] != 0
    if tag == "D":
        return (data[pos], _U32.unpack_from(data, pos + 1)[0])
    if tag == "V":
        return None
    end = pos + 4 + _U32.unpack_from(data, pos)[0]
    if tag == "F":
        table = data[pos:end]
        return tuple(
            (
                f.key.encode("utf-8", "surrogateescape"),
                TYPE_NAMES[f.tag],
                typed(table, f.tag, f.value),
            )
            for f in fields(table)
        )
    items = []
    pos += 4
    while pos < end:
        item_tag = chr(data[pos])
        items.append((TYPE_NAMES[item_tag], typed(data, item_tag, pos + 1)))
        pos = value_end(data, item_tag, pos + 1)
    return tuple(items)


def term(tag: str, value: Any) -> tuple[str, Any]:
    """A top-level value made comparable the way Erlang's =:= compares it: integers of any
    width equal each other, never a float; byte arrays equal long strings of the same
    bytes; arrays and tables are both lists."""
    if tag in _INTEGERS:
        return ("int", value)
    if tag in _FLOATS:
        return ("float", value)
    if tag in "Sx":
        return ("binary", value)
    if tag in "AF":
        return ("list", value)
    if tag == "D":
        return ("decimal", value)
    return ("atom", value)  # bool, void


def array_items(table: bytes, field: Field) -> list[tuple[str, Any]]:
    """The (type tag, value) items of an array entry, values as `typed` returns them."""
    out = []
    pos, end = field.value + 4, field.end
    while pos < end:
        tag = chr(table[pos])
        out.append((tag, typed(table, tag, pos + 1)))
        pos = value_end(table, tag, pos + 1)
    return out


# --------------------------------------------------------------------------- editing


def with_headers_table(props: Properties, table: bytes | None) -> bytes:
    """Encode `props` with `table` (encoded) as their headers, whatever props.headers is
    (props itself is left as it was)."""
    saved = props.headers
    # An empty table is a four-byte placeholder where the table goes.
    props.headers = None if table is None else {}
    try:
        raw = encode_properties(props)
    finally:
        props.headers = saved
    if table is None:
        return raw
    span = headers_span(raw)
    assert span is not None
    return raw[: span[0]] + table + raw[span[1] :]


# --------------------------------------------------------------------------- Erlang terms

# What io_lib:printable_list accepts (latin1): printed as "..." by ~p, else as a list.
_PRINTABLE = frozenset(range(32, 127)) | frozenset(range(160, 256)) | frozenset(b"\n\r\t\v\b\f\x1b")
_ESCAPES = {
    10: "\\n",
    13: "\\r",
    9: "\\t",
    11: "\\v",
    8: "\\b",
    12: "\\f",
    27: "\\e",
    34: '\\"',
    92: "\\\\",
}


def erl_string(data: bytes) -> str:
    """Erlang's ~p of a list of bytes: "text" when printable (latin1), else [1,2,3]."""
    if data and all(b in _PRINTABLE for b in data):
        return '"' + "".join(_ESCAPES.get(b, chr(b)) for b in data) + '"'
    return "[" + ",".join(str(b) for b in data) + "]"


def erl_binary(data: bytes) -> str:
    """Erlang's ~tp of a binary: <<"text">> (ASCII or latin1), <<"text"/utf8>>, or
    <<1,2,3>> when it is not printable."""
    if all(b < 128 and b in _PRINTABLE for b in data):
        return '<<"' + "".join(_ESCAPES.get(b, chr(b)) for b in data) + '">>'
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"/utf8>>'
    if all(b in _PRINTABLE for b in data):
        return '<<"' + "".join(_ESCAPES.get(b, chr(b)) for b in data) + '">>'
    return "<<" + ",".join(str(b) for b in data) + ">>"


def erl_float(value: float) -> str:
    """Erlang's shortest round-trip float: 1.5, 1.0e-5, 1.0e20."""
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{int(exponent)}"


def erl_term(type_name: str, value: Any) -> str:
    """Erlang's ~tp of a value `typed` returned for a field of RabbitMQ type `type_name`."""
    if type_name in ("longstr", "binary"):
        return erl_binary(value)
    if type_name in ("float", "double"):
        return erl_float(value)
    if type_name == "bool":
        return "true" if value else "false"
    if type_name == "void":
        return "undefined"
    if type_name == "decimal":
        return f"{{{value[0]},{value[1]}}}"
    if type_name == "array":
        return "[" + ",".join(f"{{{t},{erl_term(t, v)}}}" for t, v in value) + "]"
    if type_name == "table":
        return (
            "[" + ",".join(f"{{{erl_binary(k)},{t},{erl_term(t, v)}}}" for k, t, v in value) + "]"
        )
    return str(value)


def erl_error_tuple(column: int, name: str, value: str) -> str:
    """`{name,value}` as ~p prints it at `column`: unless it ends before column 79 (found
    by trying RabbitMQ), the value goes on a line of its own, indented to just after the
    brace."""
    flat = f"{{{name},{value}}}"
    if column + len(flat) <= 78:
        return flat
    return f"{{{name},\n{' ' * (column + 1)}{value}}}"
