"""Micro-batching of publish() (core/batching.py), the publishing side, on RabbitMQ and
memory://: what a plain consumer of the topic sees on the wire (docs/reference/wire.md,
"Batches"), the limits, the opt-ins, flush and stop, and the logical sequence numbers
`publish()` returns and `on_publish_failure` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from broker_tools import wait_until
from mesh_tools import MessageCollector, uid

from munggoggo import Agent, AgentConfig, Batching, OneShotBehaviour, PublishError
from munggoggo._speedups import ConfirmTracker, Delivery
from munggoggo.agent import TOPIC_EXCHANGE, open_connection
from munggoggo.amqp.errors import ConnectionLost
from munggoggo.batch_format import (
    BATCH_CONTENT_TYPE,
    BATCH_COUNT_HEADER,
    MAX_ITEMS,
    BatchFormatError,
    unpack_items,
)
from munggoggo.batching import FIRST_BATCHED_SEQ, Batcher
from munggoggo.url import parse_urls

QUIET = {"presence": False}
# Long enough that nothing goes out by its linger while a test publishes.
HOLD = 30.0


class Wire:
    """What a plain consumer of a queue bound to `munggoggo.topic` received."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def on_batch(self, batch: list[Delivery]) -> None:
        self.deliveries.extend(batch)

    @property
    def batches(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.properties.content_type == BATCH_CONTENT_TYPE]

    def items(self) -> list[tuple[bytes, str | None, dict[str, Any] | None]]:
        """Every logical message, in order: a batch's items, or a plain message."""
        out: list[tuple[bytes, str | None, dict[str, Any] | None]] = []
        for d in self.deliveries:
            p = d.properties
            if p.content_type == BATCH_CONTENT_TYPE:
                declared = (p.headers or {}).get(BATCH_COUNT_HEADER)
                assert declared is not None, "a batch without its item count header"
                out.extend(
                    (i.body, i.content_type, i.headers) for i in unpack_items(d.body, declared)
                )
            else:
                out.append((d.body, p.content_type, p.headers))
        return out


@contextlib.asynccontextmanager
async def wire(
    url: str, binding_key: str, *, consume: bool = True, **arguments: Any
) -> AsyncIterator[Wire]:
    """A plain consumer (the engine, no agent) of a new queue bound to `munggoggo.topic`
    (with `consume=False`, the queue alone)."""
    conn = await open_connection(parse_urls(url)[0], uid("wire"))
    try:
        ch = await conn.channel(confirms=False)
        queue = uid("bpub.wire")
        await ch.exchange_declare(TOPIC_EXCHANGE, "topic", durable=True)
        await ch.queue_declare(queue, exclusive=True, arguments=arguments or None)
        await ch.queue_bind(queue, TOPIC_EXCHANGE, binding_key)
        seen = Wire()
        if consume:
            await ch.consume(queue, seen.on_batch, no_ack=True)
        yield seen
    finally:
        await conn.close()


def config(**batching: Any) -> AgentConfig:
    return AgentConfig(batching=Batching(**batching), **QUIET)


async def test_publishes_within_the_linger_travel_as_fewer_batches(mesh_url):
    key = uid("bpub.few")
    async with (
        Agent(uid("bpub"), url=mesh_url, config=config(linger=0.2)) as agent,
        wire(mesh_url, key) as seen,
    ):
        seqs = [
            await agent.publish({"n": i}, key, headers={"i": i, "who": "me"}) for i in range(10)
        ]
        await agent.publish("text", key)
        await agent.publish(b"\x00raw", key, content_type="application/x-thing")
        assert await wait_until(lambda: len(seen.items()) == 12)
        await agent.flush(timeout=5)

    assert len(seen.deliveries) == 1  # 12 messages, one AMQP message
    batch = seen.deliveries[0]
    p = batch.properties
    assert p.content_type == BATCH_CONTENT_TYPE
    assert p.headers == {BATCH_COUNT_HEADER: 12}
    assert p.app_id == agent.identity and p.type == "message" and p.timestamp
    assert batch.routing_key == key and batch.exchange == TOPIC_EXCHANGE
    assert seen.items() == [
        *((b'{"n":%d}' % i, "application/json", {"i": i, "who": "me"}) for i in range(10)),
        (b"text", "text/plain", None),
        (b"\x00raw", "application/x-thing", None),
    ]
    assert seqs == list(range(seqs[0], seqs[0] + 10))  # +1 per logical message
    assert seqs[0] >= FIRST_BATCHED_SEQ
    assert agent.stats.published[("", "message")] == 12
    assert agent.stats.batches_published == 1


