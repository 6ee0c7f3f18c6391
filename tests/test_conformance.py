"""Runtime conformance: the same tests on RabbitMQ and on the in-process memory:// broker.

Routing with wildcards, fanout, direct messages with templates, RPC, redelivery,
dead-lettering, prefetch-bounded mailboxes, typed bodies, behaviour kinds and restarts.
Broker-level scenarios that run on both brokers in one test and compare the results (CC/BCC,
priorities, the headers exchange, expiration, user_id, property round trips) are in
tests/test_differential.py.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from broker_tools import wait_until
from mesh_tools import Calc, MessageCollector, Point, uid

from munggoggo import (
    Agent,
    AgentConfig,
    Behaviour,
    OneShotBehaviour,
    PeriodicBehaviour,
    RestartPolicy,
    RpcError,
    RpcTimeout,
    Template,
)
from munggoggo.agent import DEAD_LETTER_EXCHANGE, REASON_HEADER, RETRIES_HEADER
from munggoggo.deadletters import DeadLetters


async def purge_dead_letters(agent: Agent, of: str) -> None:
    """Take a test's dead letters out of the shared munggoggo.dead-letters again (they are
    routed there together with the test's private queue, so they are there by now)."""
    assert (await DeadLetters(agent.connection).purge(all=True, agent=of)).purged >= 1


async def dead_letter_queue(agent: Agent, source_queue: str) -> list:
    """A private queue on munggoggo.dlx that sees what gets dead-lettered from `source_queue`."""
    ch = await agent.connection.channel()
    q = await ch.queue_declare("", exclusive=True)
    await ch.queue_bind(q.queue, DEAD_LETTER_EXCHANGE, source_queue)
    got: list = []

    def on_batch(batch):
        got.extend(batch)
        ch.ack(batch[-1].delivery_tag, multiple=True)

    await ch.consume(q.queue, on_batch)
    return got


async def test_topic_routing_with_wildcards(mesh_url):
    topic = uid("t")
    sub = Agent(uid("sub"), url=mesh_url)
    pub = Agent(uid("pub"), url=mesh_url)
    async with sub, pub:
        b = await sub.add_behaviour(
            MessageCollector(sub, binding_keys=[f"{topic}.*.temp", f"{topic}.alarm.#"])
        )
        for key in ["a.temp", "a.b.temp", "alarm", "alarm.x.y", "other", "temp"]:
            await pub.publish(key, f"{topic}.{key}")
        await pub.flush(timeout=5)
        assert await wait_until(lambda: len(b.got) == 3)
        await asyncio.sleep(0.2)
        assert sorted(m.body for m in b.got) == [b"a.temp", b"alarm", b"alarm.x.y"]
        m = b.got[0]
        assert m.sender == pub.identity
        assert m.kind == "message"
        assert m.content_type == "text/plain"
        assert m.timestamp and m.timestamp > 1_600_000_000


async def test_every_subscribed_behaviour_gets_its_own_copy(mesh_url):
    topic = uid("t")
    a = Agent(uid("a"), url=mesh_url)
    async with a:
        one = await a.add_behaviour(MessageCollector(a, binding_keys=[topic], name="one"))
        two = await a.add_behaviour(MessageCollector(a, binding_keys=[topic], name="two"))
        await a.publish(b"x", topic)
        assert await wait_until(lambda: len(one.got) == 1 and len(two.got) == 1)
        assert one.queue == f"{a.identity}.one" and two.queue == f"{a.identity}.two"


async def test_broadcast_reaches_every_agent(mesh_url):
    agents = [Agent(uid("b"), url=mesh_url) for _ in range(3)]
    for ag in agents:
        await ag.start()
    try:
        collectors = [
            await ag.add_behaviour(
                MessageCollector(ag, template=Template(kind="message", headers={"hello": "all"}))
            )
            for ag in agents
        ]
        await agents[0].broadcast({"n": 1}, headers={"hello": "all"})
        assert await wait_until(lambda: all(len(c.got) == 1 for c in collectors))
        assert all(c.got[0].decode() == {"n": 1} for c in collectors)
    finally:
        for ag in agents:
            await ag.stop()


