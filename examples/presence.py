"""Presence: a watcher hears agents start, stop cleanly, and crash.

Runs on the in-process broker by default (`python examples/presence.py`), or on RabbitMQ
with `MUNGGOGGO_URL=amqp://guest:guest@127.0.0.1:5672/`. It ends by itself in about a second.
"""

from __future__ import annotations

import asyncio
import os

from munggoggo import Agent, AgentConfig

# A short interval, so that the crash below is noticed at once (the default is 30 s).
CONFIG = AgentConfig(presence_interval=0.2, drain_timeout=1.0)


async def main() -> None:
    url = os.environ.get("MUNGGOGGO_URL", "memory://presence-example")
    gone = asyncio.Event()

    def on_presence(identity: str, state: str) -> None:
        print(f"{identity} {state}")
        if identity == "presence-crasher" and state == "stopped":
            gone.set()

    watcher = Agent("presence-watcher", url=url, config=CONFIG)
    watcher.on_presence = on_presence
    async with watcher:
        async with Agent("presence-worker", url=url, config=CONFIG):
            await asyncio.sleep(0.1)
        crasher = Agent("presence-crasher", url=url, config=CONFIG)
        await crasher.start()
        await asyncio.sleep(0.1)
        await crasher.connection.close()  # as a crash: no goodbye
        await asyncio.wait_for(gone.wait(), 5)
        await crasher.stop()


if __name__ == "__main__":
    asyncio.run(main())
