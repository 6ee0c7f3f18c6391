"""Retry later, deliver later: a flaky handler retried after pauses, and a delayed publish.

Run: python examples/retries.py   (MUNGGOGGO_URL picks the broker; memory:// works too)

The handler fails on the first two tries of each order; `retry_delays` retries it 0.5 s
and then 1 s later, in the broker. A reminder published with `delay=1.5` arrives 1.5 s
after it was sent.
"""

import asyncio
import logging
import time

from munggoggo import Agent, AgentConfig, Behaviour


class Orders(Behaviour):
    async def setup(self) -> None:
        self.tries: dict[bytes, int] = {}
        self.done = asyncio.Event()

    async def run(self) -> None:
        msg = await self.receive(timeout=1.0)
        if msg is None:
            return
        tries = self.tries[msg.body] = self.tries.get(msg.body, 0) + 1
        print(f"{time.monotonic() - START:4.1f}s  {msg.body.decode()}: try {tries}")
        if msg.body.startswith(b"order") and tries < 3:
            raise RuntimeError("the payment service is down")  # retried after a pause
        if msg.body.startswith(b"reminder"):
            self.done.set()


async def main() -> None:
    config = AgentConfig(retry_delays=(0.5, 1.0, 5.0))
    async with Agent("shop", config=config) as shop:
        orders = await shop.add_behaviour(Orders(shop, binding_keys=["shop.#"]))
        await shop.publish(b"order 42", "shop.orders")
        await shop.publish(b"reminder: invoice 42", "shop.reminders", delay=1.5)
        await asyncio.wait_for(orders.done.wait(), timeout=30)
        await asyncio.sleep(0.2)


START = time.monotonic()

if __name__ == "__main__":
    # Each failed step is logged with its traceback; here the failures are the point.
    logging.getLogger("munggoggo.behaviour").setLevel(logging.CRITICAL)
    asyncio.run(main())
