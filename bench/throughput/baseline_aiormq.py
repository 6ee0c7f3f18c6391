"""The aiormq baseline: the same pipe as the engine scenario, written the way aiormq is
used when speed matters.

A channel with publisher confirms; publishes go out as gathered batches of `window`
`basic_publish()` awaitables (each resolves on its confirm), so at most one window is in
flight; one shared Properties object (aiormq stamps a message_id on it once). The
consumer acks either every delivery (`each`) or with multiple=true every prefetch/4
deliveries and at the end (`multiple`, the faster one).
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

from ..common import Stopwatch, rate, timeout_for

ACK_MODES = ("multiple", "each")


async def pipe(
    url: str,
    body: bytes,
    messages: int,
    prefetch: int,
    window: int,
    ack_mode: str,
    warmup: int,
) -> dict[str, Any]:
    import aiormq
    from aiormq.abc import DeliveredMessage
    from pamqp import commands as spec

    loop = asyncio.get_running_loop()
    async with aiormq.connect(url) as conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.basic_qos(prefetch_count=prefetch)
        queue = (await ch.queue_declare("", exclusive=True)).queue
        props = spec.Basic.Properties(content_type="application/octet-stream", app_id="bench")
        ack_every = max(1, prefetch // 4)
        received = 0
        target = 0
        done: asyncio.Future[None] = loop.create_future()

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal received
            received += 1
            tag = message.delivery.delivery_tag
            if ack_mode == "each":
                await ch.basic_ack(tag)
            elif received % ack_every == 0 or received >= target:
                await ch.basic_ack(tag, multiple=True)
            if received >= target and not done.done():
                done.set_result(None)

        await ch.basic_consume(queue, on_message)

        async def run(n: int) -> None:
            for start in range(0, n, window):
                await asyncio.gather(
                    *[
                        ch.basic_publish(body, routing_key=queue, properties=props)
                        for _ in range(min(window, n - start))
                    ]
                )
            await done

        target = warmup
        await asyncio.wait_for(run(warmup), 60)

        received, target, done = 0, messages, loop.create_future()
        watch = Stopwatch()
        watch.start()
        await asyncio.wait_for(run(messages), timeout_for(messages, slowest_rate=100))
        watch.stop()
        if received != messages:
            raise RuntimeError(f"aiormq consumed {received} messages, published {messages}")
    return {
        "msgs_per_s": rate(messages, watch.wall),
        **watch.figures(messages),
        "version": version("aiormq"),
    }
