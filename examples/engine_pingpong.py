"""Two connections playing ping-pong through RabbitMQ with the low-level engine.

Run: python examples/engine_pingpong.py  (MUNGGOGGO_URL picks the broker).
Shows the engine API the agent runtime is built on: channels, a topic exchange,
batched consumers, publisher confirms.
"""

import asyncio

from munggoggo._speedups import Properties
from munggoggo.client import Connection, install_uvloop

EXCHANGE = "munggoggo.topic"


async def player(name: str, listens: str, answers: str, rounds: int, done: asyncio.Event) -> None:
    async with Connection(name=name) as conn:
        ch = await conn.channel(prefetch_count=100)
        await ch.exchange_declare(EXCHANGE, "topic", durable=True)
        q = await ch.queue_declare(f"{name}.pingpong", exclusive=True)
        await ch.queue_bind(q.queue, EXCHANGE, listens)
        props = Properties(content_type="text/plain", app_id=name)

        def on_batch(batch):
            for d in batch:
                count = int(d.body)
                print(f"{name}: got {d.routing_key} #{count} from {d.properties.app_id}")
                if count >= rounds:
                    done.set()
                else:
                    ch.publish(str(count + 1).encode(), EXCHANGE, answers, props)
            ch.ack(batch[-1].delivery_tag, multiple=True)

        await ch.consume(q.queue, on_batch)
        if name == "ping-1":
            await asyncio.sleep(0.2)  # let the other player bind its queue
            ch.publish(b"1", EXCHANGE, answers, props)
        await done.wait()
        await ch.wait_confirms(timeout=5)


async def main(rounds: int = 6) -> None:
    done = asyncio.Event()
    await asyncio.gather(
        player("ping-1", "pong", "ping", rounds, done),
        player("pong-1", "ping", "pong", rounds, done),
    )


if __name__ == "__main__":
    install_uvloop()
    asyncio.run(main())
