"""Reading batches (core/batch_consume.py), on RabbitMQ and memory://: a batch published
raw (core/batch_format.py's wire format) reaches a behaviour, or the inbox's routing, as one
message per item, in order; items settle one by one and the AMQP message once all have.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from broker_tools import eventually
from mesh_tools import Point, uid

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, Template
from munggoggo._speedups import Properties
from munggoggo.batch_consume import HEADERS_DROPPED, REJECTED_REASON
from munggoggo.batch_format import BATCH_CONTENT_TYPE, BATCH_COUNT_HEADER, pack_items
from munggoggo.deadletters import DeadLetter, DeadLetters
from munggoggo.message import Message
from munggoggo.wire import RETRIES_HEADER, TOPIC_EXCHANGE

JSON = "application/json"


class Script(Behaviour):
    """Keeps every message it receives in `got`, then does `act(msg)` with it (which may
    ack, nack or raise); what `act` leaves unsettled is acked when the step ends."""

    restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

    def __init__(
        self, *args: Any, act: Callable[[Message], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.got: list[Message] = []
        self.act = act

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        self.got.append(msg)
        if self.act is not None:
            self.act(msg)


async def publish_raw(
    agent: Agent,
    routing_key: str,
    body: bytes,
    *,
    exchange: str = TOPIC_EXCHANGE,
    count: int | None = None,
    timestamp: int | None = None,
) -> None:
    """Publish `body` as a batch (its content type, the count header if given), confirmed."""
    pub = agent.publish_channel
    props = Properties(
        content_type=BATCH_CONTENT_TYPE,
        headers={BATCH_COUNT_HEADER: count} if count is not None else None,
        app_id=agent.identity,
        type="message",
        timestamp=timestamp,
        delivery_mode=2,
    )
    await pub.wait_confirm_of(pub.publish(body, exchange, routing_key, props))


async def publish_batch(agent: Agent, routing_key: str, items: list[Any], **kw: Any) -> None:
    await publish_raw(agent, routing_key, pack_items(items), count=len(items), **kw)


def channel_of(agent: Agent, behaviour: Behaviour) -> Any:
    return agent.consumers()[behaviour.short_name][0]


async def dead_letters_of(dead: DeadLetters, agent: str, count: int) -> list[DeadLetter]:
    found: list[DeadLetter] = []

    async def enough() -> bool:
        found[:] = await dead.list(10_000, agent=agent)
        return len(found) >= count

    await eventually(enough, timeout=15, what=f"{count} dead letter(s) of {agent}")
    return found


async def test_items_arrive_one_by_one_in_order_and_the_batch_is_acked(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")
    async with agent:
        script = await agent.add_behaviour(Script(agent, binding_keys=[topic]))
        items = [
            (msgspec.json.encode(Point(1, 2)), JSON, {"n": 1}),
            (msgspec.msgpack.encode(Point(3, 4)), "application/msgpack", None),
            ("héllo".encode(), "text/plain; charset=utf-8", {"n": 3, "tag": "x"}),
            (b"\x00raw", None, None),
        ]
        await publish_batch(agent, topic, items, timestamp=1_700_000_000)
        await eventually(lambda: len(script.got) == 4, what="4 items")
        got = script.got
        assert [m.body for m in got] == [body for body, _, _ in items]
        assert [m.content_type for m in got] == [ct for _, ct, _ in items]
        assert [m.headers for m in got] == [{"n": 1}, {}, {"n": 3, "tag": "x"}, {}]
        assert got[0].decode(Point) == Point(1, 2)
        assert got[1].decode(Point) == Point(3, 4)
        assert got[2].decode() == "héllo"
        for m in got:  # the AMQP message's other properties belong to every item
            assert (m.exchange, m.routing_key) == (TOPIC_EXCHANGE, topic)
            assert m.sender == agent.identity and m.kind == "message"
            assert m.timestamp == 1_700_000_000 and not m.redelivered
        channel = channel_of(agent, script)
        await eventually(lambda: channel.acked == 1, what="the batch acked once")
        assert channel.nacked == 0
        assert agent.stats.consumed[(script.short_name, "message")] == 4
        assert agent.stats.batches_received[script.short_name] == 1
        # A plain message after it still arrives as it is.
        await agent.publish(Point(5, 6), topic)
        await eventually(lambda: len(script.got) == 5, what="the plain message")
        assert script.got[4].decode(Point) == Point(5, 6)
        probe = await agent.connection.channel(confirms=False)
        assert (await probe.queue_declare(script.queue, passive=True)).message_count == 0


async def test_a_failing_item_is_retried_alone_then_dead_lettered_alone(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url, config=AgentConfig(max_redeliveries=2))
    topic = uid("t")

    def fail_bad(msg: Message) -> None:
        if msg.body == b"bad":
            raise RuntimeError("cannot handle bad")

    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            script = await agent.add_behaviour(Script(agent, binding_keys=[topic], act=fail_bad))
            items = [(b"a", None, None), (b"bad", "text/plain", {"k": "v"}), (b"c", None, None)]
            await publish_batch(agent, topic, items)
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            bodies = [m.body for m in script.got]
            assert bodies == [b"a", b"bad", b"c", b"bad", b"bad"]
            first, retry1, retry2 = (m for m in script.got if m.body == b"bad")
            assert RETRIES_HEADER not in first.headers
            # Each retry is a copy of that item alone, with its own headers and the count.
            assert retry1.headers == {"k": "v", RETRIES_HEADER: 1, **_origin(topic)}
            assert retry2.headers[RETRIES_HEADER] == 2
            assert retry1.content_type == retry2.content_type == "text/plain"
            assert letter.body == b"bad" and letter.retries == 3
            assert letter.reason == "RuntimeError: cannot handle bad"
            assert (letter.exchange, letter.routing_key) == (TOPIC_EXCHANGE, topic)
            assert letter.headers["k"] == "v" and letter.behaviour == script.short_name
            channel = channel_of(agent, script)
            # The batch and the two retries, each acked once; nothing came back.
            await eventually(lambda: channel.acked == 3, what="three acks")
            await asyncio.sleep(0.3)
            assert len(script.got) == 5 and channel.nacked == 0
        finally:
            await dead.purge(all=True, agent=agent.identity)


def _origin(topic: str) -> dict[str, str]:
    return {
        "x-munggoggo-original-exchange": TOPIC_EXCHANGE,
        "x-munggoggo-original-routing-key": topic,
    }


async def test_requeueing_every_item_redelivers_the_batch_whole(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")

    def requeue_first_time(msg: Message) -> None:
        if not msg.redelivered:
            assert msg.nack(requeue=True)

    async with agent:
        script = await agent.add_behaviour(
            Script(agent, binding_keys=[topic], act=requeue_first_time)
        )
        await publish_batch(agent, topic, [(b"1", None, None), (b"2", None, None)])
        await eventually(lambda: len(script.got) == 4, what="the batch twice")
        assert [(m.body, m.redelivered) for m in script.got] == [
            (b"1", False),
            (b"2", False),
            (b"1", True),
            (b"2", True),
        ]
        channel = channel_of(agent, script)
        await eventually(lambda: channel.acked == 1, what="the redelivered batch acked")
        assert channel.nacked == 1  # the batch, once: not item by item


async def test_mixed_outcomes_requeue_and_reject_items_alone(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")

    def settle(msg: Message) -> None:
        if msg.body == b"again" and RETRIES_HEADER not in msg.headers and not msg.redelivered:
            if len([m for m in script.got if m.body == b"again"]) == 1:
                msg.nack(requeue=True)
        elif msg.body == b"refused":
            msg.nack(requeue=False)

    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            script = await agent.add_behaviour(Script(agent, binding_keys=[topic], act=settle))
            items = [(b"ok", None, None), (b"again", None, {"i": 2}), (b"refused", None, {"i": 3})]
            await publish_batch(agent, topic, items)
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            await eventually(lambda: len(script.got) == 4, what="the requeued item again")
            assert [m.body for m in script.got] == [b"ok", b"again", b"refused", b"again"]
            copy = script.got[3]
            assert copy.headers == {"i": 2, **_origin(topic)}  # no retry counted
            assert letter.body == b"refused" and letter.reason == REJECTED_REASON
            assert letter.headers["i"] == 3 and letter.queue == script.queue
            channel = channel_of(agent, script)
            # The batch once its copies were confirmed, then the requeued copy.
            await eventually(lambda: channel.acked == 2, what="two acks")
            await asyncio.sleep(0.3)
            assert len(script.got) == 4 and channel.nacked == 0
        finally:
            await dead.purge(all=True, agent=agent.identity)


# A batch nested deeper than the decoder recurses (RecursionError, not a DecodeError).
TOO_DEEP = b"\x91\x93\xc4\x01a\xc0\x81\xa1x" + b"\x91" * 100_000 + b"\x90"


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b"\x01 not msgpack", None),
        (pack_items([(b"a", None, None)]), 2),
        (b"\x90", None),
        (TOO_DEEP, None),
    ],
    ids=["garbage", "count mismatch", "empty", "too deep"],
)
async def test_a_malformed_batch_is_dead_lettered_and_the_next_one_read(mesh_url, body, count):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")
    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            script = await agent.add_behaviour(Script(agent, binding_keys=[topic]))
            await publish_raw(agent, topic, body, count=count)
            await publish_batch(agent, topic, [(b"good", None, None)])
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            assert letter.body == body and letter.reason.startswith("BatchFormatError")
            assert letter.content_type == BATCH_CONTENT_TYPE
            await eventually(lambda: len(script.got) == 1, what="the good batch")
            assert script.got[0].body == b"good"
            assert agent.stats.dead_lettered[script.short_name] == 1
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_a_batch_too_deep_to_decode_costs_only_itself(mesh_url):
    """Behaviour queue and inbox: the deliveries behind it in the same callback arrive."""
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")
    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            script = await agent.add_behaviour(
                Script(agent, binding_keys=[topic], template=Template(sender=agent.identity))
            )
            pub = agent.publish_channel
            props = Properties(content_type=BATCH_CONTENT_TYPE, type="message")
            plain = Properties(content_type="text/plain", type="message", app_id=agent.identity)
            pub.publish(TOO_DEEP, TOPIC_EXCHANGE, topic, props)
            pub.publish(b"plain", TOPIC_EXCHANGE, topic, plain)
            pub.publish(TOO_DEEP, "", agent.identity, props)
            pub.publish(b"direct", "", agent.identity, plain)
            await pub.wait_confirms(timeout=5)
            letters = await dead_letters_of(dead, agent.identity, 2)
            assert all(d.reason.startswith("BatchFormatError") for d in letters)
            await eventually(lambda: len(script.got) == 2, what="both plain messages")
            assert sorted(m.body for m in script.got) == [b"direct", b"plain"]
            probe = await agent.connection.channel(confirms=False)
            assert (await probe.queue_declare(script.queue, passive=True)).message_count == 0
        finally:
            await dead.purge(all=True, agent=agent.identity)


# A header value msgpack carries and AMQP does not: a foreign writer's batch.
WHEN = {"when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)}


async def test_an_item_that_cannot_be_requeued_alone_requeues_its_batch(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")

    def requeue_odd_once(msg: Message) -> None:
        if msg.body == b"odd" and not msg.redelivered:
            assert msg.nack(requeue=True)

    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            script = await agent.add_behaviour(
                Script(agent, binding_keys=[topic], act=requeue_odd_once)
            )
            await publish_batch(agent, topic, [(b"ok", None, None), (b"odd", None, WHEN)])
            await eventually(lambda: len(script.got) == 4, what="the batch twice")
            assert [(m.body, m.redelivered) for m in script.got] == [
                (b"ok", False),
                (b"odd", False),
                (b"ok", True),
                (b"odd", True),
            ]
            channel = channel_of(agent, script)
            await eventually(lambda: channel.acked == 1, what="the redelivered batch acked")
            assert channel.nacked == 1
            assert await dead.list(10, agent=agent.identity) == []
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_an_item_that_cannot_be_dead_lettered_whole_goes_without_its_headers(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")

    def refuse_odd(msg: Message) -> None:
        if msg.body == b"odd":
            assert msg.nack(requeue=False)

    async with agent:
        dead = DeadLetters(agent.connection)
        try:
            script = await agent.add_behaviour(Script(agent, binding_keys=[topic], act=refuse_odd))
            items = [(b"a", None, None), (b"odd", "text/plain", WHEN), (b"c", None, None)]
            await publish_batch(agent, topic, items)
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            assert letter.body == b"odd" and letter.content_type == "text/plain"
            assert letter.reason == REJECTED_REASON + HEADERS_DROPPED
            assert "when" not in letter.headers and letter.queue == script.queue
            assert (letter.exchange, letter.routing_key) == (TOPIC_EXCHANGE, topic)
            channel = channel_of(agent, script)
            await eventually(lambda: channel.acked == 1, what="the batch acked")
            await asyncio.sleep(0.3)
            assert [m.body for m in script.got] == [b"a", b"odd", b"c"]
            assert channel.nacked == 0
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_a_batch_sent_to_the_inbox_is_routed_item_by_item(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    sender = Agent(uid("sender"), url=mesh_url)
    async with agent, sender:
        script = await agent.add_behaviour(Script(agent, template=Template(sender=sender.identity)))
        items = [(msgspec.json.encode(Point(i, i)), JSON, {"i": i}) for i in range(3)]
        now = int(time.time())
        # The inbox acks presence announcements too: count from after the agents' own.
        await asyncio.sleep(0.2)
        inbox = agent.consumers()[""][0]
        acked, nacked = inbox.acked, inbox.nacked
        await publish_batch(sender, agent.identity, items, exchange="", timestamp=now)
        await eventually(lambda: len(script.got) == 3, what="3 items")
        assert [m.decode(Point) for m in script.got] == [Point(i, i) for i in range(3)]
        assert [m.headers for m in script.got] == [{"i": i} for i in range(3)]
        assert all(m.sender == sender.identity and m.timestamp == now for m in script.got)
        assert agent.stats.batches_received[""] == 1
        assert agent.stats.consumed[("", "message")] == 3
        await eventually(lambda: inbox.acked > acked, what="the batch acked")
        assert inbox.nacked == nacked
        if mesh_url.startswith("memory://"):  # a broker of this test alone: nothing else
            assert inbox.acked == acked + 1


@pytest.mark.parametrize("first", ["acked", "requeued"])
async def test_a_stopping_behaviour_hands_back_the_items_it_did_not_finish(mesh_url, first):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")

    def stop_at_first(msg: Message) -> None:
        if first == "requeued":
            msg.nack(requeue=True)
        script.kill()  # its mailbox, items "2" and "3", goes back

    async with agent:
        script = await agent.add_behaviour(Script(agent, binding_keys=[topic], act=stop_at_first))
        items = [(b"1", None, None), (b"2", "text/plain", {"i": 2}), (b"3", None, None)]
        await publish_batch(agent, topic, items)
        await script.join(timeout=5)
        assert [m.body for m in script.got] == [b"1"]
        probe = await agent.connection.channel(confirms=False)
        if first == "acked":
            # The two items back in the queue alone, each a plain message; the batch acked.
            expected = 2
        else:
            expected = 1  # nothing was acked: the batch went back whole
        await eventually(lambda: _ready(probe, script.queue, expected), what=f"{expected} ready")
        got = [await probe.get(script.queue, no_ack=True) for _ in range(expected)]
        if first == "acked":
            assert [(d.body, d.properties.content_type) for d in got] == [
                (b"2", "text/plain"),
                (b"3", None),
            ]
            assert got[0].properties.headers == {"i": 2, **_origin(topic)}
        else:
            (batch,) = got
            assert batch.properties.content_type == BATCH_CONTENT_TYPE
            assert batch.body == pack_items(items) and batch.redelivered


async def _ready(channel: Any, queue: str, count: int) -> bool:
    return (await channel.queue_declare(queue, passive=True)).message_count == count


class Reopener(Script):
    """Makes its channel fail (and reopen) while holding the first batch's first item."""

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        self.got.append(msg)
        if len(self.got) == 1:
            channel = self.agent.consumers()[self.short_name][0]
            with pytest.raises(Exception):  # noqa: B017 - any refusal closes the channel
                await channel.queue_declare(uid("no-such-queue"), passive=True)
            self.settled_stale = msg.ack()


