"""The memory:// broker: RabbitMQ's semantics through the real client's API, in process.

Expected values (error texts, x-death layout, topic matches, redelivery order) are the ones
RabbitMQ 3.10 produced for the same calls through munggoggo.client.Connection.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from broker_tools import wait_until

from munggoggo._speedups import DELIVER, GET_OK, RETURN, Properties, encode_properties
from munggoggo.amqp.errors import (
    AccessRefused,
    ConnectionLost,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from munggoggo.channel import PublishError, PublishNacked, QueueDeclareOk
from munggoggo.memory import MemoryBroker, MemoryChannel, MemoryConnection
from munggoggo.url import parse_url


@pytest.fixture
def url():
    """A broker of its own for each test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield f"memory://{name}"
    MemoryBroker.reset(name)


@pytest.fixture
async def conn(url):
    c = await MemoryConnection(url).connect()
    yield c
    await c.close()


@pytest.fixture
async def ch(conn):
    return await conn.channel()


async def ticks(n: int = 5) -> None:
    """Let the loop run: deliveries and channel closes happen on later ticks."""
    for _ in range(n):
        await asyncio.sleep(0)


async def collect(ch: MemoryChannel, queue: str, *, ack: bool = True, **kwargs):
    """Consume into a list (acking each batch unless ack=False); returns (list, tag)."""
    got = []

    def on_batch(batch):
        got.extend(batch)
        if ack and not kwargs.get("no_ack"):
            ch.ack(batch[-1].delivery_tag, multiple=True)

    tag = await ch.consume(queue, on_batch, **kwargs)
    return got, tag


# --------------------------------------------------------------------------- connection


async def test_connection_api_mirrors_the_client(url):
    conn = MemoryConnection(url, reconnect=False, name="agent-x")
    assert not conn.is_open and not conn.is_closed
    assert await conn.connect() is conn
    assert conn.is_open and conn.reconnects == 0
    assert conn.on_reconnect == [] and conn.on_lost == []
    assert conn.url == parse_url(url) and conn.name == "agent-x"
    ch = await conn.channel(prefetch_count=10)
    assert isinstance(ch, MemoryChannel) and ch.is_open and ch.generation == 1
    await conn.close()
    assert conn.is_closed and not ch.is_open
    with pytest.raises(ConnectionLost):
        await conn.channel()
    with pytest.raises(ConnectionLost):
        ch.publish(b"x", "", "q")
    with pytest.raises(ConnectionLost):
        await ch.queue_declare("q", durable=True)
    assert ch.ack(1) is False


async def test_async_with_and_bare_url_is_the_default_broker():
    MemoryBroker.reset("default")
    try:
        async with MemoryConnection("memory://") as a, MemoryConnection(None) as b:
            assert a.broker is b.broker is MemoryBroker.get("default")
            cha, chb = await a.channel(), await b.channel()
            await cha.queue_declare("shared", durable=True)
            assert (await chb.queue_declare("shared", passive=True)).queue == "shared"
        assert a.is_closed and b.is_closed
    finally:
        MemoryBroker.reset("default")


async def test_non_memory_url_is_refused():
    with pytest.raises(OSError):
        MemoryConnection("amqp://guest:guest@127.0.0.1:5672/")


async def test_connections_share_a_broker_by_name_only(url):
    async with MemoryConnection(url) as a, MemoryConnection(url) as b:
        other = f"{url}-other"
        async with MemoryConnection(other) as c:
            cha, chb, chc = await a.channel(), await b.channel(), await c.channel()
            await cha.queue_declare("inbox", durable=True)
            got, _ = await collect(chb, "inbox")
            cha.publish(b"hello", "", "inbox")
            await cha.wait_confirms()
            assert await wait_until(lambda: len(got) == 1)
            assert got[0].body == b"hello"
            with pytest.raises(NotFound):
                await chc.queue_declare("inbox", passive=True)
        MemoryBroker.reset(other.removeprefix("memory://"))


async def test_reset_gives_a_fresh_broker(url):
    name = url.removeprefix("memory://")
    async with MemoryConnection(url) as a:
        await (await a.channel()).queue_declare("q", durable=True)
    MemoryBroker.reset(name)
    async with MemoryConnection(url) as b:
        with pytest.raises(NotFound):
            await (await b.channel()).queue_declare("q", passive=True)


# --------------------------------------------------------------------------- routing


async def test_default_exchange_routes_by_queue_name(ch):
    await ch.queue_declare("a", durable=True)
    await ch.queue_declare("b", durable=True)
    got_a, _ = await collect(ch, "a")
    got_b, _ = await collect(ch, "b")
    ch.publish(b"1", "", "a")
    ch.publish(b"2", "", "b")
    ch.publish(b"3", "", "nobody")
    assert await wait_until(lambda: len(got_a) == 1 and len(got_b) == 1)
    d = got_a[0]
    assert (d.kind, d.body, d.exchange, d.routing_key) == (DELIVER, b"1", "", "a")
    assert got_b[0].body == b"2"


