"""`@expose` on a behaviour's methods, on RabbitMQ and memory://.

A behaviour's exposed methods are callable through its agent by their own names while the
behaviour runs (they run on the behaviour); a name the agent or another behaviour already
exposes is refused at `add_behaviour` (in setup() and on a running agent); once the
behaviour stops or ends, calling one is "method not found" (-32601), and it is back when the
behaviour is started again.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import eventually
from mesh_tools import Calc, uid

from munggoggo import Agent, Behaviour, MunggoggoError, OneShotBehaviour, RpcError, expose
from munggoggo.exceptions import MethodNameClash

METHOD_NOT_FOUND = -32601


class Counter(Behaviour):
    """Counts what it is told; its exposed methods read and change its own state."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.total = 0

    async def run(self) -> None:
        await asyncio.sleep(0.05)

    @expose
    def add(self, n: int) -> int:
        """Add `n`; the new total."""
        self.total += n
        return self.total

    @expose
    async def total_later(self, delay: float = 0.0) -> dict:
        await asyncio.sleep(delay)
        return {"behaviour": self.short_name, "total": self.total}

    def not_exposed(self) -> int:
        return -1


class ClashesWithCalc(Behaviour):
    async def run(self) -> None:
        await asyncio.sleep(0.05)

    @expose
    def mul(self, a: int, b: int) -> int:
        return 0


class ClashesWithControlPlane(Behaviour):
    async def run(self) -> None:
        await asyncio.sleep(0.05)

    @expose
    def ping(self) -> str:
        return "not the agent's"


class AlsoAdds(Behaviour):
    async def run(self) -> None:
        await asyncio.sleep(0.05)

    @expose
    def add(self, n: int) -> int:
        return -n


class Once(OneShotBehaviour):
    async def run(self) -> None:
        self.ran = True

    @expose
    def once_only(self) -> str:
        return "still here"


async def test_a_running_behaviours_methods_are_callable_through_its_agent(mesh_url):
    host = Agent(uid("host"), url=mesh_url)
    async with host, Agent(uid("caller"), url=mesh_url) as caller:
        counter = await host.add_behaviour(Counter(host))
        assert await caller.call(host.identity, "add", 2) == 2
        assert await caller.call(host.identity, "add", n=3) == 5
        assert counter.total == 5  # it ran on the behaviour itself
        assert await caller.call(host.identity, "total_later", 0.05) == {
            "behaviour": "Counter",
            "total": 5,
        }
        with pytest.raises(RpcError) as err:
            await caller.call(host.identity, "add", "two")
        assert err.value.code == -32602  # validated by its type hints like any method
        with pytest.raises(RpcError) as err:
            await caller.call(host.identity, "not_exposed")
        assert err.value.code == METHOD_NOT_FOUND
        methods = (await caller.call(host.identity, "describe"))["methods"]
        assert {"add", "total_later", "ping"} <= set(methods)
        assert "not_exposed" not in methods


async def test_behaviours_added_in_setup_serve_their_methods_once_running(mesh_url):
    class Host(Agent):
        async def setup(self) -> None:
            self.counter = await self.add_behaviour(Counter(self))

    async with Host(uid("host"), url=mesh_url) as host, Agent(uid("c"), url=mesh_url) as caller:
        assert await caller.call(host.identity, "add", 7) == 7
        assert host.counter.total == 7


async def test_a_name_the_agent_exposes_is_refused_at_add_behaviour(mesh_url):
    async with Calc(uid("calc"), url=mesh_url) as calc:
        for cls, name in ((ClashesWithCalc, "mul"), (ClashesWithControlPlane, "ping")):
            with pytest.raises(MethodNameClash) as err:
                await calc.add_behaviour(cls(calc))
            assert err.value.name == name
            assert isinstance(err.value, ValueError) and isinstance(err.value, MunggoggoError)
            assert cls.__name__ not in calc.behaviours  # not added, nothing started
        assert await calc.call(calc.identity, "mul", 6, 7) == 42  # still the agent's
        assert await calc.call(calc.identity, "ping") == "pong"


async def test_a_name_another_behaviour_exposes_is_refused_in_setup_too(mesh_url):
    refused: list[BaseException] = []

    class Host(Agent):
        async def setup(self) -> None:
            await self.add_behaviour(Counter(self))
            try:
                await self.add_behaviour(AlsoAdds(self))
            except MethodNameClash as exc:
                refused.append(exc)

    async with Host(uid("host"), url=mesh_url) as host:
        assert len(refused) == 1 and refused[0].name == "add"
        assert list(host.behaviours) == ["Counter"]
        assert await host.call(host.identity, "add", 1) == 1  # the first one's
        # On the running agent as well; under another behaviour name too.
        with pytest.raises(MethodNameClash):
            await host.add_behaviour(AlsoAdds(host, name="other"))
        assert "other" not in host.behaviours


async def test_a_stopped_behaviours_methods_are_gone_until_it_runs_again(mesh_url):
    host = Agent(uid("host"), url=mesh_url)
    async with host, Agent(uid("caller"), url=mesh_url) as caller:
        await host.add_behaviour(Counter(host))
        assert await caller.call(host.identity, "add", 1) == 1
        await caller.call(host.identity, "stop_behaviour", "Counter")
        with pytest.raises(RpcError) as err:
            await caller.call(host.identity, "add", 1)
        assert err.value.code == METHOD_NOT_FOUND
        info = await caller.call(host.identity, "describe")
        assert "add" not in info["methods"] and "add" not in info["schemas"]
        # Its names stay its own while it is the agent's: no one else takes them.
        with pytest.raises(MethodNameClash):
            await host.add_behaviour(AlsoAdds(host))
        await caller.call(host.identity, "start_behaviour", "Counter")
        assert await caller.call(host.identity, "add", 1) == 2


async def test_a_behaviour_that_ended_serves_nothing(mesh_url):
    async with Agent(uid("host"), url=mesh_url) as host:
        once = await host.add_behaviour(Once(host))
        await eventually(lambda: not once.is_running, what="the one-shot behaviour ends")
        with pytest.raises(RpcError) as err:
            await host.call(host.identity, "once_only")
        assert err.value.code == METHOD_NOT_FOUND
        assert "once_only" not in host.describe()["methods"]


async def test_a_call_that_arrives_while_the_agent_starts_waits_for_the_behaviour(mesh_url):
    # The request reaches the inbox before the behaviour runs (its agent is still in
    # setup()): it is served once the behaviours start, never answered "method not found".
    in_setup = asyncio.Event()
    go_on = asyncio.Event()

    class Slow(Agent):
        async def setup(self) -> None:
            await self.add_behaviour(Counter(self))
            in_setup.set()
            await go_on.wait()

    agent = Slow(uid("slow"), url=mesh_url)
    async with Agent(uid("caller"), url=mesh_url) as caller:
        starting = asyncio.ensure_future(agent.start())
        try:
            await asyncio.wait_for(in_setup.wait(), 10)
            call = asyncio.ensure_future(caller.call(agent.identity, "add", 5, timeout=10))
            await asyncio.sleep(0.3)  # the request waits in the starting agent's inbox
            assert not call.done()
            go_on.set()
            await starting
            assert await call == 5
            with pytest.raises(RpcError) as info:  # a method nobody has: not held once running
                await caller.call(agent.identity, "nope", timeout=10)
            assert info.value.code == METHOD_NOT_FOUND
        finally:
            go_on.set()
            await starting
            await agent.stop()
