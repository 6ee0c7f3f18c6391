"""Scenario `aio_pika`: the engine pipe on aio-pika, for the ratio.

The same pipe as `engine` and `aiormq`: one connection, a channel with publisher confirms,
a fresh exclusive queue, prefetch 1000, 100 B bodies. Publishes go out as gathered windows
of 500 `default_exchange.publish()` awaitables (each resolves on its confirm; one shared
Message object, mandatory=False as in the other pipes); the consumer acks with
multiple=true every prefetch/4 deliveries and at the end.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from ...common import Stopwatch, check, rate, timeout_for

DEFAULT_MESSAGES = 30_000
SIZE = 100
PREFETCH = 1000
WINDOW = 500
WARMUP = 2000


async def measure(url: str, messages: int) -> dict[str, Any]:
    import aio_pika

    loop = asyncio.get_running_loop()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue("", exclusive=True)
        message = aio_pika.Message(
            b"x" * SIZE, content_type="application/octet-stream", app_id="bench"
        )
        exchange = channel.default_exchange
        ack_every = PREFETCH // 4
        received = 0
        target = 0
        done: asyncio.Future[None] = loop.create_future()

        async def on_message(incoming: Any) -> None:
            nonlocal received
            received += 1
            if received % ack_every == 0 or received >= target:
                await incoming.ack(multiple=True)
            if received >= target and not done.done():
                done.set_result(None)

        await queue.consume(on_message)

        async def run(n: int) -> None:
            for start in range(0, n, WINDOW):
                await asyncio.gather(
                    *[
                        exchange.publish(message, routing_key=queue.name, mandatory=False)
                        for _ in range(min(WINDOW, n - start))
                    ]
                )
            await done

        target = min(WARMUP, messages)
        await asyncio.wait_for(run(target), 60)

        received, target, done = 0, messages, loop.create_future()
        watch = Stopwatch()
        watch.start()
        await asyncio.wait_for(run(messages), timeout_for(messages, slowest_rate=100))
        watch.stop()
        await asyncio.sleep(0.1)  # a duplicate would show up now
        check(received == messages, f"aio-pika consumed {received:,}, published {messages:,}")
    return {
        "msgs_per_s": rate(messages, watch.wall),
        "messages": messages,
        **watch.figures(messages),
        "size": SIZE,
        "prefetch": PREFETCH,
        "window": WINDOW,
        "aio_pika_version": version("aio-pika"),
    }