async def test_direct_exchange(ch):
    await ch.exchange_declare("d", "direct")
    for q, key in (("q1", "red"), ("q2", "red"), ("q3", "blue")):
        await ch.queue_declare(q, durable=True)
        await ch.queue_bind(q, "d", key)
    ch.publish(b"r", "d", "red")
    ch.publish(b"b", "d", "blue")
    ch.publish(b"g", "d", "green")
    await ch.wait_confirms()
    counts = [(await ch.queue_declare(q, passive=True)).message_count for q in ("q1", "q2", "q3")]
    assert counts == [1, 1, 1]
    assert (await ch.get("q3")).body == b"b"


async def test_fanout_exchange_ignores_routing_keys(ch):
    await ch.exchange_declare("f", "fanout")
    for q in ("q1", "q2"):
        await ch.queue_declare(q, durable=True)
        await ch.queue_bind(q, "f", "whatever")
    ch.publish(b"x", "f", "anything")
    await ch.wait_confirms()
    assert [(await ch.get(q)).routing_key for q in ("q1", "q2")] == ["anything", "anything"]


TOPIC_MATCHES = {
    # pattern: routing keys it matches, out of KEYS (as RabbitMQ 3.10 routed them)
    "*": ["a", "b"],
    "#": ["", "a", "a.", ".a", "a.b", "a..b", "a.x.b", "a.x.y.b", "b", "a.b.c", "."],
    "": [""],
    "a.*": ["a.", "a.b"],
    "a.#": ["a", "a.", "a.b", "a..b", "a.x.b", "a.x.y.b", "a.b.c"],
    "#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b", "b"],
    "a.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "*.*": ["a.", ".a", "a.b", "."],
    "a..b": ["a..b"],
    "a.*.b": ["a..b", "a.x.b"],
    "a": ["a"],
}
KEYS = ["", "a", "a.", ".a", "a.b", "a..b", "a.x.b", "a.x.y.b", "b", "a.b.c", "."]


async def test_topic_wildcards_match_like_rabbitmq(ch):
    await ch.exchange_declare("t", "topic")
    got: dict[str, list[str]] = {}
    for i, pattern in enumerate(TOPIC_MATCHES):
        q = f"tq{i}"
        await ch.queue_declare(q, exclusive=True)
        await ch.queue_bind(q, "t", pattern)
        got[pattern] = []
        await ch.consume(
            q, lambda b, p=pattern: got[p].extend(d.routing_key for d in b), no_ack=True
        )
    for key in KEYS:
        ch.publish(b"", "t", key)
    await ticks()
    assert got == TOPIC_MATCHES


async def test_headers_exchange(ch):
    bindings = [
        {"x-match": "all", "a": 1, "b": "x"},
        {"x-match": "any", "a": 1, "b": "x"},
        {"a": None},  # void: the header only has to be there
    ]
    got: dict[int, list[bytes]] = {}
    for i, args in enumerate(bindings):
        await ch.queue_declare(f"h{i}", durable=True)
        await ch.queue_bind(f"h{i}", "amq.headers", "", args)
        got[i] = []
        await ch.consume(f"h{i}", lambda b, i=i: got[i].extend(d.body for d in b), no_ack=True)
    for body, headers in [(b"ab", {"a": 1, "b": "x"}), (b"a", {"a": 1}), (b"a2", {"a": 2})]:
        ch.publish(body, "amq.headers", "", Properties(headers=headers))
    ch.publish(b"none", "amq.headers", "")
    await ticks()
    assert got == {0: [b"ab"], 1: [b"ab", b"a"], 2: [b"ab", b"a", b"a2"]}


async def test_exchange_to_exchange_bindings_deliver_each_queue_once(ch):
    await ch.exchange_declare("src", "topic")
    await ch.exchange_declare("dst", "fanout")
    await ch.exchange_bind("dst", "src", "a.*")
    await ch.queue_declare("q", durable=True)
    await ch.queue_bind("q", "dst")
    await ch.queue_bind("q", "src", "#")  # a second path to the same queue
    ch.publish(b"x", "src", "a.b")
    ch.publish(b"y", "src", "b.c")  # only the direct binding matches
    await ch.wait_confirms()
    assert (await ch.queue_declare("q", passive=True)).message_count == 2
    await ch.exchange_unbind("dst", "src", "a.*")
    ch.publish(b"z", "src", "a.b")
    await ch.wait_confirms()
    assert (await ch.queue_declare("q", passive=True)).message_count == 3
    d = await ch.get("q")
    assert (d.exchange, d.routing_key) == ("src", "a.b")


async def test_alternate_exchange_takes_what_the_exchange_cannot_route(ch):
    await ch.exchange_declare("ae", "fanout")
    await ch.queue_declare("unrouted", durable=True)
    await ch.queue_bind("unrouted", "ae")
    await ch.exchange_declare("main", "direct", arguments={"alternate-exchange": "ae"})
    await ch.queue_declare("routed", durable=True)
    await ch.queue_bind("routed", "main", "k")
    returned = []
    ch.on_return = returned.append
    ch.publish(b"1", "main", "k", mandatory=True)
    ch.publish(b"2", "main", "other", mandatory=True)
    await ch.wait_confirms()
    await ticks()
    assert (await ch.get("routed")).body == b"1"
    assert (await ch.get("unrouted")).body == b"2"
    assert returned == []


