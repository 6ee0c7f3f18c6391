"""`await agent.peers(method="mul")`, on RabbitMQ and memory:// (nameko/nameko#518): only the
agents that serve that method, their own or a running behaviour's, answer the filter.
"""

from __future__ import annotations

import asyncio

from mesh_tools import Calc, uid

from munggoggo import Agent, Behaviour, expose


class Squarer(Behaviour):
    async def run(self) -> None:
        await asyncio.sleep(0.05)

    @expose
    def square(self, x: int) -> int:
        return x * x


async def test_peers_by_method(mesh_url):
    calc = Calc(uid("calc"), url=mesh_url)
    plain = Agent(uid("plain"), url=mesh_url)
    async with calc, plain, Agent(uid("asker"), url=mesh_url) as asker:
        ours = {calc.identity, plain.identity}

        async def found(**kwargs) -> list[str]:
            return [p["identity"] for p in await asker.peers(**kwargs) if p["identity"] in ours]

        assert await found() == sorted(ours)
        assert await found(method="mul") == [calc.identity]
        assert await found(method="ping") == sorted(ours)  # every agent serves ping
        assert await found(method="no_such_method") == []
        # A behaviour's exposed method counts while the behaviour runs.
        await plain.add_behaviour(Squarer(plain))
        assert await found(method="square") == [plain.identity]
        await plain.stop_behaviour("Squarer")
        assert await found(method="square") == []
        # What peers(method=...) returns is the agents' describe(): call them with it.
        (peer,) = [p for p in await asker.peers(method="mul") if p["identity"] == calc.identity]
        assert "mul" in peer["methods"]
        assert await asker.call(peer["identity"], "mul", 6, 7) == 42
