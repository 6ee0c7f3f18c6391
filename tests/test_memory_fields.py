"""memory:// internals behind the differential tests: typed header tables, header edits
that keep bytes, the priority store, and binding arguments encoded like the real client.

What the brokers do with these is compared in tests/test_differential.py; these pin the
pieces memory:// needs that no broker shows directly.
"""

from __future__ import annotations

import struct
import uuid
from types import SimpleNamespace

import pytest
from pamqp import encode as pamqp_encode

from munggoggo._speedups import Properties, decode_table, encode_properties
from munggoggo.memory import MemoryBroker, MemoryConnection, fields
from munggoggo.memory.headers import Pattern, routing_headers
from munggoggo.memory.priority import PriorityReady


def table(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack(">I", len(body)) + body


def entry(key: str, tag: bytes, payload: bytes) -> bytes:
    return bytes([len(key)]) + key.encode() + tag + payload


DECIMAL = entry("d", b"D", b"\x02" + struct.pack(">i", 12345))
FLOAT32 = entry("f", b"f", struct.pack(">f", 0.25))
BCC = entry("BCC", b"A", b"\0\0\0\0")


def test_edit_keeps_the_bytes_of_entries_it_does_not_name():
    original = table(DECIMAL, BCC, FLOAT32, entry("k", b"b", b"\x05"))
    edited = fields.edit(original, drop=("BCC",), store={"k": "new", "x-death": [1]})
    # Stored keys replace in place or go last; the others are byte for byte as they were.
    assert edited == table(DECIMAL, FLOAT32, entry("k", b"S", b"\0\0\0\3new"),
                           entry("x-death", b"A", b"\0\0\0\5I\0\0\0\1"))  # fmt: skip
    # keydelete: only the first of a repeated key goes.
    assert fields.edit(table(BCC, BCC), drop=("BCC",)) == table(BCC)
    assert fields.edit(None, store={"a": 1}) == table(entry("a", b"I", b"\0\0\0\1"))


def test_with_headers_table_splices_and_leaves_props_alone():
    props = Properties(content_type="text/plain", headers={"a": 1}, priority=3)
    raw = fields.with_headers_table(props, table(DECIMAL))
    assert props.headers == {"a": 1}
    assert fields.headers_table(raw) == table(DECIMAL)  # a decimal stays a decimal
    assert decode_table(fields.headers_table(raw)) == {"d": (2, 12345)}
    assert fields.with_headers_table(props, None) == encode_properties(
        Properties(content_type="text/plain", priority=3)
    )


def test_typed_values_and_rabbitmq_type_names():
    raw = table(DECIMAL, FLOAT32, entry("t", b"T", struct.pack(">Q", 5)),
                entry("a", b"A", b"\0\0\0\2b\1"))  # fmt: skip
    found = {f.key: (fields.TYPE_NAMES[f.tag], fields.typed(raw, f.tag, f.value))
             for f in fields.fields(raw)}  # fmt: skip
    assert found == {
        "d": ("decimal", (2, 12345)),
        "f": ("float", 0.25),
        "t": ("timestamp", 5),
        "a": ("array", (("byte", 1),)),
    }
    # Top-level routing values: timestamps in milliseconds, a float never equals an int.
    props = struct.pack(">H", 0x2000) + raw
    headers = routing_headers(props)
    assert headers["t"] == ("int", 5000) and headers["f"] != ("int", 0)


def test_patterns_compare_as_pamqp_encodes_bindings():
    assert Pattern({"a": 1}).matches({"a": ("int", 1)})
    assert not Pattern({"a": 1.0}).matches({"a": ("int", 1)})
    assert Pattern({"x-match": "any", "a": None, "b": 2}).matches({"a": ("atom", None)})
    assert not Pattern({"x-match": "all", "x-k": "v"}).wanted  # x- keys skipped
    assert Pattern({"x-match": "all-with-x", "x-k": "v"}).wanted[0][0] == "x-k"


def test_priority_store_orders_by_level_then_age():
    def msg(seq: int, priority: int | None) -> SimpleNamespace:
        props = Properties(priority=priority)
        return SimpleNamespace(seq=seq, content=SimpleNamespace(peek=lambda p=props: p))

    ready = PriorityReady(3)
    for seq, p in enumerate([None, 9, 1, 3, 0, 2]):
        ready.append(msg(seq, p))
    assert [m.seq for m in ready] == [1, 3, 5, 2, 0, 4]
    taken = [ready.popleft() for _ in range(3)]
    assert ready[0].seq == 2 and len(ready) == 3
    ready.requeue([taken[2], taken[0]])  # back to their levels, ahead of newer ones there
    assert [m.seq for m in ready] == [1, 5, 2, 0, 4]
    with pytest.raises(IndexError):
        ready[1]
    assert PriorityReady(0).maximum == 1  # RabbitMQ 4.x


async def test_binding_arguments_fail_to_encode_as_with_the_real_client():
    name = f"fields-{uuid.uuid4().hex[:8]}"
    try:
        async with MemoryConnection(f"memory://{name}") as conn:
            ch = await conn.channel()
            await ch.queue_declare("q", exclusive=True)
            for args in ({"a": b"bytes"}, {"a": 2**70}):
                with pytest.raises(TypeError) as memory:
                    await ch.queue_bind("q", "amq.headers", "", args)
                with pytest.raises(TypeError) as client:
                    pamqp_encode.field_table(args)  # what the real client's bind raises
                assert str(memory.value) == str(client.value)
            # Nothing was sent: the channel goes on.
            assert (await ch.queue_declare("q", passive=True)).queue == "q"
    finally:
        MemoryBroker.reset(name)