async def test_auto_delete_exchange_goes_with_its_last_binding(ch):
    await ch.exchange_declare("tmp", "direct", auto_delete=True)
    await ch.queue_declare("q", durable=True)
    await ch.queue_bind("q", "tmp", "k")
    await ch.exchange_declare("tmp", passive=True)
    await ch.queue_unbind("q", "tmp", "k")
    with pytest.raises(NotFound):
        await ch.exchange_declare("tmp", passive=True)


async def test_deleting_an_exchange_or_queue_removes_its_bindings(ch):
    await ch.exchange_declare("e", "fanout")
    await ch.queue_declare("q", durable=True)
    await ch.queue_bind("q", "e")
    await ch.queue_delete("q")
    await ch.queue_declare("q", durable=True)
    ch.publish(b"x", "e", "")
    await ch.wait_confirms()
    assert (await ch.queue_declare("q", passive=True)).message_count == 0
    await ch.queue_bind("q", "e")
    await ch.exchange_delete("e")
    await ch.exchange_declare("e", "fanout")
    ch.publish(b"x", "e", "")
    await ch.wait_confirms()
    assert (await ch.queue_declare("q", passive=True)).message_count == 0


# --------------------------------------------------------------------------- declarations


async def test_queue_declare_returns_counts_and_names_server_queues(ch):
    ok = await ch.queue_declare("", exclusive=True)
    assert isinstance(ok, QueueDeclareOk)
    assert ok.queue.startswith("amq.gen-") and len(ok.queue) == 30
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    ch.publish(b"x", "", ok.queue)
    await ch.consume(ok.queue, lambda b: None, consumer_tag="c1")
    await ticks()
    assert await ch.queue_declare(ok.queue, passive=True) == QueueDeclareOk(ok.queue, 0, 1)


async def test_declare_errors_carry_rabbitmq_codes_and_texts(conn, ch):
    with pytest.raises(NotFound) as e:
        await ch.queue_declare("missing", passive=True)
    assert (e.value.reply_code, e.value.reply_text) == (
        404,
        "NOT_FOUND - no queue 'missing' in vhost '/'",
    )
    assert e.value.scope == "channel"
    await ch.queue_declare("q", durable=True)
    cases = [
        (
            {"durable": False},
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': "
            "received 'false' but current is 'true'",
        ),
        (
            {"durable": True, "auto_delete": True},
            "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'q' in vhost '/': "
            "received 'true' but current is 'false'",
        ),
        (
            {"durable": True, "arguments": {"x-message-ttl": 100}},
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost "
            "'/': received the value '100' of type 'byte' but current is none",
        ),
    ]
    for kwargs, text in cases:
        with pytest.raises(PreconditionFailed) as e:
            await ch.queue_declare("q", **kwargs)
        assert (e.value.reply_code, e.value.reply_text) == (406, text)
    await ch.queue_declare("q", durable=True, arguments={"app-specific": 1})  # not compared
    with pytest.raises(AccessRefused) as e:
        await ch.queue_declare("amq.mine", durable=True)
    assert e.value.reply_text == (
        "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'"
    )
    await ch.exchange_declare("x", "direct")
    with pytest.raises(PreconditionFailed) as e:
        await ch.exchange_declare("x", "fanout")
    assert e.value.reply_text == (
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': "
        "received 'fanout' but current is 'direct'"
    )
    await ch.exchange_declare("x", "fanout", passive=True)  # passive ignores the type
    with pytest.raises(NotFound) as e:
        await ch.queue_bind("q", "nope", "k")
    assert e.value.reply_text == "NOT_FOUND - no exchange 'nope' in vhost '/'"
    with pytest.raises(AccessRefused) as e:
        await ch.queue_bind("q", "", "k")
    assert e.value.reply_text == "ACCESS_REFUSED - operation not permitted on the default exchange"
    with pytest.raises(PreconditionFailed) as e:
        await ch.queue_declare("bad", durable=True, arguments={"x-message-ttl": -1})
    assert e.value.reply_text == (
        "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'bad' in vhost '/': "
        "{value_negative,-1}"
    )
    assert ch.generation == 9  # every error closed the channel and it reopened
    assert conn.is_open


async def test_invalid_names_fail_locally_like_pamqp(ch):
    with pytest.raises(ValueError, match="Invalid value for queue"):
        await ch.queue_declare("no=equals")
    assert ch.generation == 1


async def test_delete_and_purge_return_counts(ch):
    await ch.queue_declare("q", durable=True)
    for i in range(3):
        ch.publish(b"%d" % i, "", "q")
    await ch.wait_confirms()
    d = await ch.get("q")
    assert await ch.queue_purge("q") == 2
    ch.nack(d.delivery_tag)  # unacked messages survive a purge
    await ticks()
    assert (await ch.queue_declare("q", passive=True)).message_count == 1
    with pytest.raises(PreconditionFailed, match="not empty"):
        await ch.queue_delete("q", if_empty=True)
    assert await ch.queue_delete("q") == 1
    assert await ch.queue_delete("q") == 0  # deleting what is gone is fine


