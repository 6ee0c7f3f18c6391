"""Copies of a received message (a retry, a dead letter, a requeue) carry its headers exactly
as they came, and a message that cannot be copied costs that message alone.

Any AMQP client can send header fields that decode to Python values which do not encode
back to the same field (a timestamp at or above 2^63, a decimal, a uint16, a float32, a
string that is not UTF-8). The copy splices the received table's bytes instead of
re-encoding them: every received field is on the copy byte for byte. The messages here are
published from hand-encoded properties with our own client (our encoder builds only what
Python values map to).
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import struct

import pytest
from broker_tools import eventually
from mesh_tools import uid

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, Template
from munggoggo._speedups import DELIVER, EncodedTable, _frames_py
from munggoggo.agent import REASON_HEADER, RETRIES_HEADER
from munggoggo.deadletters import requeue_properties
from munggoggo.header_copy import copy_headers, header_table_entries
from munggoggo.wire import DEAD_LETTER_QUEUE

IMPLEMENTATIONS = [_frames_py]
try:
    from munggoggo._speedups import _frames  # type: ignore[attr-defined]
except ImportError:
    pass
else:
    IMPLEMENTATIONS.append(_frames)

WAIT = 20.0


def _field(key: bytes, kind: bytes, value: bytes) -> bytes:
    return bytes([len(key)]) + key + kind + value


def _long(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


# Fields that decode to Python values which our encoder writes back as another type (or
# refuses): each must reach a copy byte for byte.
FIELDS = [
    _field(b"when", b"T", struct.pack(">Q", 2**63 + 7)),  # beyond a signed 64-bit int
    _field(b"dec", b"D", b"\x02" + struct.pack(">i", 12345)),
    _field(b"u16", b"u", struct.pack(">H", 65535)),
    _field(b"u8", b"B", b"\xc8"),
    _field(b"i8", b"b", struct.pack(">b", -5)),
    _field(b"f32", b"f", struct.pack(">f", 1.5)),
    _field(b"bad", b"S", _long(b"\xff\xfeab")),  # not UTF-8
    _field(b"nest", b"F", _long(_field(b"u", b"u", b"\x00\x07"))),
    _field(b"arr", b"A", _long(b"u\x00\x09" + b"T" + struct.pack(">Q", 2**64 - 1))),
]


def properties_with(fields: list[bytes], app_id: bytes = b"mallet") -> bytes:
    """Encoded basic properties: a header table of `fields`, then app_id."""
    table = b"".join(fields)
    return b"\x20\x08" + _long(table) + bytes([len(app_id)]) + app_id


def delivery_of(impl, properties: bytes):
    """A Basic.Deliver with `properties` and an empty body, read by `impl`'s FrameReader."""
    method = struct.pack(">HH", 60, 60) + b"\x01c" + struct.pack(">Q", 1) + b"\x00\x00\x02rk"
    head = struct.pack(">HHQ", 60, 0, 0) + properties

    def frame(ftype: int, payload: bytes) -> bytes:
        return struct.pack(">BHI", ftype, 1, len(payload)) + payload + b"\xce"

    reader = impl.FrameReader()
    records = reader.feed(frame(1, method) + frame(2, head))
    deliveries = [r for r in records if isinstance(r, impl.Delivery)]
    assert len(deliveries) == 1 and deliveries[0].kind == DELIVER
    return deliveries[0]


def assert_carries(entries: list[tuple[bytes, bytes]] | None, fields: list[bytes]) -> None:
    assert entries is not None, "the copy has no header table"
    carried = {field for _, field in entries}
    missing = [f for f in fields if f not in carried]
    assert not missing, f"fields not carried byte for byte: {missing}"


# --------------------------------------------------------------------------- both twins


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def impl(request):
    return request.param


def test_reader_keeps_the_received_properties(impl):
    props = properties_with(FIELDS)
    d = delivery_of(impl, props)
    assert d.properties_raw == props
    assert d.properties.headers["when"] == 2**63 + 7  # and it still decodes
    assert delivery_of(impl, b"\x00\x08\x03bob").properties_raw is None  # no table: nothing


def test_both_twins_keep_properties_they_cannot_decode(impl):
    """Kept even when the properties do not decode (a truncated content type here): both
    twins alike, so a dead letter's id does not depend on which one runs."""
    props = b"\xa0\x00\x09ab"
    d = delivery_of(impl, props)
    assert d.properties_error is not None
    assert d.properties_raw == props


def test_an_encoded_table_copies_and_pickles_as_itself(impl):
    d = delivery_of(impl, properties_with(FIELDS))
    headers = copy_headers(d, {"x": 1})
    for twin in (copy.copy(headers), copy.deepcopy(headers), pickle.loads(pickle.dumps(headers))):
        assert isinstance(twin, EncodedTable)
        assert twin == headers and twin.wire == headers.wire


def test_copy_splices_received_fields_and_encodes_only_its_own(impl):
    d = delivery_of(impl, properties_with([*FIELDS, _field(b"gone", b"I", b"\x00\x00\x00\x01")]))
    headers = copy_headers(d, {"x-retries": 2}, defaults={"u8": 1, "new": "yes"}, drop={"gone"})
    assert isinstance(headers, EncodedTable)
    wire = impl.encode_table(headers)
    assert wire == headers.wire
    entries = header_table_entries(b"\x20\x00" + wire)
    assert_carries(entries, FIELDS)  # u8 was present: its default is not applied
    keys = [k for k, _ in entries]
    assert b"gone" not in keys
    assert keys.count(b"u8") == 1 and b"new" in keys and b"x-retries" in keys
    assert headers["x-retries"] == 2 and headers["new"] == "yes" and "gone" not in headers
    with pytest.raises(TypeError):
        headers["x"] = 1  # read-only: a change would not reach the wire


