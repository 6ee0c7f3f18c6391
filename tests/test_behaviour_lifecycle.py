"""core/behaviour_lifecycle.py: kill(exit_code), is_killed(), exit_code, join(timeout) and
on_end() on every behaviour, on RabbitMQ and memory://.

`on_end()` runs exactly once per run whatever ends it (finished, killed from outside or
from inside run(), a failed setup, max_failures, stop(), the agent's stop, a task cancelled
before it began), sees the final state, and `join()` returns only after it. A killed
behaviour stops consuming and hands its mailbox back (nothing is lost), and a restarted
one begins a fresh run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid

import pytest
from broker_tools import wait_until
from fault_tools import delete_queues
from mesh_tools import uid

from munggoggo import (
    Agent,
    AgentConfig,
    Behaviour,
    OneShotBehaviour,
    PeriodicBehaviour,
    RestartPolicy,
)

pytestmark = pytest.mark.timeout(60)


class Ends(Behaviour):
    """Records each on_end() call with the state and exit code it saw."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ends: list[tuple[str, object]] = []

    async def on_end(self) -> None:
        self.ends.append((self.state, self.exit_code))


class Waits(Ends):
    """Waits for mail without end: only kill() or stop() wakes it."""

    async def run(self) -> None:
        await self.receive(timeout=math.inf)


class KillsItselfAfter(Ends):
    """Takes `n` messages, one per step, then kills itself with exit code "enough"."""

    def __init__(self, *args, n: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.n = n
        self.numbers: list[int] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=math.inf)
        if msg is None:
            return
        self.numbers.append(msg.decode(int))
        if len(self.numbers) == self.n:
            self.kill(exit_code="enough")
            assert self.is_killed()
            # The step goes on to its end; receive() no longer waits.
            assert await self.receive(timeout=5) is None


class Collector(Behaviour):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.numbers: list[int] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is not None:
            self.numbers.append(msg.decode(int))


class OnceEnds(OneShotBehaviour, Ends):
    async def run(self) -> None:
        pass


class SetupFailsEnds(Ends):
    async def setup(self) -> None:
        raise RuntimeError("no database")


class StepsFailEnds(Ends):
    restart_policy = RestartPolicy(initial=0.01, maximum=0.01, max_failures=2)

    async def run(self) -> None:
        raise RuntimeError("broken step")


class OnEndRaises(Waits):
    async def on_end(self) -> None:
        await super().on_end()
        raise RuntimeError("on_end broke")


async def consumer_count(agent: Agent, queue: str) -> int:
    ch = await agent.connection.channel(confirms=False)
    try:
        return (await ch.queue_declare(queue, passive=True)).consumer_count
    finally:
        await ch.close()


async def test_kill_from_outside_ends_it_with_the_exit_code(mesh_url):
    async with Agent(uid("life"), url=mesh_url) as agent:
        waits = await agent.add_behaviour(Waits(agent))
        assert waits.exit_code is None and not waits.is_killed()
        with pytest.raises(TimeoutError):
            await waits.join(timeout=0.1)  # it runs: no end to wait for
        waits.kill(exit_code=42)
        await waits.join(timeout=5)
        assert waits.is_killed()
        assert waits.exit_code == 42
        assert waits.state == "stopped"
        assert waits.ends == [("stopped", 42)]
        described = agent.status()["behaviours"][0]
        assert (described["state"], described["killed"], described["exit_code"]) == (
            "stopped",
            True,
            42,
        )
        assert agent.state == "running"
    assert waits.ends == [("stopped", 42)]  # the agent's stop does not end it again


async def test_kill_without_a_code_exits_0_and_a_second_kill_changes_nothing(mesh_url):
    async with Agent(uid("life"), url=mesh_url) as agent:
        waits = await agent.add_behaviour(Waits(agent))
        waits.kill()
        waits.kill(exit_code=7)
        await waits.join(timeout=5)
        assert waits.exit_code == 0
        waits.kill(exit_code=9)  # ended: nothing to kill
        assert waits.exit_code == 0 and waits.ends == [("stopped", 0)]


async def test_kill_from_inside_run_releases_its_queue_and_hands_back_its_mailbox(mesh_url):
    rid = uuid.uuid4().hex[:8]
    topic, queue = f"life.{rid}", f"test.life.{rid}"
    config = AgentConfig(prefetch=10)
    killer_agent = Agent(uid("killer"), url=mesh_url, config=config)
    other_agent = Agent(uid("other"), url=mesh_url, config=config)
    try:
        await killer_agent.start()
        await other_agent.start()
        killer = await killer_agent.add_behaviour(
            KillsItselfAfter(killer_agent, n=3, binding_keys=[topic], queue=queue)
        )
        for i in range(30):
            await other_agent.publish(i, topic)
        await other_agent.flush(timeout=30)
        await killer.join(timeout=10)
        assert killer.exit_code == "enough" and killer.is_killed()
        assert killer.ends == [("stopped", "enough")]
        assert killer.mailbox_size == 0
        assert killer.short_name not in killer_agent.consumers()
        assert await consumer_count(other_agent, queue) == 0
        # What reached its mailbox and was not taken went back to the queue: a competing
        # consumer gets all of it.
        collector = await other_agent.add_behaviour(
            Collector(other_agent, binding_keys=[topic], queue=queue)
        )
        assert await wait_until(lambda: len(collector.numbers) >= 27, timeout=20)
        assert sorted(killer.numbers + collector.numbers) == list(range(30))
    finally:
        await killer_agent.stop()
        await other_agent.stop()
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue)