async def test_queue_delete_cancels_its_consumers(conn, ch):
    await ch.queue_declare("q", durable=True)
    cancelled = []
    await ch.consume("q", lambda b: None, consumer_tag="c", on_cancel=cancelled.append)
    admin = await conn.channel()
    with pytest.raises(PreconditionFailed, match="in use"):
        await admin.queue_delete("q", if_unused=True)
    await ch.queue_delete("q")
    await ticks()
    assert cancelled == ["c"]
    assert "c" not in ch._consumers


# --------------------------------------------------------------------------- exclusivity


async def test_exclusive_queue_is_locked_to_its_connection(url, conn, ch):
    await ch.queue_declare("mine", exclusive=True)
    ch2 = await conn.channel()
    await ch2.queue_declare("mine", exclusive=True)  # same connection: fine
    async with MemoryConnection(url) as other:
        for attempt in (
            lambda c: c.queue_declare("mine", exclusive=True),
            lambda c: c.queue_declare("mine", passive=True),
            lambda c: c.consume("mine", lambda b: None),
            lambda c: c.get("mine"),
            lambda c: c.queue_bind("mine", "amq.direct", "k"),
        ):
            och = await other.channel()
            with pytest.raises(ResourceLocked) as e:
                await attempt(och)
            assert e.value.reply_code == 405
            assert e.value.reply_text.startswith(
                "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'mine' "
                "in vhost '/'."
            )
        och.publish(b"allowed", "", "mine")  # publishing to it is allowed
        await och.wait_confirms()
    assert (await ch.get("mine")).body == b"allowed"
    with pytest.raises(ResourceLocked):
        await ch.queue_declare("mine")  # exclusive flag differs


async def test_closing_a_connection_deletes_its_exclusive_queues(url, conn, ch):
    await ch.queue_declare("excl", exclusive=True)
    await conn.close()
    async with MemoryConnection(url) as other:
        with pytest.raises(NotFound):
            await (await other.channel()).queue_declare("excl", passive=True)


async def test_auto_delete_queue_goes_with_its_last_consumer(ch):
    await ch.queue_declare("ad", durable=True, auto_delete=True)
    await ch.queue_declare("ad", passive=True)  # no consumer yet: it stays
    t1 = await ch.consume("ad", lambda b: None)
    t2 = await ch.consume("ad", lambda b: None)
    await ch.cancel(t1)
    assert (await ch.queue_declare("ad", passive=True)).consumer_count == 1
    await ch.cancel(t2)
    with pytest.raises(NotFound):
        await ch.queue_declare("ad", passive=True)


async def test_exclusive_consumer_and_consumer_tag_reuse(conn, ch):
    await ch.queue_declare("q", durable=True)
    await ch.consume("q", lambda b: None, exclusive=True, consumer_tag="only")
    ch2 = await conn.channel()
    with pytest.raises(AccessRefused) as e:
        await ch2.consume("q", lambda b: None)
    assert e.value.reply_text == "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    await ch.queue_declare("q2", durable=True)
    with pytest.raises(NotAllowed) as e:
        await ch.consume("q2", lambda b: None, consumer_tag="only")
    assert e.value.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'only'"
    # RabbitMQ closes the connection for this one; here only the channel closes.
    assert e.value.scope == "connection"


# --------------------------------------------------------------------------- consuming


async def test_several_publishes_in_one_tick_arrive_in_one_batch(ch):
    await ch.queue_declare("q", durable=True)
    batches = []
    await ch.consume("q", batches.append, no_ack=True)
    for i in range(5):
        ch.publish(b"%d" % i, "", "q")
    assert batches == []  # never called from inside publish
    await ticks()
    assert [[d.body for d in b] for b in batches] == [[b"0", b"1", b"2", b"3", b"4"]]
    assert [d.delivery_tag for d in batches[0]] == [1, 2, 3, 4, 5]


async def test_callbacks_are_not_reentered_from_publish_or_ack(ch):
    await ch.queue_declare("q", durable=True)
    depth = 0
    seen = []

    def on_batch(batch):
        nonlocal depth
        depth += 1
        assert depth == 1
        seen.extend(d.body for d in batch)
        for d in batch:
            ch.ack(d.delivery_tag)
            if d.body == b"first":
                ch.publish(b"second", "", "q")
        depth -= 1

    await ch.consume("q", on_batch)
    ch.publish(b"first", "", "q")
    assert await wait_until(lambda: seen == [b"first", b"second"])


async def test_prefetch_limits_each_consumer_and_round_robins(ch):
    await ch.queue_declare("q", durable=True)
    await ch.basic_qos(2)
    got = {"A": [], "B": []}
    await ch.consume("q", lambda b: got["A"].extend(b), consumer_tag="A")
    await ch.consume("q", lambda b: got["B"].extend(b), consumer_tag="B")
    for i in range(8):
        ch.publish(b"%d" % i, "", "q")
    await ch.wait_confirms()
    await ticks()
    assert [d.body for d in got["A"]] == [b"0", b"2"]
    assert [d.body for d in got["B"]] == [b"1", b"3"]
    assert (await ch.queue_declare("q", passive=True)).message_count == 4
    for d in got["A"]:  # frees A's slots; B stays full
        ch.ack(d.delivery_tag)
    await ticks()
    assert [d.body for d in got["A"]] == [b"0", b"2", b"4", b"5"]
    assert len(got["B"]) == 2


