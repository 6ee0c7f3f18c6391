"""Delayed delivery and delayed retries (core/delays.py), on RabbitMQ and memory://:
`publish(..., delay=s)`, `send(..., delay=s)` and `AgentConfig(retry_delays=...)`.

Timing asserts are lower bounds only (delivered no earlier than asked), each against a
time taken before the publish or the failure; upper bounds are the generous timeouts.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from broker_tools import wait_until
from mesh_tools import uid

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, Template
from munggoggo.deadletters import DeadLetters
from munggoggo.delays import delay_ms, delay_queue_name
from munggoggo.wire import DELAY_HEADER, RETRIES_HEADER, TOPIC_EXCHANGE

# RabbitMQ's TTL clock ticks in milliseconds (see the retry timing checks).
TTL_GRAIN = 0.003


class Timed(Behaviour):
    """Records (monotonic arrival time, message) of what it receives; fails every message
    while `failing`, recording the time just before it raises."""

    restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

    async def setup(self) -> None:
        self.arrivals: list[tuple[float, object]] = []
        self.failed_at: list[float] = []
        self.failing = False

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        self.arrivals.append((time.monotonic(), msg))
        if self.failing:
            self.failed_at.append(time.monotonic())
            raise RuntimeError(f"cannot handle {msg.body!r}")


async def dead_letters_of(dead: DeadLetters, agent: str, count: int, timeout: float = 20.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await dead.list(10_000, agent=agent)
        if len(found) >= count:
            return found
        if loop.time() > deadline:
            pytest.fail(f"{len(found)} dead letter(s) of {agent} after {timeout}s, not {count}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("path", ["behaviour queue", "inbox"])
async def test_retries_wait_each_delay_in_turn_then_dead_letter(mesh_url, path):
    agent = Agent(uid("retry"), url=mesh_url, config=AgentConfig(retry_delays=(0.3, 0.6)))
    sender = Agent(uid("sender"), url=mesh_url)
    topic = uid("t")
    async with agent, sender:
        dead = DeadLetters(agent.connection)
        try:
            if path == "inbox":
                timed = Timed(agent, template=Template(sender=sender.identity))
            else:
                timed = Timed(agent, binding_keys=[topic])
            timed = await agent.add_behaviour(timed)
            timed.failing = True
            if path == "inbox":
                await sender.send(agent.identity, b"flaky")
            else:
                await sender.publish(b"flaky", topic)
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            assert len(timed.arrivals) == 3 and len(timed.failed_at) == 3
            # Each retry arrives no earlier than its delay after the failure before it.
            # The broker counts a TTL in whole milliseconds on its own clock: a copy may
            # arrive up to a millisecond or two before the full delay has passed on ours.
            assert timed.arrivals[1][0] - timed.failed_at[0] >= 0.3 - TTL_GRAIN
            assert timed.arrivals[2][0] - timed.failed_at[1] >= 0.6 - TTL_GRAIN
            first, second, third = (m for _, m in timed.arrivals)
            assert [m.body for m in (first, second, third)] == [b"flaky"] * 3
            assert RETRIES_HEADER not in first.headers
            assert second.headers[RETRIES_HEADER] == 1
            assert third.headers[RETRIES_HEADER] == 2
            assert second.headers[DELAY_HEADER] == delay_queue_name(300, "")
            assert third.headers[DELAY_HEADER] == delay_queue_name(600, "")
            assert third.sender == sender.identity
            # Dead-lettered after one failure per delay, naming where it first came from.
            assert letter.retries == 3
            assert letter.reason == "RuntimeError: cannot handle b'flaky'"
            assert DELAY_HEADER not in letter.headers
            if path == "inbox":
                assert letter.queue == agent.identity
                assert not letter.exchange and letter.routing_key == agent.identity
            else:
                assert letter.queue == timed.queue
                assert (letter.exchange, letter.routing_key) == (TOPIC_EXCHANGE, topic)
            await asyncio.sleep(0.3)
            assert len(timed.arrivals) == 3  # no fourth try
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_publish_with_a_delay_arrives_no_earlier(mesh_url):
    topic = uid("t")
    async with Agent(uid("sub"), url=mesh_url) as sub, Agent(uid("pub"), url=mesh_url) as pub:
        timed = await sub.add_behaviour(Timed(sub, binding_keys=[topic]))
        sent_at = time.monotonic()
        await pub.publish(b"later", topic, delay=0.5, headers={"x-mine": "kept"})
        await pub.publish(b"now", topic)
        assert await wait_until(lambda: len(timed.arrivals) == 2, timeout=15)
        (_, now), (later_at, later) = timed.arrivals
        assert (now.body, later.body) == (b"now", b"later")
        assert later_at - sent_at >= 0.5
        assert later.routing_key == topic and later.sender == pub.identity
        assert later.headers["x-mine"] == "kept"
        assert later.headers[DELAY_HEADER] == delay_queue_name(500, TOPIC_EXCHANGE)


async def test_send_with_a_delay_arrives_no_earlier(mesh_url):
    async with Agent(uid("rcv"), url=mesh_url) as rcv, Agent(uid("snd"), url=mesh_url) as snd:
        timed = await rcv.add_behaviour(Timed(rcv, template=Template(sender=snd.identity)))
        sent_at = time.monotonic()
        await snd.send(rcv.identity, b"later", delay=0.5)
        await snd.send(rcv.identity, b"now")
        assert await wait_until(lambda: len(timed.arrivals) == 2, timeout=15)
        (_, now), (later_at, later) = timed.arrivals
        assert (now.body, later.body) == (b"now", b"later")
        assert later_at - sent_at >= 0.5
        assert later.sender == snd.identity


async def test_a_delayed_message_survives_the_receivers_restart(mesh_url):
    identity, topic = uid("restart"), uid("t")

    class Receiver(Agent):
        async def setup(self) -> None:
            self.timed = await self.add_behaviour(Timed(self, binding_keys=[topic]))

    async with Agent(uid("pub"), url=mesh_url) as pub:
        receiver = Receiver(identity, url=mesh_url)
        async with receiver:
            queue = receiver.timed.queue
            await pub.publish(b"while you were out", topic, delay=0.5)
        # Stopped: the message waits in the broker, then in the behaviour's queue.
        await asyncio.sleep(1.0)
        ch = await pub.connection.channel(confirms=False)
        assert (await ch.queue_declare(queue, passive=True)).message_count == 1
        await ch.close()
        again = Receiver(identity, url=mesh_url)
        async with again:
            assert await wait_until(lambda: len(again.timed.arrivals) == 1, timeout=15)
            assert again.timed.arrivals[0][1].body == b"while you were out"


def test_delays_are_checked_when_the_config_is_made():
    assert AgentConfig(retry_delays=[0.5, 2]).retry_delays == (0.5, 2.0)
    assert AgentConfig().retry_delays == ()
    assert delay_ms(0.7) == 700 and delay_ms(0.0001) == 1 and delay_ms(0) == 0
    for bad in ((-1,), (float("nan"),), (1e12,)):
        with pytest.raises(ValueError):
            AgentConfig(retry_delays=bad)
    for bad_type in ("0.5", (True,), ("1",)):
        with pytest.raises(TypeError):
            AgentConfig(retry_delays=bad_type)
    assert AgentConfig.from_mapping({"RETRY_DELAYS": [1, 2]}).retry_delays == (1.0, 2.0)
    assert delay_queue_name(500, "") == "munggoggo.delay.500.direct"
    assert delay_queue_name(500, TOPIC_EXCHANGE) == "munggoggo.delay.500.topic"
    with pytest.raises(ValueError):
        delay_queue_name(500, "amq.direct")  # no delay queue dead-letters there


async def test_a_negative_publish_delay_is_refused(mesh_url):
    async with Agent(uid("pub"), url=mesh_url) as pub:
        with pytest.raises(ValueError):
            await pub.publish(b"x", "any", delay=-1)


async def test_a_delayed_retry_of_an_inbox_message_survives_a_stop(mesh_url):
    identity = uid("inbox-retry")
    config = AgentConfig(retry_delays=(0.6,))
    async with Agent(uid("snd"), url=mesh_url) as snd:

        class Receiver(Agent):
            async def setup(self) -> None:
                behaviour = Timed(self, template=Template(sender=snd.identity))
                self.timed = await self.add_behaviour(behaviour)

        first = Receiver(identity, url=mesh_url, config=config)
        async with first:
            first.timed.failing = True
            await snd.send(identity, b"retry me")
            assert await wait_until(lambda: len(first.timed.failed_at) == 1, timeout=15)
            await first.flush(timeout=10)  # the retry is in the broker now
        # Stopped with an empty inbox: it is kept, as the retry comes back there.
        await asyncio.sleep(1.0)
        ch = await snd.connection.channel(confirms=False)
        assert (await ch.queue_declare(identity, passive=True)).message_count >= 1
        await ch.close()
        again = Receiver(identity, url=mesh_url, config=config)
        async with again:
            assert await wait_until(lambda: len(again.timed.arrivals) == 1, timeout=15)
            retry = again.timed.arrivals[0][1]
            assert retry.body == b"retry me" and retry.headers[RETRIES_HEADER] == 1


async def test_durable_mode_agents_use_the_delay_queues_as_they_are(mesh_url):
    topic = uid("t")
    quorum = AgentConfig(queue_type="quorum", retry_delays=(0.3,))
    async with Agent(uid("q"), url=mesh_url, config=quorum) as agent:
        timed = await agent.add_behaviour(Timed(agent, binding_keys=[topic]))
        timed.failing = True
        sent_at = time.monotonic()
        # The 0.3 s retry queue is a classic one made by the other tests' agents (unless
        # this test ran first); only this test delays by 0.25 s: a quorum queue.
        await agent.publish(b"q", topic, delay=0.25)
        assert await wait_until(lambda: len(timed.arrivals) == 2, timeout=15)
        assert timed.arrivals[0][0] - sent_at >= 0.25
        assert timed.arrivals[1][0] - timed.failed_at[0] >= 0.3
        dead = DeadLetters(agent.connection)
        try:
            await dead_letters_of(dead, agent.identity, 1)
        finally:
            await dead.purge(all=True, agent=agent.identity)


def test_the_example_runs_on_memory():
    """examples/retries.py (the README's example) runs as documented: two retries after
    their pauses, then the delayed reminder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "retries.py"
    env = {**os.environ, "MUNGGOGGO_URL": "memory://example"}
    done = subprocess.run(
        [sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(maxsplit=1)[1] for line in lines if "order" in line] == [
        "order 42: try 1",
        "order 42: try 2",
        "order 42: try 3",
    ]
    assert any("reminder: invoice 42: try 1" in line for line in lines)


async def test_delayed_retries_carry_the_headers_byte_for_byte(mesh_url):
    """A delayed retry is a copy like an immediate one: each received header field, of any
    AMQP type, comes with it byte for byte (core/header_copy.py), through the delay queue's
    dead-lettering too; the dead letter after the last delay still has them all."""
    from test_header_copy import FIELDS, assert_carries, properties_with

    from munggoggo.header_copy import header_table_entries

    agent = Agent(uid("hdr-delay"), url=mesh_url, config=AgentConfig(retry_delays=(0.1, 0.2)))
    async with agent, Agent(uid("snd"), url=mesh_url) as snd:
        dead = DeadLetters(agent.connection)
        try:
            timed = await agent.add_behaviour(Timed(agent, template=Template(sender="mallet")))
            timed.failing = True
            ch = await snd.connection.channel()
            seq = ch.publish(b"typed", "", agent.identity, properties_with(FIELDS))
            await ch.wait_confirms(seq, timeout=15)
            await ch.close()
            (letter,) = await dead_letters_of(dead, agent.identity, 1)
            assert len(timed.arrivals) == 3
            for _, msg in timed.arrivals:
                assert_carries(header_table_entries(msg.delivery.properties_raw), FIELDS)
            assert {"when", "dec", "u16", "f32", "bad", "nest", "arr"} <= letter.headers.keys()
        finally:
            await dead.purge(all=True, agent=agent.identity)


async def test_a_delayed_send_reaches_an_agent_that_crashed_and_came_back(mesh_url):
    """The receiver's connection goes away without a clean stop (its inbox stays, as after
    a crash); the delay ends while it is down; the agent started again with the same
    identity gets the message."""
    identity = uid("crash")
    async with Agent(uid("snd"), url=mesh_url) as snd:

        class Receiver(Agent):
            async def setup(self) -> None:
                behaviour = Timed(self, template=Template(sender=snd.identity))
                self.timed = await self.add_behaviour(behaviour)

        first = Receiver(identity, url=mesh_url)
        await first.start()
        try:
            await snd.send(identity, b"after the crash", delay=0.5)
            await first.connection.close()  # no drain, no inbox clean-up: a crash
            await asyncio.sleep(1.0)
        finally:
            await first.stop()
        again = Receiver(identity, url=mesh_url)
        async with again:
            assert await wait_until(lambda: len(again.timed.arrivals) == 1, timeout=15)
            assert again.timed.arrivals[0][1].body == b"after the crash"