def test_encode_properties_sends_the_spliced_table(impl):
    d = delivery_of(impl, properties_with(FIELDS))
    p = impl.Properties(headers=copy_headers(d, {}), app_id="a")
    encoded = impl.encode_properties(p)
    assert_carries(header_table_entries(encoded), FIELDS)


def test_requeue_drops_the_death_headers_and_keeps_the_rest():
    reason = _field(REASON_HEADER.encode(), b"S", _long(b"boom"))
    d = delivery_of(_frames_py, properties_with([*FIELDS, reason]))
    p = requeue_properties(d, "abc")
    entries = header_table_entries(_frames_py.encode_properties(p))
    assert_carries(entries, FIELDS)
    assert REASON_HEADER.encode() not in [k for k, _ in entries]


# --------------------------------------------------------------------------- through agents


async def dead_letters_of(connection, count: int) -> list:
    """The first `count` deliveries of the dead-letter queue (this test's broker or vhost)."""
    ch = await connection.channel()
    found: list = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while len(found) < count:
        assert loop.time() < deadline, f"{len(found)} of {count} dead letters"
        got = await ch.get(DEAD_LETTER_QUEUE, no_ack=True)
        if got is None:
            await asyncio.sleep(0.05)
            continue
        found.append(got)
    await ch.close()
    return found


POISON = 300  # more than the inbox's prefetch: a stuck message each would end the inbox


async def test_unmatched_direct_messages_are_dead_lettered_with_their_headers(isolated_mesh_url):
    target = Agent(uid("hdr-target"), url=isolated_mesh_url)
    caller = Agent(uid("hdr-caller"), url=isolated_mesh_url)
    async with target, caller:
        ch = await caller.connection.channel()
        props = properties_with(FIELDS)
        seq = 0
        for i in range(POISON):
            seq = ch.publish(f"poison {i}".encode(), "", target.identity, props)
        await ch.wait_confirms(seq, timeout=WAIT)
        letters = await dead_letters_of(caller.connection, POISON)
        # The inbox is alive: the agent still answers calls.
        assert await caller.call(target.identity, "ping", timeout=WAIT) == "pong"
        await ch.close()
    assert sorted(d.body for d in letters) == sorted(f"poison {i}".encode() for i in range(POISON))
    for d in letters[:5]:
        entries = header_table_entries(d.properties_raw)
        assert_carries(entries, FIELDS)
        assert d.properties.headers[REASON_HEADER].startswith("no behaviour template")


class Failing(Behaviour):
    """Raises on every message; remembers the properties of each attempt."""

    restart_policy = RestartPolicy(initial=0.01)

    async def setup(self) -> None:
        self.attempts: list[bytes | None] = []
        self.good: list[bytes] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        if msg.body == b"good":
            self.good.append(msg.body)
            return
        self.attempts.append(msg.delivery.properties_raw)
        raise RuntimeError("cannot handle this one")


async def test_retries_and_the_dead_letter_carry_the_headers(isolated_mesh_url):
    config = AgentConfig(max_redeliveries=2)
    target = Agent(uid("hdr-retry"), url=isolated_mesh_url, config=config)
    caller = Agent(uid("hdr-sender"), url=isolated_mesh_url)
    failing = Failing(target, template=Template())
    async with target, caller:
        await target.add_behaviour(failing)
        ch = await caller.connection.channel()
        seq = ch.publish(b"poison", "", target.identity, properties_with(FIELDS))
        await ch.wait_confirms(seq, timeout=WAIT)
        (letter,) = await dead_letters_of(caller.connection, 1)
        # The behaviour survived each failing step and still works.
        await caller.send(target.identity, b"good")
        await eventually(lambda: failing.good == [b"good"], WAIT)
        assert failing.state == "running"
        await ch.close()
    assert len(failing.attempts) == 3  # the first try and two retries
    for raw in [*failing.attempts, letter.properties_raw]:
        assert_carries(header_table_entries(raw), FIELDS)
    assert letter.properties.headers[RETRIES_HEADER] == 3


class Breaking(Behaviour):
    """Its step raises what no step handler catches (not an Exception)."""

    async def run(self) -> None:
        raise Escape("out of the loop")


class Escape(BaseException):
    pass


class BreakingSetup(Behaviour):
    """Its setup raises what no setup handler catches."""

    async def setup(self) -> None:
        raise Escape("out of setup")

    async def run(self) -> None:
        await asyncio.sleep(0.1)


async def test_a_behaviour_whose_task_dies_is_reported_failed(mesh_url):
    agent = Agent(uid("hdr-dies"), url=mesh_url)
    async with agent:
        breaking = await agent.add_behaviour(Breaking(agent))
        await eventually(lambda: breaking.state != "running", WAIT)
        assert breaking.state == "failed"
        assert "Escape" in (breaking.last_error or "")
        broken = await agent.add_behaviour(BreakingSetup(agent))
        await eventually(lambda: broken.state != "running", WAIT)
        assert broken.state == "failed" and "Escape" in (broken.last_error or "")
        info = await agent.call(agent.identity, "describe", timeout=WAIT)
        states = {b["name"]: b["state"] for b in info["behaviours"]}
        assert "failed" in states.values()
