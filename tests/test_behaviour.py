"""core/behaviour.py, on RabbitMQ and memory://.

`Behaviour.receive()` as in the original munggoggo and SPADE: no timeout returns at once
(the next message or None), `timeout=t` waits up to t seconds, `timeout=math.inf` waits for
a message. A cyclic behaviour polling an empty mailbox does not spin. Behaviour names are
`<identity>.<short name>`. The mailbox holds at most the prefetch; one-shot, periodic and
cyclic behaviours, and the restart policy after a failing step.

How a behaviour ends (done, failed, stopped, a start that fails) is
tests/test_behaviour_end.py's.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from broker_tools import wait_until
from mesh_tools import uid

from munggoggo import (
    Agent,
    Behaviour,
    OneShotBehaviour,
    PeriodicBehaviour,
    RestartPolicy,
)

pytestmark = pytest.mark.timeout(60)


def completes_without_suspending(coro) -> object:
    """Drive a coroutine one step: it must finish without awaiting anything pending.
    Returns its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine suspended: it waited instead of returning at once")


class Probe(OneShotBehaviour):
    """Checks receive() from inside a step, where users call it."""

    async def run(self) -> None:
        self.no_timeout = completes_without_suspending(self.receive())
        self.zero_timeout = completes_without_suspending(self.receive(timeout=0))
        self.short_timeout = await self.receive(timeout=0.05)


async def test_receive_without_timeout_returns_none_at_once(mesh_url):
    async with Agent(uid("probe"), url=mesh_url) as agent:
        probe = await agent.add_behaviour(Probe(agent, binding_keys=[uid("nothing")]))
        assert await wait_until(lambda: probe.state == "done")
        assert probe.no_timeout is None
        assert probe.zero_timeout is None
        assert probe.short_timeout is None
        assert probe.last_error is None


class Poller(Behaviour):
    """The seed's pattern: `receive()` without a timeout, in a cyclic behaviour."""

    async def setup(self) -> None:
        self.got: list[bytes] = []

    async def run(self) -> None:
        msg = await self.receive()
        if msg:
            self.got.append(msg.body)


async def test_receive_without_timeout_gets_what_is_in_the_mailbox(mesh_url):
    topic = uid("poll")
    async with Agent(uid("poller"), url=mesh_url) as agent:
        poller = await agent.add_behaviour(Poller(agent, binding_keys=[topic]))
        for i in range(20):
            await agent.publish(str(i).encode(), topic)
        assert await wait_until(lambda: len(poller.got) == 20)
        assert poller.got == [str(i).encode() for i in range(20)]


async def test_an_idle_polling_behaviour_does_not_spin(mesh_url):
    """Polling an empty mailbox in a loop must not burn a core: over a second idle the
    behaviour runs a bounded number of steps (a spinning loop runs ~10^5), and mail still
    reaches it."""
    topic = uid("idle")
    async with Agent(uid("idler"), url=mesh_url) as agent:
        poller = await agent.add_behaviour(Poller(agent, binding_keys=[topic]))
        await asyncio.sleep(0.2)
        before = poller.steps
        await asyncio.sleep(1.0)
        idle_steps = poller.steps - before
        assert 0 < idle_steps < 200, idle_steps
        await agent.publish(b"wake", topic)
        assert await wait_until(lambda: poller.got == [b"wake"])


class Waiter(OneShotBehaviour):
    """Waits with the timeout it was given and keeps what it got."""

    def __init__(self, agent: Agent, timeout: float, **kwargs) -> None:
        super().__init__(agent, **kwargs)
        self.timeout = timeout
        self.got: object = "nothing yet"

    async def run(self) -> None:
        self.got = await self.receive(timeout=self.timeout)


@pytest.mark.parametrize("timeout", [5.0, math.inf])
async def test_receive_with_a_timeout_waits_for_a_message(mesh_url, timeout):
    topic = uid("wait")
    async with Agent(uid("waiter"), url=mesh_url) as agent:
        waiter = await agent.add_behaviour(Waiter(agent, timeout, binding_keys=[topic]))
        await asyncio.sleep(0.3)  # it is waiting inside receive() by now
        assert waiter.got == "nothing yet"
        await agent.publish(b"late", topic)
        assert await wait_until(lambda: waiter.state == "done")
        assert waiter.got is not None and waiter.got.body == b"late"


async def test_receive_forever_returns_none_when_the_behaviour_stops(mesh_url):
    async with Agent(uid("forever"), url=mesh_url) as agent:
        waiter = await agent.add_behaviour(Waiter(agent, math.inf, binding_keys=[uid("never")]))
        await asyncio.sleep(0.2)
        await agent.stop_behaviour(waiter.short_name)
        assert waiter.got is None


@pytest.mark.parametrize("timeout", [-1.0, math.nan])
async def test_a_negative_or_nan_timeout_is_refused(mesh_url, timeout):
    async with Agent(uid("refuse"), url=mesh_url) as agent:
        waiter = await agent.add_behaviour(Waiter(agent, timeout))
        assert await wait_until(lambda: waiter.last_error is not None)
        assert waiter.last_error.startswith("ValueError: receive timeout must be >= 0")


async def test_behaviour_names_are_qualified_by_the_agent_identity(mesh_url):
    identity = uid("named")
    async with Agent(identity, url=mesh_url) as agent:
        poller = await agent.add_behaviour(Poller(agent, binding_keys=[uid("n")]))
        custom = await agent.add_behaviour(Poller(agent, name="custom"))
        assert poller.name == f"{identity}.Poller" and poller.short_name == "Poller"
        assert custom.name == f"{identity}.custom" and str(custom) == custom.name
        assert poller.queue == poller.name  # its queue: <identity>.<short name>
        assert set(agent.behaviours) == {"Poller", "custom"}
        assert [b["name"] for b in agent.list_behaviours()] == ["Poller", "custom"]
        # The control plane takes either name.
        assert (await agent.stop_behaviour(f"{identity}.custom"))["state"] == "stopped"
        assert (await agent.start_behaviour("custom"))["state"] == "running"


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


def test_the_restart_delay_doubles_from_initial_up_to_maximum():
    policy = RestartPolicy(initial=0.1, maximum=1.0)
    assert [policy.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.delay(0) == pytest.approx(0.1)  # never below the initial delay
    assert RestartPolicy().max_failures is None  # by default a behaviour never gives up