async def test_direct_messages_go_to_the_matching_template(mesh_url):
    receiver = Agent(uid("rx"), url=mesh_url)
    sender = Agent(uid("tx"), url=mesh_url)
    async with receiver, sender:
        points = await receiver.add_behaviour(
            MessageCollector(receiver, template=Template(body_type=Point), name="points")
        )
        urgent = await receiver.add_behaviour(
            MessageCollector(receiver, template=Template(headers={"prio": "high"}), name="urgent")
        )
        await sender.send(receiver.identity, Point(1, 2))
        await sender.send(receiver.identity, "wake up", headers={"prio": "high"})
        assert await wait_until(lambda: len(points.got) == 1 and len(urgent.got) == 1)
        assert points.got[0].decode(Point) == Point(1, 2)
        assert points.got[0].content_type == "application/json"
        assert urgent.got[0].body == b"wake up"


async def test_direct_message_nobody_accepts_is_dead_lettered_with_a_reason(mesh_url):
    receiver = Agent(uid("rx"), url=mesh_url)
    sender = Agent(uid("tx"), url=mesh_url)
    async with receiver, sender:
        dead = await dead_letter_queue(sender, receiver.identity)
        await receiver.add_behaviour(
            MessageCollector(receiver, template=Template(sender="someone-else"))
        )
        await sender.send(receiver.identity, "unwanted")
        assert await wait_until(lambda: len(dead) == 1)
        headers = dead[0].properties.headers
        assert "no behaviour template matches" in headers[REASON_HEADER]
        assert headers["x-munggoggo-agent"] == receiver.identity
        assert dead[0].body == b"unwanted"
        assert receiver.state == "running"
        await purge_dead_letters(sender, receiver.identity)


async def test_rpc_results_and_errors(mesh_url):
    calc = Calc(uid("calc"), url=mesh_url)
    caller = Agent(uid("caller"), url=mesh_url)
    async with calc, caller:
        assert await caller.call(calc.identity, "mul", 6, 7) == 42
        assert await caller.call(calc.identity, "mul", a=3, b=5) == 15
        assert await caller.call(calc.identity, "norm", {"x": 3, "y": 4}) == 25
        # Param names that are also call()'s own keywords travel as data with call_params.
        named = {"target": "t", "method": "m", "timeout": 3}
        assert await caller.call_params(calc.identity, "schedule", named) == "t.m in 3s"
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "mul", "six", 7)
        assert info.value.code == -32602
        # Our prefix names the method; msgspec's account of the mismatch follows it.
        prefix = "invalid params for mul: "
        assert info.value.message.startswith(prefix) and info.value.message[len(prefix) :].strip()
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "not_exposed")
        assert info.value.code == -32601
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "_exposed")
        assert info.value.code == -32601
        with pytest.raises(RpcError) as info:
            await caller.call(calc.identity, "div", 1, 0)
        assert info.value.code == -32000 and "ZeroDivisionError" in info.value.message
        # The callee survived its exception.
        assert await caller.call(calc.identity, "div", 1, 4) == 0.25
        with pytest.raises(RpcError) as info:
            await caller.call(uid("nobody"), "mul", 1, 2)
        assert info.value.code == -32001 and "unknown agent" in info.value.message
        with pytest.raises(RpcTimeout):
            await caller.call(calc.identity, "slow", 2.0, timeout=0.2)
        # A late reply to a timed-out call is dropped, the next call is unaffected.
        assert await caller.call(calc.identity, "mul", 2, 2) == 4


async def test_an_agent_can_call_its_own_methods(mesh_url):
    calc = Calc(uid("calc"), url=mesh_url)
    async with calc:
        # The request lands in the caller's own inbox: it must be served, not taken for
        # the reply (it carries the caller's call id).
        assert await calc.call(calc.identity, "mul", 6, 7) == 42
        with pytest.raises(RpcError) as info:
            await calc.call(calc.identity, "not_exposed")
        assert info.value.code == -32601
        assert calc.identity not in {p["identity"] for p in await calc.peers(timeout=0.3)}


