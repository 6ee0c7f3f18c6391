"""Encoded AMQP field tables read and edited as bytes, without decoding the values.

Decoding a table into Python values loses what the wire holds: the type of each value (a
byte 1, a long 1 and a double 1.0 are three values to RabbitMQ), and for some values the
value itself (a timestamp at or above 2^63, a string that is not UTF-8). Whoever must carry
a table on or compare it as a broker does reads it here instead: where the headers table is
in encoded properties, the entries of a table with their byte spans, and an edit that
keeps every entry it does not name byte for byte. Used by the copies the runtime makes of a
received message (core/header_copy.py) and by the memory:// broker (core/memory/fields.py).

Standard library and `_speedups` only; off the hot path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

from ._speedups import FrameError, encode_table

__all__ = ["Field", "edit", "fields", "headers_span", "headers_table", "value_end"]

_U32 = struct.Struct(">I")
_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS = 0x8000, 0x4000, 0x2000
# Bytes after the type octet of each fixed-size value type.
_FIXED_SIZE = {"t": 1, "b": 1, "B": 1, "s": 2, "u": 2, "I": 4, "i": 4, "f": 4}
_FIXED_SIZE.update({"l": 8, "L": 8, "T": 8, "d": 8, "D": 5, "V": 0})
_LENGTH_PREFIXED = frozenset("SxAF")  # long string, byte array, array, table


class Field(NamedTuple):
    """One entry of an encoded table: its key, type tag and where its bytes are."""

    key: str  # decoded with surrogateescape: any bytes round-trip
    tag: str  # the type octet as a character: "S", "I", "A", ...
    start: int  # the entry's first byte (its key's length octet)
    value: int  # the value's first byte, after the tag
    end: int  # one past the entry's last byte


def headers_span(raw: bytes) -> tuple[int, int] | None:
    """Where the headers table (length prefix included) is in encoded properties.

    Args:
        raw: encoded properties: property flags, then the present fields.

    Returns:
        (start, end) of the table, or None when the properties have no headers.

    Raises:
        FrameError: the properties are too short to hold what their flags say.
    """
    try:
        flags = raw[0] << 8 | raw[1]
        if not flags & _HEADERS:
            return None
        pos = 2
        if flags & _CONTENT_TYPE:
            pos += 1 + raw[pos]
        if flags & _CONTENT_ENCODING:
            pos += 1 + raw[pos]
        end = pos + 4 + _U32.unpack_from(raw, pos)[0]
    except (IndexError, struct.error):
        raise FrameError("truncated properties before or in the headers table") from None
    if end > len(raw):
        raise FrameError("headers table runs past the end of its properties")
    return pos, end


def headers_table(raw: bytes) -> bytes | None:
    """The encoded headers table of encoded properties, or None without headers."""
    span = headers_span(raw)
    return None if span is None else raw[span[0] : span[1]]


def value_end(data: bytes, tag: str, pos: int) -> int:
    """One past the value of type `tag` that starts at `pos` (after its tag octet).

    Raises:
        FrameError: `tag` is no AMQP value type.
    """
    size = _FIXED_SIZE.get(tag)
    if size is not None:
        return pos + size
    if tag in _LENGTH_PREFIXED:
        length: int = _U32.unpack_from(data, pos)[0]
        return pos + 4 + length
    raise FrameError(f"unknown field table value type {tag!r}")


def fields(table: bytes) -> list[Field]:
    """The entries of an encoded table (length prefix included), in wire order.

    Raises:
        FrameError: the table is truncated, or holds a value type AMQP does not have.
    """
    out = []
    try:
        pos, end = 4, 4 + _U32.unpack_from(table, 0)[0]
        if end > len(table):
            raise FrameError("field table runs past its end")
        while pos < end:
            start = pos
            key = table[pos + 1 : pos + 1 + table[pos]].decode("utf-8", "surrogateescape")
            pos += 1 + table[pos]
            tag = chr(table[pos])
            stop = value_end(table, tag, pos + 1)
            out.append(Field(key, tag, start, pos + 1, stop))
            pos = stop
    except (IndexError, struct.error):
        raise FrameError("truncated field table") from None
    if pos != end:
        raise FrameError("field table length does not match its content")
    return out


def edit(
    table: bytes | None, *, drop: Iterable[str] = (), store: dict[str, Any] | None = None
) -> bytes:
    """The table with the first entry of each `drop` key removed and each `store` key set
    (in place when present, else appended: RabbitMQ's keydelete and keystore). Entries not
    named keep their bytes, so their types survive.

    Args:
        table: an encoded table (length prefix included), or None for an empty one.
        drop: keys to remove.
        store: keys to set, to Python values (encoded as `_speedups.encode_table` does).

    Returns:
        The encoded table, length prefix included.

    Raises:
        FrameError: `table` is malformed. ValueError: a value of `store` the wire cannot carry.
    """
    dropping = set(drop)
    storing = dict(store or {})
    parts = []
    for field in fields(table) if table is not None else ():
        if field.key in dropping:
            dropping.discard(field.key)
            continue
        if field.key in storing:
            parts.append(_entry(field.key, storing.pop(field.key)))
            continue
        parts.append(table[field.start : field.end])  # type: ignore[index]
    parts.extend(_entry(key, value) for key, value in storing.items())
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def _entry(key: str, value: Any) -> bytes:
    return encode_table({key: value})[4:]
