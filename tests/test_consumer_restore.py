"""A queue deleted under a running agent: its consumer comes back.

The broker cancels the consumer of a deleted queue (Basic.Cancel). The agent re-declares
the queue (with its bindings) and consumes again, logs it, counts it in
`munggoggo_consumer_cancels`, and is not ready until then. For the inbox, the identity lock
goes with the queue: if another process took the identity meanwhile, this agent stops,
loudly, instead of sharing the identity.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import eventually
from mesh_tools import BodyCollector, uid

from munggoggo import Agent, Template
from munggoggo.health import agent_problems
from munggoggo.metrics import COLLECTOR
from munggoggo.runner import AgentStoppedByItself, serve
from munggoggo.testing import FaultProxy
from munggoggo.url import parse_url

WAIT = 20.0


def cancels_metric(identity: str, behaviour: str) -> float:
    for family in COLLECTOR.collect():
        for sample in family.samples:
            if (
                sample.name == "munggoggo_consumer_cancels_total"
                and sample.labels.get("agent") == identity
                and sample.labels.get("behaviour") == behaviour
            ):
                return sample.value
    raise AssertionError("munggoggo_consumer_cancels_total has no series for it")


async def delete_queue(agent: Agent, queue: str) -> None:
    """Delete `queue` from a channel of `agent`'s connection, as an operator would."""
    ch = await agent.connection.channel()
    await ch.queue_delete(queue)
    await ch.close()


async def test_deleted_behaviour_queue_is_declared_bound_and_consumed_again(mesh_url):
    topic = uid("cancelled.topic")
    agent = Agent(uid("cancel-beh"), url=mesh_url)
    publisher = Agent(uid("cancel-pub"), url=mesh_url)
    async with agent, publisher:
        collector = await agent.add_behaviour(BodyCollector(agent, binding_keys=[topic]))
        await publisher.publish(b"before", topic)
        await eventually(lambda: collector.bodies == [b"before"], WAIT)
        assert cancels_metric(agent.identity, collector.short_name) == 0

        await delete_queue(publisher, collector.queue)
        await eventually(
            lambda: (
                collector.short_name in agent.consumers()
                and not agent.restoring_consumers
                and cancels_metric(agent.identity, collector.short_name) == 1
            ),
            WAIT,
        )
        assert collector.state == "running"
        assert agent_problems(agent) == []
        # Declared and bound again: what is published now arrives.
        await publisher.publish(b"after", topic)
        await eventually(lambda: collector.bodies == [b"before", b"after"], WAIT)


async def test_deleted_inbox_is_declared_and_consumed_again(mesh_url):
    agent = Agent(uid("cancel-inbox"), url=mesh_url)
    caller = Agent(uid("cancel-caller"), url=mesh_url)
    async with agent, caller:
        direct = await agent.add_behaviour(BodyCollector(agent, template=Template()))
        assert await caller.call(agent.identity, "ping", timeout=WAIT) == "pong"

        await delete_queue(caller, agent.identity)
        await eventually(
            lambda: (
                "" in agent.consumers()
                and not agent.restoring_consumers
                and cancels_metric(agent.identity, "") == 1
            ),
            WAIT,
        )
        assert agent.state == "running" and agent_problems(agent) == []
        assert await caller.call(agent.identity, "ping", timeout=WAIT) == "pong"
        await caller.send(agent.identity, b"direct")
        await eventually(lambda: direct.bodies == [b"direct"], WAIT)


async def test_identity_taken_while_the_inbox_was_gone_stops_the_agent(broker_url):
    """A's inbox is deleted while A cannot hear it (its network frozen); B starts with the
    same identity; when A hears of the cancel, it finds B consuming and stops, and the
    `serve()` hosting it ends with AgentStoppedByItself (a Worker process exits 1)."""
    upstream = parse_url(broker_url)
    identity = uid("cancel-taken")
    async with FaultProxy(upstream=(upstream.host, upstream.port)) as proxy:
        proxied = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        first = Agent(identity, url=proxied)
        second = Agent(identity, url=broker_url)
        caller = Agent(uid("cancel-asker"), url=broker_url)
        serving = asyncio.ensure_future(serve(first, stop=asyncio.Event()))
        async with caller:
            await eventually(lambda: first.state == "running", WAIT)
            proxy.freeze()
            try:
                await delete_queue(caller, identity)
                await second.start()  # the identity is free now: the queue is gone
            finally:
                proxy.thaw()
            try:
                with pytest.raises(AgentStoppedByItself) as info:
                    await asyncio.wait_for(serving, WAIT)
                assert identity in str(info.value)
                assert first.state == "stopped"
                assert first.stop_reason is not None and identity in first.stop_reason
                # The second one keeps the identity, and answers.
                assert second.state == "running"
                assert await caller.call(identity, "ping", timeout=WAIT) == "pong"
            finally:
                await second.stop()


@pytest.mark.parametrize("kind", ["behaviour", "inbox"])
async def test_a_cancelled_consumer_is_not_ready_until_restored(mesh_url, kind):
    """The readiness report names a consumer the broker cancelled while it is restored."""
    agent = Agent(uid("cancel-ready"), url=mesh_url)
    async with agent:
        collector = await agent.add_behaviour(BodyCollector(agent, binding_keys=[uid("t")]))
        queue = collector.queue if kind == "behaviour" else agent.identity
        ch = await agent.connection.channel()
        await ch.queue_delete(queue)
        # From the cancel to the restored consumer, each loop cycle looks at readiness.
        problems: list[str] = []
        for _ in range(20_000):
            problems = agent_problems(agent)
            if problems:
                break
            await asyncio.sleep(0)
        await ch.close()
        assert problems, "never reported not ready"
        await eventually(lambda: agent_problems(agent) == [], WAIT)