async def test_many_concurrent_rpc_calls(mesh_url):
    calc = Calc(uid("calc"), url=mesh_url)
    caller = Agent(uid("caller"), url=mesh_url)
    async with calc, caller:
        results = await asyncio.gather(
            *(caller.call(calc.identity, "mul", i, 2) for i in range(300))
        )
        assert results == [i * 2 for i in range(300)]


async def test_failing_step_redelivers_then_dead_letters(mesh_url):
    topic = uid("t")

    class Flaky(Behaviour):
        restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

        async def setup(self) -> None:
            self.attempts = 0

        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is not None:
                self.attempts += 1
                raise RuntimeError(f"cannot handle {msg.body!r}")

    agent = Agent(uid("flaky"), url=mesh_url, config=AgentConfig(max_redeliveries=2))
    pub = Agent(uid("pub"), url=mesh_url)
    async with agent, pub:
        b = await agent.add_behaviour(Flaky(agent, binding_keys=[topic]))
        dead = await dead_letter_queue(pub, b.queue)
        await pub.publish(b"poison", topic)
        assert await wait_until(lambda: len(dead) == 1, timeout=10)
        assert b.attempts == 3  # the first try and two redeliveries
        headers = dead[0].properties.headers
        assert headers[REASON_HEADER] == "RuntimeError: cannot handle b'poison'"
        assert headers[RETRIES_HEADER] == 3
        assert headers["x-munggoggo-behaviour"] == "Flaky"
        assert agent.state == "running" and b.state == "running"
        await purge_dead_letters(pub, agent.identity)