async def test_qos_applies_to_consumers_started_after_it(ch):
    await ch.queue_declare("q", durable=True)
    before = []
    await ch.consume("q", before.extend, consumer_tag="before")
    await ch.basic_qos(1)
    after = []
    await ch.consume("q", after.extend, consumer_tag="after")
    for i in range(6):
        ch.publish(b"%d" % i, "", "q")
    await ticks()
    assert (len(before), len(after)) == (5, 1)


async def test_nack_requeues_at_the_head_as_redelivered(ch):
    await ch.queue_declare("q", durable=True)
    for i in range(4):
        ch.publish(b"%d" % i, "", "q")
    got, _ = await collect(ch, "q", ack=False)
    await ticks()
    assert [d.redelivered for d in got] == [False] * 4
    first_tags = [d.delivery_tag for d in got]
    got.clear()
    ch.nack(first_tags[2], multiple=True)  # 0, 1, 2 back, in their old order
    ch.reject(first_tags[3], requeue=True)
    await ticks()
    assert [(d.body, d.redelivered) for d in got] == [
        (b"0", True),
        (b"1", True),
        (b"2", True),
        (b"3", True),
    ]
    assert [d.delivery_tag for d in got] == [5, 6, 7, 8]


async def test_multiple_ack_settles_everything_up_to_the_tag(ch):
    await ch.queue_declare("q", durable=True)
    for i in range(5):
        ch.publish(b"%d" % i, "", "q")
    got, _ = await collect(ch, "q", ack=False)
    await ticks()
    ch.ack(got[2].delivery_tag, multiple=True)
    await ch.close()
    ch2 = await ch.connection.channel()
    # Only the two unacked ones came back (the channel close requeued them).
    assert (await ch2.queue_declare("q", passive=True)).message_count == 2
    d = await ch2.get("q")
    assert (d.body, d.redelivered) == (b"3", True)
    assert ch2.ack(0, multiple=True)  # tag 0 + multiple: everything outstanding
    await ticks()
    assert ch2.is_open and ch2.generation == 1


async def test_unknown_delivery_tag_closes_the_channel_and_it_reopens(ch):
    await ch.queue_declare("q", durable=True)
    for i in range(2):
        ch.publish(b"%d" % i, "", "q")
    got, tag = await collect(ch, "q", ack=False)
    await ticks()
    generation = ch.generation
    assert ch.ack(got[0].delivery_tag)
    assert ch.ack(got[0].delivery_tag) is True  # sent; the broker answers with a close
    assert ch.is_open  # the close arrives on a later tick
    await ticks()
    assert ch.generation == generation + 1 and ch.is_open
    # The unacked message was requeued and comes back to the restored consumer.
    assert await wait_until(lambda: len(got) == 3)
    assert (got[2].body, got[2].redelivered, got[2].delivery_tag) == (b"1", True, 1)
    assert tag in ch._consumers
    # A tag from the old generation is void.
    assert ch.ack(got[1].delivery_tag, generation=generation) is False


async def test_ack_later_acks_at_the_end_of_the_tick(conn, ch):
    await ch.queue_declare("q", durable=True)
    for i in range(3):
        ch.publish(b"%d" % i, "", "q")
    got, _ = await collect(ch, "q", ack=False)
    await ticks()
    assert ch.ack_later(got[0].delivery_tag, ch.generation)
    assert ch.ack_later(got[2].delivery_tag, ch.generation)
    assert ch.ack_later(got[1].delivery_tag, ch.generation - 1) is False  # void tag
    ch.nack(got[1].delivery_tag, requeue=False)
    assert (ch.acked, ch.nacked) == (2, 1)
    await ticks()
    await ch.close()
    other = await conn.channel()
    # Nothing came back: two acked at the end of the tick, one dropped by the nack.
    assert (await other.queue_declare("q", passive=True)).message_count == 0
    assert other.is_open and other.generation == 1


async def test_writable_turns_false_until_drain(ch):
    await ch.queue_declare("q", durable=True)
    assert ch.writable
    for _ in range(1024):
        ch.publish(b"x", "", "q")
    assert not ch.writable
    await ch.drain()
    assert ch.writable
    await ch.wait_confirms()
    assert ch.confirm_seconds.count == 1024 // 32


async def test_get_returns_get_ok_records(ch):
    await ch.queue_declare("q", durable=True)
    assert await ch.get("q") is None
    ch.publish(b"a", "", "q", Properties(headers={"h": 1}))
    ch.publish(b"b", "", "q")
    await ch.wait_confirms()
    d = await ch.get("q")
    assert (d.kind, d.body, d.message_count, d.delivery_tag, d.consumer_tag) == (
        GET_OK,
        b"a",
        1,
        1,
        "",
    )
    assert d.properties.headers == {"h": 1}
    d2 = await ch.get("q", no_ack=True)
    assert (d2.body, d2.delivery_tag) == (b"b", 2)
    ch.nack(d.delivery_tag)
    again = await ch.get("q")
    assert (again.body, again.redelivered, again.delivery_tag) == (b"a", True, 3)


