"""The header table of a copy of a received message: a retry, a dead letter, a requeue.

A copy must carry the headers exactly as they were received: every field with the type and
bytes it came with. Decoding and re-encoding does not give that: AMQP has more field types
than Python has (a decimal, a uint16, a float32 and a timestamp all decode to plain Python
values that re-encode as other types), a timestamp at or above 2^63 decodes to an int no
signed field can carry, and a string that is not UTF-8 decodes to bytes. So the copy's table
is spliced from the received bytes: each original field is kept byte for byte unless the
copy drops or replaces it, and only the fields the copy adds are encoded.

Rare path (once per retry or dead letter): plain Python, no hot-path constraints.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from typing import Any

from ._speedups import Delivery, EncodedTable, FrameError, encode_table

__all__ = ["copy_headers", "header_table_entries"]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEADERS_FLAG = 0x2000
_SHORTSTR_FLAGS = (0x8000, 0x4000)  # content_type, content_encoding: before the headers
# Bytes after the type octet of each fixed-size field value type.
_FIXED_SIZE = {
    ord("t"): 1,
    ord("b"): 1,
    ord("B"): 1,
    ord("s"): 2,
    ord("u"): 2,
    ord("I"): 4,
    ord("i"): 4,
    ord("f"): 4,
    ord("l"): 8,
    ord("T"): 8,
    ord("d"): 8,
    ord("D"): 5,
    ord("V"): 0,
}
_LENGTH_PREFIXED = frozenset(map(ord, "SxFA"))  # long string, byte array, table, array


def header_table_entries(properties_raw: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of the header table in encoded properties, each kept as its wire bytes.

    Args:
        properties_raw: encoded properties (property flags, then the present fields), as
            `Delivery.properties_raw` holds them.

    Returns:
        (raw key, raw field) pairs in wire order, where the raw field is the key's short
        string followed by the typed value: concatenated they form the table's content.
        None when the properties hold no header table.

    Raises:
        FrameError: the properties or the table are truncated or hold an unknown type.
    """
    try:
        (flags,) = _U16.unpack_from(properties_raw, 0)
        if not flags & _HEADERS_FLAG:
            return None
        pos = 2
        for flag in _SHORTSTR_FLAGS:
            if flags & flag:
                pos += 1 + properties_raw[pos]
        (size,) = _U32.unpack_from(properties_raw, pos)
        pos += 4
        end = pos + size
        if end > len(properties_raw):
            raise FrameError("header table runs past the end of its properties")
        entries = []
        while pos < end:
            start = pos
            key_end = pos + 1 + properties_raw[pos]
            key = bytes(properties_raw[pos + 1 : key_end])
            pos = _skip_value(properties_raw, key_end)
            entries.append((key, bytes(properties_raw[start:pos])))
        if pos != end:
            raise FrameError("header table length does not match its content")
    except (IndexError, struct.error):
        raise FrameError("truncated header table") from None
    return entries


def _skip_value(data: bytes, pos: int) -> int:
    kind = data[pos]
    pos += 1
    size = _FIXED_SIZE.get(kind)
    if size is not None:
        return pos + size
    if kind in _LENGTH_PREFIXED:
        (size,) = _U32.unpack_from(data, pos)
        return pos + 4 + size
    raise FrameError(f"unknown field table value type {kind!r}")


def _wire_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def copy_headers(
    delivery: Delivery,
    changes: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    drop: Collection[str] = (),
) -> dict[str, Any]:
    """The header table for a copy of `delivery`: its own headers exactly as received,
    less `drop`, with `defaults` for what it lacks and `changes` over all.

    Args:
        delivery: the received message.
        changes: fields the copy sets (replacing a received field of the same name).
        defaults: fields the copy gets only if the received headers lack them.
        drop: names of received fields the copy leaves out.

    Returns:
        An `EncodedTable` (read-only; sent as spliced bytes) when the received table's
        bytes are known, else a plain dict built from the decoded headers.

    Raises:
        ValueError: a value in `changes` or `defaults` that the wire cannot carry.
    """
    received = delivery.properties.headers or {}
    added = {k: v for k, v in (defaults or {}).items() if k not in received}
    added.update(changes)
    removed = set(drop) | added.keys()
    values = {k: v for k, v in received.items() if k not in removed}
    values.update(added)
    raw = delivery.properties_raw
    entries = header_table_entries(raw) if raw is not None else None
    if entries is None:  # no table came (or a delivery built by hand): nothing to keep
        return values
    removed_raw = {_wire_key(k) for k in removed}
    kept = [field for key, field in entries if key not in removed_raw]
    new = encode_table(added)[4:] if added else b""  # the fields, without the length
    content = b"".join(kept) + new
    return EncodedTable(values, _U32.pack(len(content)) + content)
