"""A stop asked for while agents start (`serve(stop=...)`, what SIGTERM sets), on RabbitMQ
and on memory://, and SIGTERM to a `Worker` program whose setup() waits on a call.

The start is cancelled rather than waited for: the agent's setup() sees CancelledError,
what had started drains (a behaviour that consumes finishes its step and hands back the
rest, its consumer cancelled), agents already running stop as usual, and serve() returns.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import pytest
from broker_tools import wait_until
from fault_tools import delete_queues
from mesh_tools import BodyCollector, uid

from munggoggo import Agent, Behaviour
from munggoggo.runner import serve

pytestmark = pytest.mark.timeout(60)

SERVE_ENDS = 30  # generous bound on serve() returning once stopped (drain_timeout is 2 s)


async def consumer_count(agent: Agent, queue: str) -> int:
    ch = await agent.connection.channel(confirms=False)
    try:
        return (await ch.queue_declare(queue, passive=True)).consumer_count
    finally:
        await ch.close()


class WaitsInSetup(Agent):
    """Its setup() adds a behaviour, then waits until cancelled."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs, config={"drain_timeout": 2})
        self.waiting = asyncio.Event()
        self.cancelled = False

    async def setup(self) -> None:
        self.added = await self.add_behaviour(
            BodyCollector(self, binding_keys=[f"t.{self.identity}"])
        )
        self.waiting.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class Stuck(Behaviour):
    async def setup(self) -> None:
        self.cancelled = False
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class StuckInBehaviourStart(Agent):
    """`Collect` consumes; `Stuck`, started after it, never finishes its setup()."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs, config={"drain_timeout": 2})

    async def setup(self) -> None:
        self.collect = await self.add_behaviour(
            BodyCollector(self, name="Collect", binding_keys=[f"t.{self.identity}"])
        )
        self.stuck = await self.add_behaviour(Stuck(self))


async def stop_and_wait(serving: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(serving, SERVE_ENDS)


async def test_a_stop_during_setup_cancels_it_and_closes_the_agent(mesh_url):
    agent = WaitsInSetup(uid("slow"), url=mesh_url)
    stop = asyncio.Event()
    async with Agent(uid("observer"), url=mesh_url) as observer:
        serving = asyncio.ensure_future(serve(agent, stop=stop))
        await asyncio.wait_for(agent.waiting.wait(), SERVE_ENDS)
        assert await consumer_count(observer, agent.identity) == 1
        await stop_and_wait(serving, stop)
        assert agent.cancelled
        assert agent.state == "stopped"
        assert not agent.connection.is_open
        assert agent.added.task is None  # added in setup(), never started
        assert await consumer_count(observer, agent.identity) == 0


async def test_a_stop_while_behaviours_start_drains_the_one_consuming(mesh_url):
    n = 200
    agent = StuckInBehaviourStart(uid("slow"), url=mesh_url)
    queue = f"{agent.identity}.Collect"
    stop = asyncio.Event()
    try:
        async with Agent(uid("observer"), url=mesh_url) as observer:
            serving = asyncio.ensure_future(serve(agent, stop=stop))
            assert await wait_until(lambda: hasattr(agent, "stuck"), timeout=SERVE_ENDS)
            assert await wait_until(lambda: agent.stuck.task is not None, timeout=SERVE_ENDS)
            for i in range(n):
                await observer.publish(str(i), f"t.{agent.identity}")
            await observer.flush(timeout=10)
            assert await wait_until(lambda: len(agent.collect.bodies) >= 10, timeout=10)
            await stop_and_wait(serving, stop)
            assert agent.state == "stopped"
            assert agent.stuck.cancelled  # once the drain_timeout was over
            assert agent.collect.task.done()
            got = agent.collect.bodies
            assert len(set(got)) == len(got)

            async def left() -> int:
                ch = await observer.connection.channel(confirms=False)
                try:
                    return (await ch.queue_declare(queue, passive=True)).message_count
                finally:
                    await ch.close()

            # Everything it did not take is ready in its queue again, nothing else.
            assert await consumer_count(observer, queue) == 0
            assert await left() == n - len(got)
    finally:
        if not mesh_url.startswith("memory://"):
            await delete_queues(mesh_url, queue)


async def test_a_stop_during_the_second_start_stops_the_first_agent(mesh_url):
    first = Agent(uid("first"), url=mesh_url)
    second = WaitsInSetup(uid("second"), url=mesh_url)
    stop = asyncio.Event()
    serving = asyncio.ensure_future(serve(first, second, stop=stop))
    await asyncio.wait_for(second.waiting.wait(), SERVE_ENDS)
    assert first.state == "running"
    await stop_and_wait(serving, stop)
    assert second.cancelled
    assert (first.state, second.state) == ("stopped", "stopped")
    assert not first.connection.is_open and not second.connection.is_open


async def test_a_start_that_fails_still_raises(mesh_url):
    class Broken(Agent):
        async def setup(self) -> None:
            raise RuntimeError("setup went wrong")

    first = Agent(uid("first"), url=mesh_url)
    with pytest.raises(RuntimeError, match="setup went wrong"):
        await asyncio.wait_for(serve(first, Broken(uid("broken"), url=mesh_url)), SERVE_ENDS)
    assert first.state == "stopped"


CALLER = """
    import asyncio, sys
    from munggoggo import Core, Worker

    class Caller(Core):
        async def setup(self):
            print("calling", flush=True)
            try:
                await self.call(sys.argv[1], "anything", timeout=60)
            except asyncio.CancelledError:
                print("call cancelled", flush=True)
                raise

    Worker(Caller(sys.argv[2]), loglevel="info").execute_from_commandline()
"""


async def test_sigterm_to_a_worker_whose_setup_waits_on_a_call(broker_url):
    """The call's target is a queue nobody consumes: the call would wait its 60 s."""
    silent = uid("test.silent")
    identity = uid("caller")
    async with Agent(uid("observer"), url=broker_url) as observer:
        ch = await observer.connection.channel(confirms=False)
        await ch.queue_declare(silent, durable=True, arguments={"x-expires": 60000})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(CALLER),
            silent,
            identity,
            env=dict(os.environ, MUNGGOGGO_URL=broker_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.decode().strip() == "calling"
            # The request is in the silent queue: the call is under way.
            assert await wait_until_ready(observer, silent)
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            assert out.decode().splitlines() == ["call cancelled"]
            assert "Traceback" not in err.decode(), err.decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await ch.queue_delete(silent)
            await ch.queue_delete(identity)


async def wait_until_ready(agent: Agent, queue: str, timeout: float = 30) -> bool:
    """Whether a message is ready in `queue` within `timeout` seconds."""
    ch = await agent.connection.channel(confirms=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline:
            if (await ch.queue_declare(queue, passive=True)).message_count:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await ch.close()
