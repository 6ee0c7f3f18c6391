"""The seed's ping example, with only its imports changed: two agents ping each other.

Run: python examples/ping.py   (MUNGGOGGO_URL picks the broker; memory:// works too)
"""

import asyncio

from munggoggo import Agent, Behaviour, expose, run


class PingAgent(Agent):
    class PingBehav(Behaviour):
        async def setup(self):
            self.counter = 0

        async def run(self):
            self.counter += 1
            msg = await self.receive(timeout=1.0)
            if msg:
                print(f"{self.name}: Message received: {msg.body.decode()}")
            await self.publish(str(self.counter), "ping")
            await asyncio.sleep(0.9)

    async def setup(self) -> None:
        """Register behaviour and subscribe to 'ping' topic"""
        await self.add_runtime_dependency(self.PingBehav(self, binding_keys=["ping"]))

    @expose
    async def mul(self, a: int, b: int) -> int:
        return a * b


if __name__ == "__main__":
    run(PingAgent(identity="ping-1"), PingAgent(identity="ping-2"))
