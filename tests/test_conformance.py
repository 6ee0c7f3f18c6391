"""Runtime conformance: messaging between agents, the same tests on RabbitMQ and on the
in-process memory:// broker (the `mesh_url` fixture runs each test on both).

Routing with wildcards, a copy per subscribed behaviour, broadcast, redelivery of a failing
step and dead-lettering, undecodable bodies. What one runtime module does on both brokers
is in that module's test file, run the same way: tests/test_agent.py (identity, control
plane, publish sequence numbers), test_behaviour.py (kinds, restarts, the prefetch-bounded
mailbox), test_rpc.py (results and errors), test_template.py (direct messages to templates),
test_message.py (explicit acks). Broker-level scenarios that run on both brokers in one
test and compare the results (CC/BCC, priorities, the headers exchange, expiration,
user_id, property round trips) are in tests/test_differential.py.
"""

from __future__ import annotations

import asyncio

from broker_tools import wait_until
from mesh_tools import MessageCollector, Point, dead_letter_queue, purge_dead_letters, uid

from munggoggo import (
    Agent,
    AgentConfig,
    Behaviour,
    RestartPolicy,
    Template,
)
from munggoggo.agent import REASON_HEADER, RETRIES_HEADER


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
