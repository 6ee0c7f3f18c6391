"""Call deadlines, on RabbitMQ and memory:// (nameko/nameko#652).

`call(..., timeout=t)` sends its request with AMQP `expiration` (the remaining milliseconds)
and the `x-munggoggo-deadline` header (epoch milliseconds); the broker drops a request that
expires in a queue, and the callee never starts one whose deadline has passed (a request
queued behind a slow call, or one a plain client sends late): it answers -32002 instead.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from broker_tools import eventually, wait_until
from mesh_tools import uid

from munggoggo import Agent, AgentConfig, RpcTimeout, expose
from munggoggo._speedups import Properties, encode_properties, encode_table
from munggoggo.rpc_deadlines import (
    deadline_marks,
    deadline_passed,
    deadline_table,
    request_deadline,
)
from munggoggo.tracing import HEADER as TRACE_HEADER
from munggoggo.tracing import TRACEPARENT, new_traceparent, trace_id
from munggoggo.wire import DEADLINE_HEADER

TIMEOUT = -32002


class Busy(Agent):
    """One call at a time: `slow` holds the slot, `count` records that it ran."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, config=AgentConfig(max_concurrent_calls=1), **kwargs)
        self.counted = 0
        self.slow_started = asyncio.Event()

    @expose
    async def slow(self, seconds: float) -> str:
        self.slow_started.set()
        await asyncio.sleep(seconds)
        return "done"

    @expose
    def count(self) -> int:
        self.counted += 1
        return self.counted


def test_the_marks_of_a_deadline():
    expiration, deadline = deadline_marks(2.5, now=1000.0)
    assert expiration == "2500" and deadline == 1_002_500
    assert deadline_marks(0.0001, now=0.0) == ("1", 1)  # never 0: that would expire at once
    headers = {DEADLINE_HEADER: deadline}
    assert request_deadline(headers) == 1002.5
    assert not deadline_passed(headers, now=1002.4)
    assert deadline_passed(headers, now=1002.5)
    # No deadline, or a header that is no number: nothing is refused.
    for other in (None, {}, {DEADLINE_HEADER: "soon"}, {DEADLINE_HEADER: True}):
        assert request_deadline(other) is None and not deadline_passed(other, now=1e12)


async def test_a_request_carries_its_deadline(mesh_url):
    async with Agent(uid("caller"), url=mesh_url) as caller:
        target = uid("silent")  # a queue nobody consumes: the request waits there
        ch = await caller.connection.channel(confirms=False)
        await ch.queue_declare(target, exclusive=True)
        before = time.time()
        call = asyncio.ensure_future(caller.call(target, "mul", 6, 7, timeout=2.0))
        delivery = None

        async def got_it() -> bool:
            nonlocal delivery
            delivery = await ch.get(target, no_ack=True)
            return delivery is not None

        assert await wait_until(got_it, timeout=5)
        props = delivery.properties
        assert props.type == "rpc" and props.expiration == "2000"
        deadline_ms = props.headers[DEADLINE_HEADER]
        assert isinstance(deadline_ms, int)
        assert int(before * 1000) + 2000 <= deadline_ms <= time.time() * 1000 + 2000
        with pytest.raises(RpcTimeout):
            await call
        await ch.close()


@pytest.mark.rabbitmq
async def test_a_request_travels_as_the_general_encoder_writes_it(broker_url):
    """A request's properties are assembled from parts encoded once: the bytes received
    must be exactly what the general encoder writes for them, with and without a trace."""
    async with Agent(uid("caller"), url=broker_url) as caller:
        target = uid("silent")
        ch = await caller.connection.channel(confirms=False)
        await ch.queue_declare(target, exclusive=True)
        before = time.time()
        calls = [
            asyncio.ensure_future(caller.call(target, "mul", 6, 7, timeout=3.0)),
            asyncio.ensure_future(caller.call(target, "mul", timeout=2.5)),
        ]
        trace = new_traceparent()
        token = TRACEPARENT.set(trace)  # the next call's task continues this trace
        try:
            calls.append(asyncio.ensure_future(caller.call(target, "mul", x=1, timeout=3.0)))
        finally:
            TRACEPARENT.reset(token)
        received = []

        async def got_all() -> bool:
            delivery = await ch.get(target, no_ack=True)
            if delivery is not None:
                received.append(delivery)
            return len(received) == len(calls)

        assert await wait_until(got_all, timeout=5)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        for delivery, expiration in zip(received, ("3000", "2500", "3000"), strict=True):
            props = delivery.properties
            assert delivery.properties_raw == encode_properties(props)
            assert props.content_type == "application/json" and props.type == "rpc"
            assert props.reply_to == props.app_id == caller.identity
            assert props.expiration == expiration
            assert props.correlation_id and props.correlation_id.startswith(caller.identity)
            assert int(before) <= props.timestamp <= time.time()
            assert int(before * 1000) + int(expiration) <= props.headers[DEADLINE_HEADER]
        assert TRACE_HEADER not in received[0].properties.headers
        assert trace_id(received[2].properties.headers[TRACE_HEADER]) == trace_id(trace)
        assert len({d.properties.correlation_id for d in received}) == 3
        await ch.close()


