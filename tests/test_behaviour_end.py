"""A behaviour that ends by itself, and an agent whose start fails half way, on RabbitMQ
and on memory://.

A behaviour that ends without being stopped (its setup raised, its steps reached
`restart_policy.max_failures`, or a one-shot finished) stops consuming and hands back what
its mailbox holds at once: a competing consumer on a shared queue gets every message, and
readiness names a failed behaviour (a finished one-shot is not a failure). An agent whose
start() raises leaves no behaviour running and no connection open.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from broker_tools import wait_until
from fault_tools import delete_queues
from mesh_tools import uid

from munggoggo import Agent, AgentConfig, Behaviour, OneShotBehaviour, RestartPolicy
from munggoggo.durable import QueueMismatch
from munggoggo.health import HealthServer

pytestmark = pytest.mark.timeout(90)

MESSAGES = 100


class Collector(Behaviour):
    """The healthy competing consumer: records the numbers it gets."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.numbers: list[int] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is not None:
            self.numbers.append(msg.decode(int))


class SetupFails(Behaviour):
    async def setup(self) -> None:
        raise RuntimeError("no database")


class StepsFail(Behaviour):
    """Every step fails before it receives anything, so it never holds a message."""

    restart_policy = RestartPolicy(initial=0.01, maximum=0.02, max_failures=2)

    async def run(self) -> None:
        raise RuntimeError("broken step")


class Once(OneShotBehaviour):
    async def run(self) -> None:
        pass


ENDINGS = {
    "setup fails": (SetupFails, "failed"),
    "max_failures": (StepsFail, "failed"),
    "one-shot done": (Once, "done"),
}


async def consumer_count(agent: Agent, queue: str) -> int:
    ch = await agent.connection.channel(confirms=False)
    try:
        return (await ch.queue_declare(queue, passive=True)).consumer_count
    finally:
        await ch.close()


