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

from collections.abc import Collection, Mapping
from typing import Any

from ._speedups import Delivery, EncodedTable
from .field_tables import edit, fields, headers_table

__all__ = ["copy_headers", "header_table_entries"]


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
    table = headers_table(properties_raw)
    if table is None:
        return None
    return [
        (field.key.encode("utf-8", "surrogateescape"), table[field.start : field.end])
        for field in fields(table)
    ]


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
        FrameError: the received table is malformed.
    """
    received = delivery.properties.headers or {}
    added = {k: v for k, v in (defaults or {}).items() if k not in received}
    added.update(changes)
    dropped = set(drop) - added.keys()
    values = {k: v for k, v in received.items() if k not in dropped}
    values.update(added)
    raw = delivery.properties_raw
    table = headers_table(raw) if raw is not None else None
    if table is None:  # no table came (or a delivery built by hand): nothing to keep
        return values
    return EncodedTable(values, edit(table, drop=dropped, store=added))
