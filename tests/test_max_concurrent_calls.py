"""`AgentConfig(max_concurrent_calls=N)`, on RabbitMQ and memory:// (ag2ai/faststream#2173,
#1099): at most N exposed calls of an agent run at once, the others wait (unacked, in the
order they came) and all of them complete; without it every call runs at once. Control
requests (`peers()`) are not held up by busy slots.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import wait_until
from fault_tools import delete_queues
from mesh_tools import delivered, uid

from munggoggo import Agent, AgentConfig, Behaviour, Message, envelope, expose


class Worker(Agent):
    """Counts the calls running at once: `running` now, `peak` the most so far."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.running = 0
        self.peak = 0
        self.order: list[int] = []
        self.release = asyncio.Event()

    async def _enter(self, i: int) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.order.append(i)

    @expose
    async def work(self, i: int, seconds: float = 0.1) -> int:
        await self._enter(i)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
        return i * 10

    @expose
    async def hold(self, i: int) -> int:
        """Runs until the test releases it."""
        await self._enter(i)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return i

    @expose
    def quick(self, i: int) -> int:
        """A plain method: it runs (and ends) within the tick that starts it."""
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.order.append(i)
        self.running -= 1
        return i


@pytest.mark.parametrize("limit", [1, 3])
async def test_at_most_n_calls_run_at_once_and_all_complete(mesh_url, limit):
    worker = Worker(uid("worker"), url=mesh_url, config={"max_concurrent_calls": limit})
    async with worker, Agent(uid("caller"), url=mesh_url) as caller:
        calls = [caller.call(worker.identity, "work", i, 0.05, timeout=20) for i in range(12)]
        assert await asyncio.gather(*calls) == [i * 10 for i in range(12)]
        assert worker.peak == limit
        assert worker.running == 0


async def test_without_a_limit_the_calls_run_together(mesh_url):
    worker = Worker(uid("worker"), url=mesh_url)
    async with worker, Agent(uid("caller"), url=mesh_url) as caller:
        calls = [caller.call(worker.identity, "work", i, 0.3, timeout=20) for i in range(8)]
        assert await asyncio.gather(*calls) == [i * 10 for i in range(8)]
        assert worker.peak == 8


async def test_waiting_calls_start_in_arrival_order_and_plain_methods_count_too(mesh_url):
    worker = Worker(uid("worker"), url=mesh_url, config=AgentConfig(max_concurrent_calls=2))
    async with worker, Agent(uid("caller"), url=mesh_url) as caller:
        held = [
            asyncio.ensure_future(caller.call(worker.identity, "hold", i, timeout=20))
            for i in range(2)
        ]
        while len(worker.order) < 2:
            await asyncio.sleep(0.01)
        waiting = []
        for i in range(2, 8):  # sent one after the other: the inbox keeps their order
            method, params = ("quick", (i,)) if i % 2 else ("work", (i, 0.01))
            waiting.append(
                asyncio.ensure_future(caller.call(worker.identity, method, *params, timeout=20))
            )
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert worker.order == [0, 1]  # both slots held: nothing else started
        assert not any(f.done() for f in waiting)
        # Control requests are not counted: discovery still finds the busy agent.
        found = await caller.peers(timeout=0.5)
        assert worker.identity in [p["identity"] for p in found]
        worker.release.set()
        assert await asyncio.gather(*held) == [0, 1]
        results = await asyncio.gather(*waiting)
        assert results == [i * 10 if i % 2 == 0 else i for i in range(2, 8)]
        assert worker.order == list(range(8))
        assert worker.peak == 2


async def test_a_behaviours_exposed_methods_share_the_agents_slots(mesh_url):
    class Helper(Behaviour):
        async def run(self) -> None:
            await asyncio.sleep(0.05)

        @expose
        async def help(self, i: int) -> int:
            return await self.agent.work(i, 0.05)

    worker = Worker(uid("worker"), url=mesh_url, config={"max_concurrent_calls": 2})
    async with worker, Agent(uid("caller"), url=mesh_url) as caller:
        await worker.add_behaviour(Helper(worker))
        calls = [
            caller.call(worker.identity, "help" if i % 2 else "work", i, timeout=20)
            for i in range(10)
        ]
        assert await asyncio.gather(*calls) == [i * 10 for i in range(10)]
        assert worker.peak == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_the_limit_is_a_positive_int_or_none(bad):
    assert AgentConfig().max_concurrent_calls is None
    assert AgentConfig(max_concurrent_calls=4).max_concurrent_calls == 4
    with pytest.raises(ValueError, match="max_concurrent_calls"):
        AgentConfig(max_concurrent_calls=bad)


async def test_a_message_from_a_closed_channel_is_stale(mesh_url):
    """Waiting requests from before a connection loss are skipped (`Message.stale`): the
    broker delivers them again, and running both copies would run the call twice."""
    async with Agent(uid("agent"), url=mesh_url) as agent:
        ch = await agent.connection.channel(confirms=False)
        queue = uid("stale")
        await ch.queue_declare(queue, exclusive=True)
        ch.publish(b"x", "", queue)
        delivery = None

        async def got_it() -> bool:
            nonlocal delivery
            delivery = await ch.get(queue)
            return delivery is not None

        assert await wait_until(got_it, timeout=5)
        msg = Message(delivery, ch, queue)
        assert not msg.stale
        await ch.close()
        assert msg.stale
        assert not msg.ack()  # settling it does nothing
    assert not delivered(b"x").stale  # a message of no channel is never stale


async def test_waiting_calls_stay_unacked_and_go_back_to_the_inbox_on_stop(mesh_url):
    """Nothing waiting is acked or dropped: stopped with one call running and three
    waiting, the agent leaves all four requests in its inbox for a successor."""
    worker = Worker(
        uid("worker"), url=mesh_url, config={"max_concurrent_calls": 1, "drain_timeout": 0.5}
    )
    async with Agent(uid("caller"), url=mesh_url) as caller:
        try:
            await worker.start()
            calls = [
                asyncio.ensure_future(caller.call(worker.identity, "hold", i, timeout=30))
                for i in range(4)
            ]
            assert await wait_until(lambda: worker.order == [0], timeout=10)
            await asyncio.sleep(0.3)  # the other three have arrived and wait
            assert worker.order == [0]
            await worker.stop()
            worker.release.set()  # the cut-short call may end now; its reply goes nowhere
            # Count the RPC requests only: another mesh on the same broker may broadcast
            # (presence queries, fanout messages) into every inbox meanwhile.
            ch = await caller.connection.channel(confirms=False)
            requests = []
            while (delivery := await ch.get(worker.identity)) is not None:
                if delivery.properties.type == envelope.KIND_RPC:
                    requests.append(delivery)
            assert len(requests) == 4
            await ch.close()  # unacked: all go back to the inbox
            assert worker.order == [0]  # none of the waiting ones ran
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        finally:
            if not mesh_url.startswith("memory://"):
                await delete_queues(mesh_url, worker.identity)