async def consumers_become(agent: Agent, queue: str, count: int, timeout: float = 10) -> bool:
    """Whether the queue's consumer count reaches `count` within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await consumer_count(agent, queue) != count:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def readyz(port: int) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{port}/readyz")


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_a_behaviour_that_ends_gives_its_shared_queue_to_the_others(mesh_url, ending):
    kind, final_state = ENDINGS[ending]
    rid = uuid.uuid4().hex[:8]
    topic, queue = f"end.{rid}", f"test.end.{rid}"
    config = AgentConfig(prefetch=10)
    broken_agent = Agent(uid("broken"), url=mesh_url, config=config)
    healthy_agent = Agent(uid("healthy"), url=mesh_url, config=config)
    health = HealthServer(0, addr="127.0.0.1")
    try:
        await broken_agent.start()
        await healthy_agent.start()
        broken = await broken_agent.add_behaviour(
            kind(broken_agent, binding_keys=[topic], queue=queue)
        )
        assert await wait_until(lambda: broken.state == final_state, timeout=10), broken.state
        healthy = await healthy_agent.add_behaviour(
            Collector(healthy_agent, binding_keys=[topic], queue=queue)
        )
        for i in range(MESSAGES):
            await healthy_agent.publish(i, topic)
        await healthy_agent.flush(timeout=30)
        assert await wait_until(lambda: len(healthy.numbers) >= MESSAGES, timeout=20), len(
            healthy.numbers
        )
        assert sorted(healthy.numbers) == list(range(MESSAGES))
        assert broken.mailbox_size == 0
        # The ended behaviour's consumer is gone: only the healthy one consumes the queue.
        assert broken.short_name not in broken_agent.consumers()
        assert await consumers_become(healthy_agent, queue, 1), "the ended one still consumes"

        await health.start([broken_agent])
        response = await readyz(health.port)
        if final_state == "failed":
            assert response.status_code == 503
            problems = response.json()["agents"][broken_agent.identity]
            assert len(problems) == 1 and f"behaviour {broken.short_name} failed" in problems[0]
        else:  # a one-shot that is done is not a failure
            assert response.status_code == 200, response.text
    finally:
        health.close()
        await broken_agent.stop()
        await healthy_agent.stop()
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue)


class HoldsThenFails(Behaviour):
    """Takes one message, then fails on its next step for good (max_failures=1): whatever
    reached its mailbox meanwhile must go back to the shared queue."""

    restart_policy = RestartPolicy(initial=0.01, maximum=0.02, max_failures=1)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.go = asyncio.Event()

    async def run(self) -> None:
        await self.go.wait()
        raise RuntimeError("gave up")


async def test_a_failed_behaviour_hands_back_its_mailbox_at_once(mesh_url):
    rid = uuid.uuid4().hex[:8]
    topic, queue = f"end.{rid}", f"test.end.{rid}"
    config = AgentConfig(prefetch=10)
    broken_agent = Agent(uid("broken"), url=mesh_url, config=config)
    healthy_agent = Agent(uid("healthy"), url=mesh_url, config=config)
    try:
        await broken_agent.start()
        await healthy_agent.start()
        broken = await broken_agent.add_behaviour(
            HoldsThenFails(broken_agent, binding_keys=[topic], queue=queue)
        )
        for i in range(20):
            await healthy_agent.publish(i, topic)
        await healthy_agent.flush(timeout=30)
        assert await wait_until(lambda: broken.mailbox_size > 0, timeout=10)
        healthy = await healthy_agent.add_behaviour(
            Collector(healthy_agent, binding_keys=[topic], queue=queue)
        )
        broken.go.set()
        assert await wait_until(lambda: broken.state == "failed", timeout=10)
        assert await wait_until(lambda: len(healthy.numbers) >= 20, timeout=20), len(
            healthy.numbers
        )
        assert sorted(healthy.numbers) == list(range(20))
        assert broken.mailbox_size == 0
        assert broken.short_name not in broken_agent.consumers()

        # Stopping it afterwards (the control plane's stop_behaviour) is harmless.
        described = await broken_agent.stop_behaviour(broken.short_name)
        assert described["state"] == "failed" and described["mailbox"] == 0
    finally:
        await broken_agent.stop()
        await healthy_agent.stop()
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue)


class Ticker(Behaviour):
    async def run(self) -> None:
        await asyncio.sleep(0.01)


class SetupAddsThenRaises(Agent):
    async def setup(self) -> None:
        self.good = await self.add_behaviour(Ticker(self, binding_keys=[f"t.{self.identity}"]))
        raise RuntimeError("setup went wrong")


class SecondQueueMismatches(Agent):
    """The second behaviour's shared queue exists with other arguments: QueueMismatch."""

    mismatched_queue = ""

    async def setup(self) -> None:
        self.good = await self.add_behaviour(Ticker(self, binding_keys=[f"t.{self.identity}"]))
        await self.add_behaviour(
            Ticker(
                self,
                name="Mismatched",
                binding_keys=[f"m.{self.identity}"],
                queue=self.mismatched_queue,
            )
        )


async def test_start_that_raises_in_setup_leaves_nothing_running(mesh_url):
    agent = SetupAddsThenRaises(uid("half"), url=mesh_url)
    with pytest.raises(RuntimeError, match="setup went wrong"):
        await agent.start()
    assert agent.state == "stopped"
    assert not agent.good.is_running
    assert agent.good.task is None or agent.good.task.done()
    assert not agent.connection.is_open


async def test_start_that_fails_on_the_second_behaviour_stops_the_first(mesh_url):
    rid = uuid.uuid4().hex[:8]
    queue = f"test.mismatch.{rid}"
    owner = Agent(uid("owner"), url=mesh_url)
    agent = SecondQueueMismatches(uid("half"), url=mesh_url)
    agent.mismatched_queue = queue
    try:
        async with owner:
            ch = await owner.connection.channel(confirms=False)
            await ch.queue_declare(queue, durable=True, arguments={"x-max-length": 7})
            with pytest.raises(QueueMismatch):
                await agent.start()
            assert agent.state == "stopped"
            good = agent.good
            assert good.state != "running"
            assert good.task is not None and good.task.done()
            assert not agent.connection.is_open
            assert good.short_name not in agent.consumers()
            # Its queue has no consumer left behind.
            assert await consumer_count(owner, good.queue) == 0
    finally:
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue, f"{agent.identity}.Ticker")