async def test_max_items_and_max_bytes_cap_a_batch(mesh_url):
    items_key, bytes_key = uid("bpub.items"), uid("bpub.bytes")
    cfg = config(linger=HOLD, max_items=4, max_bytes=300)
    async with (
        Agent(uid("bpub"), url=mesh_url, config=cfg) as agent,
        wire(mesh_url, items_key) as by_items,
        wire(mesh_url, bytes_key) as by_bytes,
    ):
        for i in range(10):
            await agent.publish(b"%d" % i, items_key)
        # 8 full batches of 4 went out at once; 2 items wait for their linger.
        assert await wait_until(lambda: len(by_items.deliveries) == 2)
        bodies = [bytes([65 + i]) * 60 for i in range(7)]
        for body in bodies[:5]:
            await agent.publish(body, bytes_key)
        big = b"B" * 1000  # more than max_bytes: alone, after what was pending
        await agent.publish(big, bytes_key)
        for body in bodies[5:]:
            await agent.publish(body, bytes_key)
        await agent.flush(timeout=5)
        assert await wait_until(lambda: len(by_items.items()) == 10)
        assert await wait_until(lambda: len(by_bytes.items()) == 8)

    assert [d.properties.headers[BATCH_COUNT_HEADER] for d in by_items.deliveries] == [4, 4, 2]
    assert [body for body, _, _ in by_items.items()] == [b"%d" % i for i in range(10)]
    assert [body for body, _, _ in by_bytes.items()] == [*bodies[:5], big, *bodies[5:]]
    sizes = [len(d.body) for d in by_bytes.deliveries]
    counts = [d.properties.headers[BATCH_COUNT_HEADER] for d in by_bytes.deliveries]
    assert all(d.properties.content_type == BATCH_CONTENT_TYPE for d in by_bytes.deliveries)
    assert [c for c, s in zip(counts, sizes, strict=True) if s > 300] == [1]  # the big one
    assert sum(counts) == 8 and len(counts) >= 3


async def test_only_routing_keys_the_topics_match_are_batched(mesh_url):
    base = uid("bpub.topics")
    batched, plain = f"{base}.metrics.cpu", f"{base}.orders"
    cfg = config(linger=0.05, topics=(f"{base}.metrics.#", f"{base}.none.*"))
    async with (
        Agent(uid("bpub"), url=mesh_url, config=cfg) as agent,
        wire(mesh_url, f"{base}.#") as seen,
    ):
        plain_seqs = []
        for i in range(3):
            await agent.publish(i, batched)
            plain_seqs.append(await agent.publish(i, plain))
        assert await wait_until(lambda: len(seen.items()) == 6)

    by_key: dict[str, list[Delivery]] = {}
    for d in seen.deliveries:
        by_key.setdefault(d.routing_key, []).append(d)
    assert [d.properties.content_type for d in by_key[plain]] == ["application/json"] * 3
    assert [d.body for d in by_key[plain]] == [b"0", b"1", b"2"]
    assert all(s < FIRST_BATCHED_SEQ for s in plain_seqs)  # the channel's own numbers
    assert len(by_key[batched]) == 1 and by_key[batched][0].properties.headers == {
        BATCH_COUNT_HEADER: 3
    }


class Plain(OneShotBehaviour):
    batching = False

    async def run(self) -> None:
        pass


class OwnBatches(Plain):
    batching = Batching(linger=HOLD, max_items=2)


async def test_behaviour_batching_overrides_the_agents(mesh_url):
    key_a, key_b = uid("bpub.a"), uid("bpub.b")
    async with Agent(uid("bpub"), url=mesh_url, config=config(linger=0.05)) as agent:
        plain = await agent.add_behaviour(Plain(agent))
        async with wire(mesh_url, key_a) as seen:
            for i in range(3):
                await plain.publish(i, key_a)  # never batched
            for i in range(3, 5):
                await agent.publish(i, key_a)  # the agent's setting: batched
            assert await wait_until(lambda: len(seen.items()) == 5)
    assert [d.properties.content_type for d in seen.deliveries] == [
        "application/json",
        "application/json",
        "application/json",
        BATCH_CONTENT_TYPE,
    ]
    assert [b for b, _, _ in seen.items()] == [b"0", b"1", b"2", b"3", b"4"]

    # Batching off for the agent (the default), on for one behaviour with its own limits.
    async with Agent(uid("bpub"), url=mesh_url, config=AgentConfig(**QUIET)) as agent:
        own = await agent.add_behaviour(OwnBatches(agent))
        async with wire(mesh_url, key_b) as seen:
            await agent.publish("alone", key_b)
            for i in range(4):
                await own.publish(i, key_b)  # max_items=2: two batches at once
            assert await wait_until(lambda: len(seen.items()) == 5)
    assert [d.properties.content_type for d in seen.deliveries] == [
        "text/plain",
        BATCH_CONTENT_TYPE,
        BATCH_CONTENT_TYPE,
    ]
    assert agent.stats.published == {("", "message"): 1, ("OwnBatches", "message"): 4}