async def test_properties_reach_consumers_as_private_copies(ch):
    await ch.queue_declare("q1", durable=True)
    await ch.queue_declare("q2", durable=True)
    await ch.exchange_declare("f", "fanout")
    await ch.queue_bind("q1", "f")
    await ch.queue_bind("q2", "f")
    props = Properties(
        content_type="application/json",
        headers={"n": 7, "nested": {"ok": True}, "list": [1, "a"]},
        correlation_id="c",
        timestamp=1_700_000_000,
        app_id="agent-a",
    )
    ch.publish(b"{}", "f", "", encode_properties(props))  # pre-encoded bytes
    ch.publish(b"{}", "f", "", props)
    props.headers["n"] = 8  # the publisher mutating afterwards changes nothing
    await ch.wait_confirms()
    a1, a2 = await ch.get("q1"), await ch.get("q1")
    b1 = await ch.get("q2")
    expected = Properties(
        content_type="application/json",
        headers={"n": 7, "nested": {"ok": True}, "list": [1, "a"]},
        correlation_id="c",
        timestamp=1_700_000_000,
        app_id="agent-a",
    )
    assert a1.properties == a2.properties == b1.properties == expected
    a1.properties.headers["nested"]["ok"] = False
    assert b1.properties.headers["nested"] == {"ok": True}


# --------------------------------------------------------------------------- publishing


async def test_confirms_settle_immediately(ch):
    await ch.queue_declare("q", durable=True)
    seqs = [ch.publish(b"x", "", "q") for _ in range(3)]
    assert seqs == [1, 2, 3]
    await ch.wait_confirms()
    assert ch.unconfirmed == 0
    await ch.wait_confirms(upto=2, timeout=1)
    nc = await ch.connection.channel(confirms=False)
    assert nc.publish(b"x", "", "q") == 0
    with pytest.raises(Exception, match="confirms off"):
        await nc.wait_confirms()


async def test_mandatory_unroutable_publish_is_returned(ch):
    returned = []
    ch.on_return = returned.append
    ch.publish(b"m", "amq.direct", "nowhere", Properties(message_id="i"), mandatory=True)
    ch.publish(b"n", "amq.direct", "nowhere")  # not mandatory: dropped silently
    assert returned == []  # returns come from the loop, never from inside publish
    await ch.wait_confirms()  # an unroutable publish is still confirmed
    await ticks()
    assert len(returned) == 1
    r = returned[0]
    assert (r.kind, r.reply_code, r.reply_text, r.exchange, r.routing_key, r.body) == (
        RETURN,
        312,
        "NO_ROUTE",
        "amq.direct",
        "nowhere",
        b"m",
    )
    assert r.properties == Properties(message_id="i")


async def test_publish_to_a_missing_exchange_fails_and_the_channel_reopens(ch):
    await ch.queue_declare("q", durable=True)
    got, _ = await collect(ch, "q")
    failures = []
    ch.on_publish_failure = failures.append
    bad = ch.publish(b"x", "no-such-exchange", "k")
    lost = ch.publish(b"y", "", "q")  # the broker discards it: the channel is closing
    assert ch.is_open
    with pytest.raises(PublishError) as e:
        await ch.wait_confirms()
    assert [seq for seq, _ in e.value.failures] == [bad, lost]
    error = e.value.failures[0][1]
    assert isinstance(error, NotFound)
    assert error.reply_text == "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'"
    assert (error.class_id, error.method_id) == (60, 40)
    assert len(failures) == 1 and len(failures[0]) == 2
    await ticks()
    assert ch.is_open and ch.generation == 2
    after = ch.publish(b"z", "", "q")
    assert after == lost + 1
    await ch.wait_confirms()
    assert await wait_until(lambda: [d.body for d in got] == [b"z"])


async def test_a_method_sent_while_the_channel_is_closing_gets_the_close(ch):
    ch.publish(b"x", "no-such-exchange", "k")
    with pytest.raises(NotFound, match="no-such-exchange"):
        await ch.queue_declare("q", durable=True)
    await ch.queue_declare("q", durable=True)  # reopened by now
    assert ch.generation == 2


async def test_publishes_while_reopening_are_sent_after_the_reopen(ch):
    await ch.queue_declare("q", durable=True)
    with pytest.raises(NotFound):
        await ch.queue_declare("missing", passive=True)
    assert not ch.is_open  # closed, reopening on the next tick
    seq = ch.publish(b"kept", "", "q")
    assert ch.unconfirmed == 1
    await ch.wait_confirms()
    assert ch.unconfirmed == 0
    assert (await ch.get("q")).body == b"kept" and seq == 1


async def test_invalid_expiration_closes_the_channel(ch):
    await ch.queue_declare("q", durable=True)
    ch.publish(b"x", "", "q", Properties(expiration="soon"))
    with pytest.raises(PublishError) as e:
        await ch.wait_confirms()
    assert e.value.failures[0][1].reply_text == (
        "PRECONDITION_FAILED - invalid expiration 'soon': no_integer"
    )


async def test_internal_exchange_refuses_publishes(ch):
    await ch.exchange_declare("int", "fanout", internal=True)
    ch.publish(b"x", "int", "")
    with pytest.raises(PublishError) as e:
        await ch.wait_confirms()
    assert isinstance(e.value.failures[0][1], AccessRefused)


# --------------------------------------------------------------------------- dead-lettering