async def test_undecodable_body_is_dead_lettered_at_once(mesh_url):
    topic = uid("t")

    class Strict(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is not None:
                msg.decode(Point)

    agent = Agent(uid("strict"), url=mesh_url)
    async with agent:
        b = await agent.add_behaviour(Strict(agent, binding_keys=[topic]))
        dead = await dead_letter_queue(agent, b.queue)
        await agent.publish({"x": "not a number"}, topic)
        assert await wait_until(lambda: len(dead) == 1)
        assert "DecodeError" in dead[0].properties.headers[REASON_HEADER]
        assert dead[0].properties.headers[RETRIES_HEADER] == 1
        await purge_dead_letters(agent, agent.identity)


async def test_mailbox_is_bounded_by_prefetch(mesh_url):
    topic = uid("t")

    class Stuck(Behaviour):
        async def setup(self) -> None:
            self.release = asyncio.Event()
            self.got = 0

        async def run(self) -> None:
            msg = await self.receive(timeout=0.1)
            if msg is not None:
                self.got += 1
                await self.release.wait()

    agent = Agent(uid("stuck"), url=mesh_url)
    async with agent:
        b = await agent.add_behaviour(Stuck(agent, binding_keys=[topic], prefetch=5))
        for i in range(50):
            await agent.publish(str(i), topic)
        await agent.flush(timeout=5)
        assert await wait_until(lambda: b.got == 1 and b.mailbox_size == 4)
        await asyncio.sleep(0.3)
        assert b.mailbox_size == 4  # 5 unacked in all: one in hand, four waiting
        b.release.set()
        assert await wait_until(lambda: b.got == 50, timeout=10)


async def test_explicit_ack_and_at_least_once_settling(mesh_url):
    topic = uid("t")

    class Acker(Behaviour):
        async def setup(self) -> None:
            self.seen: list = []

        async def run(self) -> None:
            msg = await self.receive(timeout=0.1)
            if msg is not None:
                assert msg.ack() is True
                assert msg.ack() is False  # settling twice is a no-op
                self.seen.append(msg)

    agent = Agent(uid("acker"), url=mesh_url)
    async with agent:
        b = await agent.add_behaviour(Acker(agent, binding_keys=[topic]))
        for i in range(10):
            await agent.publish(str(i), topic)
        assert await wait_until(lambda: len(b.seen) == 10)
        assert all(m.settled for m in b.seen)
        ch = await agent.connection.channel()
        assert await wait_until(lambda: True)
        ok = await ch.queue_declare(b.queue, passive=True)
        assert ok.message_count == 0


async def test_behaviour_kinds_and_restart(mesh_url):
    class Once(OneShotBehaviour):
        runs = 0

        async def run(self) -> None:
            type(self).runs += 1

    class Tick(PeriodicBehaviour):
        async def setup(self) -> None:
            self.ticks = 0

        async def run(self) -> None:
            self.ticks += 1

    class Crashy(Behaviour):
        restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

        async def setup(self) -> None:
            self.calls = 0

        async def run(self) -> None:
            self.calls += 1
            await asyncio.sleep(0.01)
            if self.calls < 3:
                raise ValueError("boom")

    agent = Agent(uid("kinds"), url=mesh_url)
    async with agent:
        once = await agent.add_behaviour(Once(agent))
        tick = await agent.add_behaviour(Tick(agent, period=0.05))
        crashy = await agent.add_behaviour(Crashy(agent))
        assert await wait_until(
            lambda: once.state == "done" and tick.ticks >= 3 and crashy.calls >= 4
        )
        assert Once.runs == 1
        assert crashy.state == "running" and crashy.last_error == "ValueError: boom"
        assert crashy.failures == 0  # reset by the later successful steps


async def test_control_plane_over_rpc(mesh_url):
    agent = Agent(uid("ctl-target"), url=mesh_url)
    ctl = Agent(uid("ctl"), url=mesh_url)
    async with agent, ctl:
        topic = uid("t")
        worker = await agent.add_behaviour(
            MessageCollector(agent, binding_keys=[topic], name="worker")
        )
        peers = await ctl.peers(timeout=0.5)
        assert agent.identity in [p["identity"] for p in peers]
        assert ctl.identity not in [p["identity"] for p in peers]
        status = await ctl.call(agent.identity, "status")
        assert status["identity"] == agent.identity and status["connected"] is True
        stopped = await ctl.call(agent.identity, "stop_behaviour", "worker")
        assert stopped["state"] == "stopped"
        # A stopped behaviour does not consume: new messages wait ready in its queue.
        for i in range(3):
            await ctl.publish(str(i), topic)
        await ctl.flush(timeout=5)
        probe = await ctl.connection.channel()

        async def ready() -> int:
            return (await probe.queue_declare(worker.queue, passive=True)).message_count

        for _ in range(100):
            if await ready() == 3:
                break
            await asyncio.sleep(0.02)
        assert await ready() == 3 and worker.got == []
        started = await ctl.call(agent.identity, "start_behaviour", "worker")
        assert started["state"] == "running"
        assert await wait_until(lambda: sorted(m.body for m in worker.got) == [b"0", b"1", b"2"])
        with pytest.raises(RpcError) as info:
            await ctl.call(agent.identity, "stop_behaviour", "nope")
        assert "no behaviour 'nope'" in info.value.message
        traces = await ctl.call(agent.identity, "traces", 50)
        assert any(t["kind"] == "rpc" and t["direction"] == "out" for t in traces)


async def test_second_agent_with_the_same_identity_fails_clearly(mesh_url):
    from munggoggo import IdentityInUse

    name = uid("twin")
    first = Agent(name, url=mesh_url)
    async with first:
        with pytest.raises(IdentityInUse) as info:
            await Agent(name, url=mesh_url).start()
        assert name in str(info.value)
    # Once the first is gone the identity is free again.
    async with Agent(name, url=mesh_url) as again:
        assert again.state == "running"


async def test_publishes_return_sequence_numbers_the_failure_hook_reports(mesh_url):
    agent = Agent(uid("seq"), url=mesh_url)
    async with agent:
        nobody = f"seq.{uuid.uuid4().hex[:6]}"  # no subscriber: nothing to clean up
        first = await agent.publish(b"a", nobody)
        second = await agent.broadcast(b"b")  # every agent acks a broadcast it has no use for
        assert second == first + 1
        reported: list = []
        agent.on_publish_failure = reported.extend
        failure = (second + 1, RuntimeError("never confirmed"))
        agent._pub.on_publish_failure([failure])  # what the channel calls after a loss
        assert reported == [failure]