async def test_batching_is_off_by_default_and_for_send_broadcast_and_delays(mesh_url):
    key = uid("bpub.off")
    async with Agent(uid("bpub"), url=mesh_url, config=AgentConfig(**QUIET)) as agent:
        assert agent.config.batching is None
        async with wire(mesh_url, key) as seen:
            seqs = [await agent.publish(i, key) for i in range(3)]
            assert await wait_until(lambda: len(seen.deliveries) == 3)
    assert all(d.properties.content_type == "application/json" for d in seen.deliveries)
    assert all(s < FIRST_BATCHED_SEQ for s in seqs)

    async with (
        Agent(uid("bpub"), url=mesh_url, config=config(linger=HOLD)) as agent,
        wire(mesh_url, key) as seen,
    ):
        seq = await agent.publish("later", key, delay=0.05)
        assert seq < FIRST_BATCHED_SEQ  # a delayed publish goes alone
        assert await wait_until(lambda: len(seen.deliveries) == 1)
        assert seen.deliveries[0].properties.content_type == "text/plain"
        assert seen.deliveries[0].body == b"later"


async def test_flush_sends_a_pending_batch_at_once(mesh_url):
    key = uid("bpub.flush")
    async with (
        Agent(uid("bpub"), url=mesh_url, config=config(linger=HOLD)) as agent,
        wire(mesh_url, key) as seen,
    ):
        for i in range(3):
            await agent.publish(i, key)
        await asyncio.sleep(0.1)
        assert seen.deliveries == []  # waiting for its linger
        await agent.flush(timeout=5)
        assert await wait_until(lambda: len(seen.deliveries) == 1, timeout=5)
        assert [b for b, _, _ in seen.items()] == [b"0", b"1", b"2"]


async def test_stop_sends_what_is_pending(mesh_url):
    key = uid("bpub.stop")
    agent = Agent(uid("bpub"), url=mesh_url, config=config(linger=HOLD))
    await agent.start()
    async with wire(mesh_url, key) as seen:
        for i in range(5):
            await agent.publish(i, key)
        await agent.stop()
        assert await wait_until(lambda: len(seen.items()) == 5, timeout=5)
    assert len(seen.deliveries) == 1
    assert [b for b, _, _ in seen.items()] == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_zero_linger_sends_at_the_end_of_the_loop_tick(mesh_url):
    key = uid("bpub.tick")
    async with (
        Agent(uid("bpub"), url=mesh_url, config=config(linger=0)) as agent,
        wire(mesh_url, key) as seen,
    ):
        seqs = await asyncio.gather(*(agent.publish(i, key) for i in range(6)))
        assert await wait_until(lambda: len(seen.items()) == 6)
    assert len(seen.deliveries) == 1
    assert sorted(seqs) == list(seqs) and len(set(seqs)) == 6


async def test_on_publish_failure_names_every_message_of_a_refused_batch(mesh_url):
    """A queue full with `x-overflow: reject-publish` makes the broker nack the batch: every
    logical message in it is reported, by the numbers publish() returned, and only those."""
    base = uid("bpub.nack")
    full, fine = f"{base}.full", f"{base}.fine"
    cfg = config(linger=HOLD)
    async with Agent(uid("bpub"), url=mesh_url, config=cfg) as agent:
        failed: list[tuple[int, Exception]] = []
        agent.on_publish_failure = failed.extend
        limits = {"x-max-length": 1, "x-overflow": "reject-publish"}
        async with wire(mesh_url, full, consume=False, **limits):
            first = await agent.publish("fills the queue", full)
            await agent.flush(timeout=5)
            assert failed == []
            # Two routing keys in turn: the refused batch's numbers are not consecutive.
            refused, accepted = [], []
            for i in range(4):
                refused.append(await agent.publish(i, full))
                accepted.append(await agent.publish(i, fine))
            with pytest.raises(PublishError):
                await agent.flush(timeout=5)
            assert await wait_until(lambda: len(failed) == 4)
            await asyncio.sleep(0.1)  # nothing else is reported
    assert sorted(s for s, _ in failed) == refused
    assert refused == [first + 1, first + 3, first + 5, first + 7]
    assert set(accepted).isdisjoint(s for s, _ in failed)