async def test_items_of_a_batch_from_before_a_reopen_settle_nothing(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")
    async with agent:
        script = await agent.add_behaviour(Reopener(agent, binding_keys=[topic]))
        await publish_batch(agent, topic, [(b"1", None, None), (b"2", None, None)])
        # The stale items settle nothing; the broker delivers the batch again.
        await eventually(lambda: len(script.got) >= 4, what="the batch again")
        assert script.settled_stale is False and script.got[0].stale
        again = [m for m in script.got[2:] if m.redelivered]
        assert [m.body for m in again][:2] == [b"1", b"2"]
        channel = channel_of(agent, script)
        await eventually(lambda: channel.acked == 1, what="the redelivered batch acked")


async def test_a_batch_written_by_a_foreign_client_is_read(broker_url):
    """aiormq publishes a body assembled by hand from the format's description: msgpack
    array of items, `[body(bin), content_type(str), headers(map)]`, trailing nils left out."""
    import aiormq
    from pamqp.commands import Basic

    body = (
        b"\x92"  # an array of two items
        + b"\x93\xc4\x05hello\xaatext/plain\x81\xa1a\x01"  # [b"hello", "text/plain", {"a": 1}]
        + b"\x91\xc4\x02hi"  # [b"hi"]
    )
    agent = Agent(uid("reader"), url=broker_url)
    topic = uid("t")
    async with agent:
        script = await agent.add_behaviour(Script(agent, binding_keys=[topic]))
        peer = await aiormq.connect(broker_url)
        try:
            channel = await peer.channel()
            props = Basic.Properties(
                content_type=BATCH_CONTENT_TYPE,
                headers={BATCH_COUNT_HEADER: 2},
                app_id="foreign",
            )
            await channel.basic_publish(
                body, exchange=TOPIC_EXCHANGE, routing_key=topic, properties=props
            )
        finally:
            await peer.close()
        await eventually(lambda: len(script.got) == 2, what="2 items")
        first, second = script.got
        assert (first.body, first.content_type, first.headers) == (b"hello", "text/plain", {"a": 1})
        assert (second.body, second.content_type, second.headers) == (b"hi", None, {})
        assert first.decode() == "hello" and first.sender == second.sender == "foreign"
        channel_ = channel_of(agent, script)
        await eventually(lambda: channel_.acked == 1, what="the batch acked")


async def test_no_item_goes_out_alone_when_a_later_one_sends_the_batch_back_whole(mesh_url):
    agent = Agent(uid("reader"), url=mesh_url)
    topic = uid("t")

    def requeue_first_and_odd_once(msg: Message) -> None:
        if msg.body in (b"first", b"odd") and not msg.redelivered:
            assert msg.nack(requeue=True)

    async with agent:
        script = await agent.add_behaviour(
            Script(agent, binding_keys=[topic], act=requeue_first_and_odd_once)
        )
        items = [(b"first", None, None), (b"ok", None, None), (b"odd", None, WHEN)]
        await publish_batch(agent, topic, items)
        await eventually(lambda: len(script.got) >= 6, what="the batch twice")
        await asyncio.sleep(0.3)  # a copy of `first` sent alone would arrive meanwhile
        # `odd` cannot go back alone, so the batch goes back whole, and `first` with it
        # only: it was never sent alone as well.
        assert [(m.body, m.redelivered) for m in script.got] == [
            (b"first", False),
            (b"ok", False),
            (b"odd", False),
            (b"first", True),
            (b"ok", True),
            (b"odd", True),
        ]
