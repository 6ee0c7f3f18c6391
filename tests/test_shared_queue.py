"""Competing consumers: behaviours of several agents sharing one queue (`Behaviour(queue=)`),
on RabbitMQ and on memory://, in both queue modes.

Each message published on the work topic is handled by exactly one of the agents, all of
them get some (the broker round-robins a queue's consumers), a retry goes back to the shared
queue, and the arguments are checked before anything is declared.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from broker_tools import wait_until
from fault_tools import delete_queues

from munggoggo import Agent, AgentConfig, Behaviour


class Worker(Behaviour):
    """Records the numbers it handles; the first try of each number in `fail_once` (shared by
    the workers) fails, whichever worker makes it."""

    fail_once: set[int] = set()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.done: list[int] = []
        self.failed: list[int] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is None:
            return
        n = msg.decode(int)
        if n in self.fail_once:
            self.fail_once.discard(n)
            self.failed.append(n)
            raise RuntimeError(f"first try of {n} fails")
        self.done.append(n)
        await asyncio.sleep(0)  # let the other consumers have a turn


@pytest.mark.parametrize("queue_type", ["transient", "quorum"])
async def test_each_message_is_handled_by_one_of_the_agents(mesh_url, queue_type):
    rid = uuid.uuid4().hex[:8]
    topic, queue = f"work.{rid}", f"test.shared.{rid}"
    config = AgentConfig(queue_type=queue_type, prefetch=10)
    agents = [Agent(f"worker-{i}-{rid}", url=mesh_url, config=config) for i in range(3)]
    producer = Agent(f"producer-{rid}", url=mesh_url, config=config)
    n = 600
    try:
        for agent in agents:
            await agent.start()
        workers = [
            await agent.add_behaviour(Worker(agent, binding_keys=[topic], queue=queue))
            for agent in agents
        ]
        assert {w.queue for w in workers} == {queue}
        Worker.fail_once = set(range(0, n, 50))  # retried through the shared queue
        async with producer:
            for i in range(n):
                await producer.publish(i, topic)
            await producer.flush(timeout=30)

        def handled() -> list[int]:
            return [x for w in workers for x in w.done]

        assert await wait_until(lambda: len(handled()) >= n, timeout=30)
        await asyncio.sleep(0.3)  # a duplicate would show up now
        counts = Counter(handled())
        assert sorted(counts) == list(range(n)) and max(counts.values()) == 1
        assert all(w.done for w in workers), [len(w.done) for w in workers]
        assert sorted(x for w in workers for x in w.failed) == list(range(0, n, 50))
    finally:
        for agent in agents:
            await agent.stop()
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue)


def test_a_shared_queue_needs_binding_keys_and_a_valid_name():
    agent = Agent("shared-args")
    with pytest.raises(ValueError, match="give binding_keys"):
        Worker(agent, queue="work")
    for bad in ("", "amq.work", "x" * 256):
        with pytest.raises(ValueError, match="invalid queue name"):
            Worker(agent, binding_keys=["work"], queue=bad)