ENDINGS = {
    # name: (make the behaviour, end it (None: it ends by itself), final state, exit code)
    "one-shot done": (OnceEnds, None, "done", 0),
    "setup raises": (SetupFailsEnds, None, "failed", 1),
    "max_failures": (StepsFailEnds, None, "failed", 1),
    "killed": (Waits, lambda agent, b: b.kill(exit_code=3), "stopped", 3),
    "stop()": (Waits, lambda agent, b: agent.stop_behaviour(b.short_name), "stopped", 0),
    "agent stops": (Waits, lambda agent, b: agent.stop(), "stopped", 0),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_on_end_runs_once_whatever_ends_it(mesh_url, ending):
    make, end, final_state, exit_code = ENDINGS[ending]
    agent = Agent(uid("life"), url=mesh_url)
    try:
        await agent.start()
        behaviour = await agent.add_behaviour(make(agent))
        if end is not None and asyncio.iscoroutine(ended := end(agent, behaviour)):
            await ended
        await behaviour.join(timeout=10)
        assert behaviour.ends == [(final_state, exit_code)]
        assert behaviour.state == final_state and behaviour.exit_code == exit_code
        assert behaviour.is_killed() is (ending == "killed")
    finally:
        await agent.stop()
    await asyncio.sleep(0.05)
    assert behaviour.ends == [(final_state, exit_code)]  # still once, after the agent stopped


async def test_on_end_runs_for_a_task_cancelled_before_it_began(mesh_url):
    async with Agent(uid("life"), url=mesh_url) as agent:
        waits = Waits(agent)
        waits.start()  # its task is created, not yet run
        waits.task.cancel()  # before its first line: no step, no setup, no teardown
        await waits.join(timeout=5)
        assert waits.ends == [("failed", 1)]
        await waits.stop()
        assert waits.ends == [("failed", 1)]


async def test_join_after_the_end_returns_at_once_and_a_behaviour_cannot_join_itself(mesh_url):
    class JoinsItself(OneShotBehaviour):
        error: BaseException | None = None

        async def run(self) -> None:
            try:
                await self.join(timeout=1)
            except RuntimeError as exc:
                self.error = exc

    async with Agent(uid("life"), url=mesh_url) as agent:
        joiner = await agent.add_behaviour(JoinsItself(agent))
        await joiner.join(timeout=5)
        assert isinstance(joiner.error, RuntimeError)
        # It has ended: joining again returns without waiting for anything.
        again = asyncio.ensure_future(joiner.join())
        for _ in range(3):
            await asyncio.sleep(0)
        assert again.done() and again.exception() is None


async def test_join_before_the_start_waits_for_that_run_to_end(mesh_url):
    async with Agent(uid("life"), url=mesh_url) as agent:
        once = OnceEnds(agent)
        joining = asyncio.ensure_future(once.join(timeout=10))
        await asyncio.sleep(0.05)
        assert not joining.done()
        await agent.add_behaviour(once)
        await asyncio.wait_for(joining, 5)
        assert once.ends == [("done", 0)]


async def test_on_end_that_raises_is_logged_and_join_still_returns(mesh_url, caplog):
    async with Agent(uid("life"), url=mesh_url) as agent:
        broken = await agent.add_behaviour(OnEndRaises(agent))
        with caplog.at_level(logging.ERROR, logger="munggoggo.behaviour"):
            broken.kill(exit_code=5)
            await broken.join(timeout=5)
        assert broken.ends == [("stopped", 5)]
        assert any("on_end failed" in r.getMessage() for r in caplog.records)
        assert agent.state == "running"


async def test_kill_wakes_a_periodic_behaviour_between_its_runs(mesh_url):
    class Slow(PeriodicBehaviour):
        runs = 0

        async def run(self) -> None:
            self.runs += 1

    async with Agent(uid("life"), url=mesh_url) as agent:
        slow = await agent.add_behaviour(Slow(agent, period=300))
        assert await wait_until(lambda: slow.runs == 1)
        slow.kill(exit_code=1)
        # The join's bound (TimeoutError after 5 s) is what shows kill() woke it: the
        # next run is 300 s away.
        await slow.join(timeout=5)
        assert slow.runs == 1 and slow.state == "stopped" and slow.exit_code == 1


async def test_a_restarted_behaviour_begins_a_fresh_run(mesh_url):
    async with Agent(uid("life"), url=mesh_url) as agent:
        waits = await agent.add_behaviour(Waits(agent))
        waits.kill(exit_code=11)
        await waits.join(timeout=5)
        await agent.start_behaviour(waits.short_name)
        assert waits.state == "running"
        assert not waits.is_killed() and waits.exit_code is None
        with pytest.raises(TimeoutError):
            await waits.join(timeout=0.1)
        waits.kill(exit_code=12)
        await waits.join(timeout=5)
        assert waits.ends == [("stopped", 11), ("stopped", 12)]


async def test_kill_in_a_one_shot_run_ends_it_stopped_not_done(mesh_url):
    class Quits(OneShotBehaviour, Ends):
        async def run(self) -> None:
            self.kill(exit_code="quit")

    async with Agent(uid("life"), url=mesh_url) as agent:
        quits = await agent.add_behaviour(Quits(agent))
        await quits.join(timeout=5)
        assert quits.ends == [("stopped", "quit")]


async def test_describe_shows_a_code_that_is_no_json_value_as_its_repr(mesh_url):
    async with Agent(uid("life"), url=mesh_url) as agent:
        waits = await agent.add_behaviour(Waits(agent))
        code = ValueError("bad input")
        waits.kill(exit_code=code)
        await waits.join(timeout=5)
        assert waits.exit_code is code
        assert waits.describe()["exit_code"] == repr(code)
        other = Agent(uid("caller"), url=mesh_url)
        async with other:  # status crosses the wire as JSON
            status = await other.call(agent.identity, "status", timeout=10)
        assert status["behaviours"][0]["exit_code"] == repr(code)
