"""RPC contracts: a behaviour's exposed methods, deadlines, a concurrency limit,
`peers(method=...)` and the method schemas `describe()` reports.

Run: python examples/rpc_contracts.py   (MUNGGOGGO_URL picks the broker; default memory://)
"""

import asyncio
import json
import os

from munggoggo import Agent, AgentConfig, Behaviour, RpcTimeout, expose


class Tally(Behaviour):
    """Keeps a running total; its exposed method is served by the agent while it runs."""

    async def setup(self) -> None:
        self.total = 0

    async def run(self) -> None:
        await asyncio.sleep(0.1)

    @expose
    def add(self, n: int) -> int:
        """Add `n` to the total and return the new total."""
        self.total += n
        return self.total


class Calculator(Agent):
    async def setup(self) -> None:
        await self.add_behaviour(Tally(self))

    @expose
    async def mul(self, a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    @expose
    async def slow(self, seconds: float) -> str:
        """Take `seconds` to answer."""
        await asyncio.sleep(seconds)
        return "done"


async def main() -> None:
    url = os.environ.get("MUNGGOGGO_URL", "memory://rpc-contracts")
    # One exposed call at a time: the others wait, unacked, in the calculator's inbox.
    calc = Calculator("calculator", url=url, config=AgentConfig(max_concurrent_calls=1))
    async with calc, Agent("client", url=url) as client:
        print("mul:", await client.call("calculator", "mul", 6, 7))
        print("add:", await client.call("calculator", "add", 5))  # the behaviour's method

        slow = asyncio.ensure_future(client.call("calculator", "slow", 0.5))
        await asyncio.sleep(0.1)  # `slow` now holds the only slot
        try:
            # Queued behind `slow`, its deadline passes first: it is never started.
            await client.call("calculator", "mul", 1, 2, timeout=0.2)
        except RpcTimeout:
            print("mul: timed out while queued, never started")
        print("slow:", await slow)

        found = await client.peers(method="add")  # only the agents that serve `add`
        print("serving add:", [peer["identity"] for peer in found])
        print("mul's contract:", json.dumps(found[0]["schemas"]["mul"], sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