async def dlx_setup(ch, **queue_args):
    """Queue "src" dead-lettering to topic exchange "dlx", whose "#" binding fills "dead"."""
    await ch.exchange_declare("dlx", "topic")
    await ch.queue_declare("dead", durable=True)
    await ch.queue_bind("dead", "dlx", "#")
    dead, _ = await collect(ch, "dead")
    await ch.queue_declare(
        "src", durable=True, arguments={"x-dead-letter-exchange": "dlx", **queue_args}
    )
    return dead


def death(d):
    headers = d.properties.headers
    entry = dict(headers["x-death"][0])
    assert isinstance(entry.pop("time"), int)
    return entry, {k: v for k, v in headers.items() if k.startswith("x-first")}


async def test_rejected_messages_are_dead_lettered_with_x_death(ch):
    dead = await dlx_setup(ch)
    await ch.queue_bind("src", "amq.topic", "t.#")
    props = Properties(headers={"keep": 1}, expiration="60000", message_id="m1")
    ch.publish(b"rej", "amq.topic", "t.1", props)
    await ch.wait_confirms()
    d = await ch.get("src")
    ch.reject(d.delivery_tag, requeue=False)
    assert await wait_until(lambda: len(dead) == 1)
    out = dead[0]
    assert (out.exchange, out.routing_key, out.redelivered) == ("dlx", "t.1", False)
    assert out.properties.expiration is None  # kept as original-expiration
    assert out.properties.message_id == "m1" and out.properties.headers["keep"] == 1
    assert death(out) == (
        {
            "count": 1,
            "reason": "rejected",
            "queue": "src",
            "exchange": "amq.topic",
            "routing-keys": ["t.1"],
            "original-expiration": "60000",
        },
        {
            "x-first-death-exchange": "amq.topic",
            "x-first-death-queue": "src",
            "x-first-death-reason": "rejected",
        },
    )
    # Dying again in the same queue for the same reason bumps the count.
    ch.publish(out.body, "", "src", out.properties)
    await ch.wait_confirms()
    d = await ch.get("src")
    ch.nack(d.delivery_tag, requeue=False)
    assert await wait_until(lambda: len(dead) == 2)
    entry, first = death(dead[1])
    assert (entry["count"], entry["exchange"], entry["routing-keys"]) == (2, "amq.topic", ["t.1"])
    assert len(dead[1].properties.headers["x-death"]) == 1
    assert first["x-first-death-reason"] == "rejected"


async def test_expired_messages_are_dead_lettered(ch):
    dead = await dlx_setup(ch, **{"x-message-ttl": 20, "x-dead-letter-routing-key": "exp.rk"})
    ch.publish(b"queue-ttl", "", "src", Properties(correlation_id="x"))
    assert await wait_until(lambda: len(dead) == 1)
    out = dead[0]
    assert (out.routing_key, out.properties.correlation_id) == ("exp.rk", "x")
    entry, first = death(out)
    assert entry == {
        "count": 1,
        "reason": "expired",
        "queue": "src",
        "exchange": "",
        "routing-keys": ["src"],
    }
    assert first["x-first-death-reason"] == "expired"


async def test_per_message_expiration(ch):
    dead = await dlx_setup(ch)
    ch.publish(b"short", "", "src", Properties(expiration="10"))
    ch.publish(b"long", "", "src", Properties(expiration="600000"))
    assert await wait_until(lambda: len(dead) == 1)
    entry, _ = death(dead[0])
    assert (dead[0].body, entry["original-expiration"]) == (b"short", "10")
    assert (await ch.get("src")).body == b"long"


async def test_zero_ttl_delivers_to_an_idle_consumer_or_expires(ch):
    dead = await dlx_setup(ch)
    ch.publish(b"nobody", "", "src", Properties(expiration="0"))
    assert await wait_until(lambda: len(dead) == 1)
    got, _ = await collect(ch, "src")
    ch.publish(b"someone", "", "src", Properties(expiration="0"))
    assert await wait_until(lambda: len(got) == 1)
    assert got[0].body == b"someone" and len(dead) == 1


async def test_max_length_drops_the_head_to_the_dlx(ch):
    dead = await dlx_setup(ch, **{"x-max-length": 2})
    for i in range(4):
        ch.publish(b"%d" % i, "", "src")
    assert await wait_until(lambda: len(dead) == 2)
    assert [d.body for d in dead] == [b"0", b"1"]
    assert death(dead[0])[0]["reason"] == "maxlen"
    assert (await ch.queue_declare("src", passive=True)).message_count == 2
    assert (await ch.get("src")).body == b"2"