@pytest.mark.rabbitmq
async def test_a_foreign_client_reads_a_batch_with_plain_msgpack(broker_url):
    """aiormq and msgspec, no munggoggo: the batch is the documented msgpack array."""
    import aiormq

    key = uid("bpub.foreign")
    received: list[Any] = []
    peer = await aiormq.connect(broker_url)
    try:
        ch = await peer.channel()
        q = await ch.queue_declare("", exclusive=True)
        await ch.queue_bind(q.queue, TOPIC_EXCHANGE, key)
        await ch.basic_consume(q.queue, received.append, no_ack=True)
        async with Agent(uid("bpub"), url=broker_url, config=config(linger=0.05)) as agent:
            await agent.publish({"a": 1}, key, headers={"traceparent": "t", "n": 2})
            await agent.publish("b", key)
            assert await wait_until(lambda: len(received) == 1)
    finally:
        await peer.close()
    props = received[0].header.properties
    assert props.content_type == BATCH_CONTENT_TYPE
    assert props.headers == {BATCH_COUNT_HEADER: 2}
    assert msgspec.msgpack.decode(received[0].body) == [
        [b'{"a":1}', "application/json", {"traceparent": "t", "n": 2}],
        [b"b", "text/plain", None],
    ]


def _bad_headers() -> list[dict[Any, Any]]:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    return [
        {"x": object()},
        {"when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)},
        {"ext": msgspec.msgpack.Ext(5, b"x")},
        {"big": 2**63},
        {"n" * 256: 1},
        {"huge": "x" * 300_000},  # over one content header frame
        cyclic,
    ]


async def test_batched_headers_are_refused_as_a_plain_publish_refuses_them(mesh_url):
    """What a plain publish refuses, a batched one refuses with the same error, and takes
    nothing: no copy a consumer makes of an item (retry, dead letter) can fail on them."""
    key = uid("bpub.bad")
    plain = Agent(uid("plain"), url=mesh_url, config=AgentConfig(**QUIET))
    async with (
        plain,
        Agent(uid("bpub"), url=mesh_url, config=config(linger=0.05)) as agent,
        wire(mesh_url, key) as seen,
    ):
        await agent.publish(1, key)
        for headers in _bad_headers():
            with pytest.raises(ValueError) as refused_plain:
                await plain.publish(2, key, headers=headers)
            with pytest.raises(ValueError) as refused:
                await agent.publish(2, key, headers=headers)
            assert type(refused.value) is type(refused_plain.value), headers.keys()
        with pytest.raises(ValueError):  # a content type over AMQP's 255 bytes
            await agent.publish(2, key, content_type="x/" + "y" * 300)
        await agent.publish(3, key)
        assert await wait_until(lambda: len(seen.items()) == 2)
        await asyncio.sleep(0.1)
    assert [b for b, _, _ in seen.items()] == [b"1", b"3"]
    assert agent.stats.published[("", "message")] == 2


async def test_headers_amqp_carries_and_a_batch_cannot_go_alone_in_order(mesh_url):
    key = uid("bpub.alone")
    async with (
        Agent(uid("bpub"), url=mesh_url, config=config(linger=HOLD)) as agent,
        wire(mesh_url, key) as seen,
    ):
        first = await agent.publish(1, key)
        await agent.publish(2, key, headers={b"bytes-name": "v"})  # plain publish takes it
        await agent.publish(3, key)
        await agent.flush(timeout=5)
        assert await wait_until(lambda: len(seen.items()) == 3)
    assert first >= FIRST_BATCHED_SEQ
    assert [b for b, _, _ in seen.items()] == [b"1", b"2", b"3"]
    kinds = [d.properties.content_type == BATCH_CONTENT_TYPE for d in seen.deliveries]
    assert kinds == [True, False, True]
    assert seen.deliveries[1].properties.headers == {"bytes-name": "v"}


async def test_max_bytes_bounds_every_batch_body(mesh_url):
    """Headers, trace headers and content types count as they are encoded: no body is
    larger than max_bytes unless it is one item larger than that."""
    key = uid("bpub.size")
    async with (
        Agent(uid("bpub"), url=mesh_url, config=config(linger=HOLD, max_bytes=4096)) as agent,
        wire(mesh_url, key) as seen,
    ):
        for i in range(60):
            headers = {"f": [0.0] * (i % 7 * 20), "traceparent": "00-" + "a" * 50}
            await agent.publish(b"", key, headers=headers, content_type="t/é" * (i % 5))
        await agent.publish(b"B" * 5000, key)
        await agent.flush(timeout=5)
        assert await wait_until(lambda: len(seen.items()) == 61)
    sizes = [len(d.body) for d in seen.deliveries]
    assert len(sizes) > 3
    assert [s for s in sizes if s > 4096] == [sizes[-1]]  # the big item, alone
    assert seen.deliveries[-1].properties.headers == {BATCH_COUNT_HEADER: 1}


async def test_a_batched_publish_raises_when_the_connection_is_gone(mesh_url):
    for batching in (None, Batching(linger=HOLD)):
        agent = Agent(uid("bpub"), url=mesh_url, config=AgentConfig(batching=batching, **QUIET))
        await agent.start()
        try:
            failed: list[tuple[int, Exception]] = []
            agent.on_publish_failure = failed.extend
            await agent.connection.close()
            with pytest.raises(ConnectionLost):
                await agent.publish("x", uid("bpub.gone"))
            assert failed == []
        finally:
            await agent.stop()


async def test_the_publish_channel_says_what_is_confirmed_through(mesh_url):
    async with Agent(uid("bpub"), url=mesh_url, config=AgentConfig(**QUIET)) as agent:
        channel = agent.publish_channel
        before = channel.confirmed_through
        seq = await agent.publish("x", uid("bpub.seq"))
        await agent.flush(timeout=5)
        assert before < seq == channel.confirmed_through


def test_a_batch_of_more_items_than_a_reader_takes_is_refused():
    assert Batching(max_items=MAX_ITEMS).max_items == MAX_ITEMS
    with pytest.raises(ValueError, match=r"Batching\.max_items"):
        Batching(max_items=MAX_ITEMS + 1)
    # The reader's bound keeps a prefetched batch's memory small (prefetch x MAX_ITEMS).
    assert MAX_ITEMS <= 4096
    body = msgspec.msgpack.encode([[b""]] * (MAX_ITEMS + 1))
    with pytest.raises(BatchFormatError):
        unpack_items(body)
    assert len(unpack_items(msgspec.msgpack.encode([[b""]] * MAX_ITEMS))) == MAX_ITEMS


class _Stats:
    published: dict[Any, int] = {}
    batches_published = 0


class _Publisher:
    """What a Batcher reads of its agent."""

    stats = _Stats()
    trace = None
    identity = "p"
    records_traces = False
    delivery_mode = None


class _TrackedChannel:
    """The publish channel's bookkeeping alone: a real ConfirmTracker, no broker."""

    writable = True
    is_open = True

    def __init__(self) -> None:
        self.tracker = ConfirmTracker()

    @property
    def unconfirmed(self) -> int:
        return len(self.tracker)

    @property
    def confirmed_through(self) -> int:
        return self.tracker.confirmed_through

    def publish(self, body: bytes, exchange: str, key: str, props: Any) -> int:
        return self.tracker.add(b"frames")


async def test_a_batch_confirmed_out_of_order_after_a_reconnect_keeps_its_numbers():
    """After a reconnect the broker may confirm a later publish first: the batch before it
    is still unconfirmed, and its failure names its own messages."""
    channel = _TrackedChannel()
    batcher = Batcher(_Publisher())  # type: ignore[arg-type]
    batcher.attach(channel, lambda failures: None, asyncio.get_running_loop())  # type: ignore[arg-type]
    lane = batcher.lane(Batching(linger=HOLD))
    first = lane.add(b"1", "k", None, None, "")
    lane.send_all()  # channel seq 1
    channel.publish(b"plain", "", "q", None)  # seq 2
    lane.add(b"3", "k", None, None, "")
    lane.send_all()  # seq 3
    await asyncio.sleep(0)
    channel.tracker.settle(2, False, False)  # seq 2 alone confirmed
    channel.tracker.restart()  # a reconnect: 1 and 3 kept, republished
    assert channel.confirmed_through == 0
    lane.add(b"4", "k", None, None, "")
    lane.send_all()  # seq 4: a prune is due
    await asyncio.sleep(0)
    error = RuntimeError("nacked")
    assert batcher.logical([(1, error)]) == [(first, error)]


def test_batching_settings_are_checked():
    for bad in (
        {"linger": -0.1},
        {"linger": float("inf")},
        {"linger": "1"},
        {"max_items": 0},
        {"max_items": MAX_ITEMS + 1},
        {"max_items": True},
        {"max_bytes": 0},
        {"max_bytes": 1.5},
        {"topics": ()},
        {"topics": "a.#"},
        {"topics": ("a", 3)},
    ):
        with pytest.raises(ValueError, match=f"Batching.{next(iter(bad))}"):
            Batching(**bad)
    assert Batching(topics=["a.*"]).topics == ("a.*",)  # a list from JSON is taken


def test_agent_config_takes_batching_as_a_mapping_and_keeps_it_off_by_default():
    assert AgentConfig().batching is None
    cfg = AgentConfig.from_mapping({"BATCHING": {"LINGER": 0, "max_items": 8}})
    assert cfg.batching == Batching(linger=0, max_items=8)
    assert AgentConfig(batching=True).batching == Batching()  # type: ignore[arg-type]
    assert dataclasses.replace(cfg, prefetch=8).batching == cfg.batching
    with pytest.raises(ValueError, match=r"unknown AgentConfig\.batching key"):
        AgentConfig(batching={"lingering": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"AgentConfig\.batching must be"):
        AgentConfig(batching=5)  # type: ignore[arg-type]


async def test_a_routing_key_amqp_cannot_carry_is_refused_to_the_caller(mesh_url):
    async with Agent(uid("bpub"), url=mesh_url, config=config(linger=HOLD)) as agent:
        with pytest.raises(ValueError):
            await agent.publish(1, "k" * 256)
        key = uid("bpub.after")
        async with wire(mesh_url, key) as seen:
            await agent.publish(2, key)
            await agent.flush(timeout=5)
            assert await wait_until(lambda: len(seen.items()) == 1)


async def test_a_subscriber_agent_gets_the_batched_messages_one_by_one(mesh_url):
    """End to end: an agent batching its publishes, another agent's behaviour receiving
    each message in order, with its own content type and headers; every batch acked."""
    key = uid("bpub.e2e")
    cfg = config(linger=0.01, max_items=8)
    async with (
        Agent(uid("bpub-rx"), url=mesh_url, config=AgentConfig(**QUIET)) as receiver,
        Agent(uid("bpub-tx"), url=mesh_url, config=cfg) as sender,
    ):
        collector = await receiver.add_behaviour(MessageCollector(receiver, binding_keys=[key]))
        for i in range(20):
            await sender.publish({"i": i}, key, headers={"n": i})
        await sender.flush(timeout=5)
        assert await wait_until(lambda: len(collector.got) == 20)
        assert sender.stats.batches_published == 3  # 8 + 8 + 4
        assert [m.decode() for m in collector.got] == [{"i": i} for i in range(20)]
        assert [m.headers["n"] for m in collector.got] == list(range(20))
        assert {m.content_type for m in collector.got} == {"application/json"}
        assert {m.sender for m in collector.got} == {sender.identity}
        queue = collector.queue
    # Both stopped: a batch left unacked would be back in the queue now.
    conn = await open_connection(parse_urls(mesh_url)[0], uid("check"))
    try:
        ch = await conn.channel(confirms=False)
        assert (await ch.queue_declare(queue, passive=True)).message_count == 0
    finally:
        await conn.close()


async def test_a_headers_dict_changed_after_publish_does_not_change_the_batched_message(
    mesh_url,
):
    key = uid("bpub.hdrs")
    async with (
        Agent(uid("bpub"), url=mesh_url, config=config(linger=HOLD)) as agent,
        wire(mesh_url, key) as seen,
    ):
        headers: dict[str, Any] = {}
        for i in range(3):
            headers["i"] = i  # one dict, reused and changed while the batch fills
            await agent.publish(i, key, headers=headers)
        headers["i"] = datetime.datetime.now()  # not even encodable: must not matter
        await agent.flush(timeout=5)
        assert await wait_until(lambda: len(seen.items()) == 3, timeout=5)
        assert [h for _, _, h in seen.items()] == [{"i": 0}, {"i": 1}, {"i": 2}]
