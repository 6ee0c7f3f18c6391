"""Shutdown is not a failure, on RabbitMQ and on memory://.

A step the drain cuts short, and an RPC request whose method was refused because its agent
is stopping, hand their message back as it came: it is in the queue again, its retry count
unchanged, and never in the dead-letter queue. With `max_redeliveries=0` a single counted
retry would dead-letter it, so a rolling restart that counted would show at once.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import wait_until
from fault_tools import delete_queues
from mesh_tools import uid

from munggoggo import Agent, AgentConfig, Behaviour, expose
from munggoggo.amqp.errors import NotFound
from munggoggo.deadletters import DeadLetters
from munggoggo.rpc import RpcTimeout
from munggoggo.wire import RETRIES_HEADER

pytestmark = pytest.mark.timeout(60)

# Short drain, and no retry at all: one counted retry dead-letters the message.
CONFIG = AgentConfig(max_redeliveries=0, drain_timeout=0.3)


async def take_all(agent: Agent, queue: str) -> list:
    """Every message in `queue` (taken out of it); none when the queue does not exist."""
    ch = await agent.connection.channel(confirms=False)
    try:
        await ch.queue_declare(queue, passive=True)
    except NotFound:
        return []
    taken = []
    try:
        while (delivery := await ch.get(queue, no_ack=True)) is not None:
            taken.append(delivery)
    finally:
        await ch.close()
    return taken


class Stuck(Behaviour):
    """Takes a message, then waits for an event that never comes: the drain cuts it short."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.holding = False

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        self.holding = True
        await asyncio.Event().wait()


async def test_a_step_cut_short_by_the_drain_hands_its_message_back_uncounted(mesh_url):
    topic = uid("drain")
    observer = Agent(uid("observer"), url=mesh_url)
    agent = Agent(uid("stopping"), url=mesh_url, config=CONFIG)
    queue = f"{agent.identity}.Stuck"
    async with observer:
        dead = DeadLetters(observer.connection)
        try:
            await agent.start()
            stuck = await agent.add_behaviour(Stuck(agent, binding_keys=[topic]))
            await observer.publish(b"mid-step", topic, headers={RETRIES_HEADER: 0})
            await observer.flush(timeout=10)
            assert await wait_until(lambda: stuck.holding, timeout=10)
            await agent.stop()
            assert stuck.task is not None and stuck.task.done()

            (back,) = await take_all(observer, queue)
            assert back.body == b"mid-step"
            assert back.properties.headers[RETRIES_HEADER] == 0  # not counted as a retry
            assert await dead.list(10_000, agent=agent.identity) == []
        finally:
            await dead.purge(all=True, agent=agent.identity)
            await agent.stop()
            if not mesh_url.startswith("memory://"):
                await delete_queues(mesh_url, queue)


class Relay(Agent):
    """`relay()` calls a queue nobody answers: it is still waiting when the agent stops,
    and the stop refuses the call as unavailable."""

    silent = ""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relaying = False

    @expose
    async def relay(self) -> str:
        self.relaying = True
        return await self.call(self.silent, "anything", timeout=30)


async def test_an_rpc_refused_because_the_agent_stops_goes_back_to_its_inbox(mesh_url):
    caller = Agent(uid("caller"), url=mesh_url)
    agent = Relay(uid("relay"), url=mesh_url, config=CONFIG)
    agent.silent = silent = uid("silent")
    async with caller:
        dead = DeadLetters(caller.connection)
        try:
            ch = await caller.connection.channel(confirms=False)
            await ch.queue_declare(silent, durable=True, arguments={"x-expires": 60_000})
            await agent.start()
            call = asyncio.ensure_future(caller.call(agent.identity, "relay", timeout=3))
            assert await wait_until(lambda: agent.relaying, timeout=10)
            await agent.stop()

            (back,) = await take_all(caller, agent.identity)
            assert back.properties.correlation_id is not None
            assert back.properties.reply_to == caller.identity
            assert RETRIES_HEADER not in (back.properties.headers or {})
            assert await dead.list(10_000, agent=agent.identity) == []
            # The caller got no answer: the request waited for the agent's successor.
            (outcome,) = await asyncio.gather(call, return_exceptions=True)
            assert isinstance(outcome, RpcTimeout), outcome
        finally:
            await dead.purge(all=True, agent=agent.identity)
            await agent.stop()
            if not mesh_url.startswith("memory://"):
                await delete_queues(mesh_url, silent, agent.identity)