async def test_reject_publish_overflow_nacks(ch):
    await ch.queue_declare(
        "full", durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    ch.publish(b"1", "", "full")
    refused = ch.publish(b"2", "", "full")
    with pytest.raises(PublishError) as e:
        await ch.wait_confirms()
    assert [seq for seq, _ in e.value.failures] == [refused]
    assert isinstance(e.value.failures[0][1], PublishNacked)
    assert (await ch.queue_declare("full", passive=True)).message_count == 1


async def test_expiry_cycle_is_dropped(ch):
    # A queue dead-lettering expired messages back into itself would loop forever.
    await ch.queue_declare(
        "loop",
        durable=True,
        arguments={
            "x-message-ttl": 10,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "loop",
        },
    )
    ch.publish(b"x", "", "loop")
    await ch.wait_confirms()
    seen: list[int] = []
    gone_at = None
    for _ in range(400):  # without cycle detection the message would keep coming back
        seen.append((await ch.queue_declare("loop", passive=True)).message_count)
        if gone_at is None and seen[-1] == 0:
            gone_at = len(seen) - 1
        if gone_at is not None and len(seen) - gone_at > 20:
            break
        await asyncio.sleep(0.005)
    assert gone_at is not None
    assert set(seen[gone_at:]) == {0}


# --------------------------------------------------------------------------- direct reply-to


async def test_direct_reply_to_round_trip(url, ch):
    await ch.queue_declare("server", durable=True)
    replies = []
    await ch.consume("amq.rabbitmq.reply-to", replies.extend, no_ack=True, consumer_tag="r")
    async with MemoryConnection(url) as server_conn:
        sch = await server_conn.channel()

        def serve(batch):
            for d in batch:
                sch.publish(
                    d.body.upper(),
                    "",
                    d.properties.reply_to,
                    Properties(correlation_id=d.properties.correlation_id),
                )
                sch.ack(d.delivery_tag)

        await sch.consume("server", serve)
        ch.publish(
            b"ping", "", "server", Properties(reply_to="amq.rabbitmq.reply-to", correlation_id="1")
        )
        assert await wait_until(lambda: len(replies) == 1)
    r = replies[0]
    assert (r.body, r.properties.correlation_id, r.consumer_tag, r.exchange) == (
        b"PING",
        "1",
        "r",
        "",
    )
    assert r.routing_key.startswith("amq.rabbitmq.reply-to.")
    assert await ch.queue_declare("amq.rabbitmq.reply-to", passive=True) == QueueDeclareOk(
        "amq.rabbitmq.reply-to", 0, 1
    )
    # Only the default exchange routes to it; after a cancel, the name routes nowhere.
    returned = []
    ch.on_return = returned.append
    ch.publish(b"via-direct", "amq.direct", r.routing_key, mandatory=True)
    await ch.cancel("r")
    ch.publish(b"late", "", r.routing_key, mandatory=True)
    await ticks()
    assert [d.body for d in returned] == [b"via-direct", b"late"]
    assert len(replies) == 1


async def test_direct_reply_to_misuse(conn, ch):
    await ch.queue_declare("server", durable=True)
    ch.publish(b"x", "", "server", Properties(reply_to="amq.rabbitmq.reply-to"))
    with pytest.raises(PublishError) as e:
        await ch.wait_confirms()
    assert e.value.failures[0][1].reply_text == (
        "PRECONDITION_FAILED - fast reply consumer does not exist"
    )
    ch = await conn.channel()
    with pytest.raises(PreconditionFailed) as e2:
        await ch.consume("amq.rabbitmq.reply-to", lambda b: None)
    assert e2.value.reply_text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    ch = await conn.channel()
    await ch.consume("amq.rabbitmq.reply-to", lambda b: None, no_ack=True)
    with pytest.raises(PreconditionFailed, match="reply consumer already set"):
        await ch.consume("amq.rabbitmq.reply-to", lambda b: None, no_ack=True)


# --------------------------------------------------------------------------- connection loss


async def test_closing_a_connection_requeues_its_unacked_deliveries(url, conn, ch):
    await ch.queue_declare("work", durable=True)
    for i in range(3):
        ch.publish(b"%d" % i, "", "work")
    got, _ = await collect(ch, "work", ack=False)
    await ticks()
    ch.ack(got[0].delivery_tag)
    async with MemoryConnection(url) as other:
        och = await other.channel()
        assert (await och.queue_declare("work", passive=True)).message_count == 0
        await conn.close()
        ok = await och.queue_declare("work", passive=True)
        assert (ok.message_count, ok.consumer_count) == (2, 0)
        again, _ = await collect(och, "work")
        assert await wait_until(lambda: len(again) == 2)
        assert [(d.body, d.redelivered) for d in again] == [(b"1", True), (b"2", True)]


async def test_closing_a_channel_requeues_and_drops_its_consumers(conn, ch):
    await ch.queue_declare("q", durable=True)
    ch.publish(b"x", "", "q")
    got, _ = await collect(ch, "q", ack=False)
    await ticks()
    assert len(got) == 1
    await ch.close()
    assert not ch.is_open
    ch2 = await conn.channel()
    ok = await ch2.queue_declare("q", passive=True)
    assert (ok.message_count, ok.consumer_count) == (1, 0)
    with pytest.raises(Exception, match="closed"):
        await ch.queue_declare("q", durable=True)


async def test_wait_confirms_fails_publishes_lost_with_the_connection(conn, ch):
    with pytest.raises(NotFound):
        await ch.queue_declare("missing", passive=True)
    seq = ch.publish(b"x", "", "q")  # buffered until the reopen...
    await conn.close()  # ...which never comes
    with pytest.raises(PublishError) as e:
        await ch.wait_confirms()
    assert e.value.failures[0][0] == seq
    assert isinstance(e.value.failures[0][1], ConnectionLost)
