"""`add_behaviour` on a running agent, on RabbitMQ and on memory://: a behaviour is added
only once its queue is declared and bound and its consumer set up. One that could not
start (its queue refused with `QueueMismatch`, or the add cancelled) leaves no registry
entry, no consumer and no task behind, so a corrected one under the same name works.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import wait_until
from fault_tools import delete_queues
from mesh_tools import BodyCollector, uid

from munggoggo import Agent, Behaviour
from munggoggo.durable import QueueMismatch

pytestmark = pytest.mark.timeout(60)

NAME = "Jobs"


async def consumer_count(agent: Agent, queue: str) -> int:
    ch = await agent.connection.channel(confirms=False)
    try:
        return (await ch.queue_declare(queue, passive=True)).consumer_count
    finally:
        await ch.close()


def assert_nothing_left(agent: Agent, behaviour: Behaviour) -> None:
    assert NAME not in agent.behaviours
    assert NAME not in agent.consumers()
    assert agent.describe()["behaviours"] == []
    assert behaviour.task is None or behaviour.task.done()
    assert not behaviour.is_running


async def assert_consumes(agent: Agent, behaviour: BodyCollector, topic: str) -> None:
    await agent.publish(b"after the retry", topic)
    assert await wait_until(lambda: b"after the retry" in behaviour.bodies, timeout=10)


async def test_a_refused_queue_leaves_nothing_and_a_corrected_retry_works(mesh_url):
    agent = Agent(uid("adder"), url=mesh_url)
    topic = f"jobs.{agent.identity}"
    mismatched = uid("test.mismatch")
    try:
        async with agent:
            ch = await agent.connection.channel(confirms=False)
            await ch.queue_declare(mismatched, durable=True, arguments={"x-max-length": 7})
            await ch.close()
            refused = BodyCollector(agent, name=NAME, binding_keys=[topic], queue=mismatched)
            with pytest.raises(QueueMismatch):
                await agent.add_behaviour(refused)
            assert_nothing_left(agent, refused)
            assert await consumer_count(agent, mismatched) == 0

            corrected = BodyCollector(agent, name=NAME, binding_keys=[topic])
            assert await agent.add_behaviour(corrected) is corrected
            assert agent.behaviour(NAME) is corrected
            assert corrected.is_running
            assert NAME in agent.consumers()
            await assert_consumes(agent, corrected, topic)
    finally:
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, mismatched, f"{agent.identity}.{NAME}")


class SlowSetup(BodyCollector):
    """Its setup() waits until the test lets it go (or the add is cancelled)."""

    release: asyncio.Event

    cancelled = False

    async def setup(self) -> None:
        await super().setup()
        self.entered = True
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_a_cancelled_add_leaves_nothing_and_the_name_is_free_again(mesh_url):
    agent = Agent(uid("adder"), url=mesh_url)
    topic = f"jobs.{agent.identity}"
    queue = f"{agent.identity}.{NAME}"
    try:
        async with agent:
            slow = SlowSetup(agent, name=NAME, binding_keys=[topic])
            slow.release = asyncio.Event()
            adding = asyncio.ensure_future(agent.add_behaviour(slow))
            assert await wait_until(lambda: getattr(slow, "entered", None) is not None, timeout=10)
            assert await consumer_count(agent, queue) == 1  # its consumer was up
            adding.cancel()
            with pytest.raises(asyncio.CancelledError):
                await adding
            assert_nothing_left(agent, slow)
            assert slow.cancelled  # its setup() was part of the add
            assert await consumer_count(agent, queue) == 0

            again = BodyCollector(agent, name=NAME, binding_keys=[topic])
            await agent.add_behaviour(again)
            assert agent.behaviour(NAME) is again
            await assert_consumes(agent, again, topic)
    finally:
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue)


async def test_a_name_being_added_is_taken(mesh_url):
    agent = Agent(uid("adder"), url=mesh_url)
    topic = f"jobs.{agent.identity}"
    try:
        async with agent:
            slow = SlowSetup(agent, name=NAME, binding_keys=[topic])
            slow.release = asyncio.Event()
            adding = asyncio.ensure_future(agent.add_behaviour(slow))
            assert await wait_until(lambda: getattr(slow, "entered", None) is not None, timeout=10)
            with pytest.raises(ValueError, match="already has a behaviour named 'Jobs'"):
                await agent.add_behaviour(BodyCollector(agent, name=NAME, binding_keys=[topic]))
            slow.release.set()
            assert await adding is slow
            assert agent.behaviour(NAME) is slow and slow.is_running
    finally:
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, f"{agent.identity}.{NAME}")