def test_the_encoded_deadline_table_is_the_general_encoders():
    for deadline in (2**31, 1_733_350_000_123, 2**63 - 1):
        assert deadline_table(deadline) == encode_table({DEADLINE_HEADER: deadline})
    assert deadline_table(2**31 - 1) is None  # encoded as another type: the general path


async def test_the_broker_drops_a_request_that_expires_in_the_queue(mesh_url):
    async with Agent(uid("caller"), url=mesh_url) as caller:
        target = uid("absent")
        ch = await caller.connection.channel(confirms=False)
        await ch.queue_declare(target, exclusive=True)
        with pytest.raises(RpcTimeout):
            await caller.call(target, "mul", 6, 7, timeout=0.2)

        async def queue_empty() -> bool:
            return (await ch.queue_declare(target, passive=True)).message_count == 0

        await eventually(queue_empty, what="the expired request leaves the queue")
        await ch.close()


async def test_a_call_queued_past_its_deadline_never_runs(mesh_url):
    busy = Busy(uid("busy"), url=mesh_url)
    async with busy, Agent(uid("caller"), url=mesh_url) as caller:
        slow = asyncio.ensure_future(caller.call(busy.identity, "slow", 1.0, timeout=5))
        await asyncio.wait_for(busy.slow_started.wait(), 5)
        # Queued behind `slow` (one call at a time), it is still waiting when its
        # deadline passes.
        with pytest.raises(RpcTimeout):
            await caller.call(busy.identity, "count", timeout=0.3)
        assert await slow == "done"
        await asyncio.sleep(0.2)  # the slot was free for the expired one: it was skipped
        assert busy.counted == 0
        # The slot is not lost: a call in time runs.
        assert await caller.call(busy.identity, "count", timeout=5) == 1


async def raw_request(caller: Agent, target: str, deadline_ms: int | None) -> dict:
    """A request from a plain AMQP client, with the deadline header it chose; its reply."""
    ch = await caller.connection.channel(confirms=False)
    replies = uid("replies")
    await ch.queue_declare(replies, exclusive=True)
    headers = {DEADLINE_HEADER: deadline_ms} if deadline_ms is not None else None
    body = json.dumps({"jsonrpc": "2.0", "method": "count", "id": 1}).encode()
    props = Properties(
        type="rpc", correlation_id="c1", reply_to=replies, content_type="application/json",
        headers=headers,
    )  # fmt: skip
    ch.publish(body, "", target, props)
    reply = None

    async def got_it() -> bool:
        nonlocal reply
        reply = await ch.get(replies, no_ack=True)
        return reply is not None

    assert await wait_until(got_it, timeout=5)
    await ch.close()
    return json.loads(reply.body)


async def test_a_late_request_is_answered_with_32002_and_not_run(mesh_url):
    busy = Busy(uid("busy"), url=mesh_url)
    async with busy, Agent(uid("caller"), url=mesh_url) as caller:
        past = int(time.time() * 1000) - 1000
        answer = await raw_request(caller, busy.identity, past)
        assert answer["id"] == 1 and answer["error"]["code"] == TIMEOUT
        assert busy.counted == 0
        future = int(time.time() * 1000) + 10_000
        assert (await raw_request(caller, busy.identity, future))["result"] == 1
        assert (await raw_request(caller, busy.identity, None))["result"] == 2
        assert busy.counted == 2


def test_timeouts_without_a_deadline_and_past_the_brokers_ceiling():
    # Infinite: no expiration, no header (the call waits for its reply).
    assert deadline_marks(float("inf"), now=0.0) == (None, None)
    # Past RabbitMQ's ceiling for a message TTL (ten years): the header alone.
    expiration, deadline = deadline_marks(20 * 365 * 86400, now=0.0)
    assert expiration is None and deadline == 20 * 365 * 86400 * 1000
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            deadline_marks(bad)


async def test_an_infinite_or_huge_timeout_still_calls(mesh_url):
    class Calc(Agent):
        @expose
        def mul(self, a: int, b: int) -> int:
            return a * b

    async with Calc(uid("calc"), url=mesh_url) as calc, Agent(uid("c"), url=mesh_url) as caller:
        assert await caller.call(calc.identity, "mul", 6, 7, timeout=float("inf")) == 42
        # Twenty years: no `expiration` the broker would refuse by closing the channel.
        assert await caller.call(calc.identity, "mul", 2, 3, timeout=20 * 365 * 86400.0) == 6
        assert await caller.call(calc.identity, "mul", 3, 3, timeout=5) == 9
        with pytest.raises(ValueError):
            await caller.call(calc.identity, "mul", 1, 1, timeout=float("nan"))
        with pytest.raises(ValueError):
            await caller.call(calc.identity, "mul", 1, 1, timeout=0)
