"""Scenario `engine`: the raw client pipe, munggoggo against aiormq in the same run.

One connection, one confirm channel, a fresh exclusive queue. The publisher and the
consumer run at the same time; the clock runs from the first publish until the last
message was consumed (and acked) and every publish was confirmed. Both clients get the
same body size, queue type, per-consumer prefetch and window of unconfirmed publishes,
and a short untimed warm-up.

The window is set explicitly because it decides the munggoggo figure: with the channel's
default (16384 unconfirmed) the publisher runs far ahead of its consumer, the whole run
ends up queued in the broker, and the broker then moves about half as many messages per
second. aiormq's rate barely moves with the window (300 to 1000 measured).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..common import (
    Stopwatch,
    broker_url,
    environment,
    non_negative_int,
    positive_int,
    progress,
    rate,
    run_loop,
    timeout_for,
    use_uvloop,
)
from . import baseline_aiormq

WARMUP = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=positive_int, default=200_000, help="munggoggo messages")
    parser.add_argument(
        "--aiormq-messages",
        type=non_negative_int,
        default=30_000,
        help="aiormq messages: fewer, it is several times slower (0 skips the baseline)",
    )
    parser.add_argument("--size", type=non_negative_int, default=100, help="body bytes")
    parser.add_argument("--prefetch", type=positive_int, default=1000, help="per-consumer prefetch")
    parser.add_argument(
        "--window",
        type=positive_int,
        default=500,
        help="unconfirmed publishes in flight, both clients (munggoggo: max_unconfirmed)",
    )
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=100,
        help="munggoggo publishes between two drain() calls",
    )
    parser.add_argument("--url", default=None, help="broker URL (default MUNGGOGGO_URL)")
    parser.add_argument(
        "--aiormq-ack",
        choices=baseline_aiormq.ACK_MODES,
        default="multiple",
        help="aiormq acks: 'multiple' (every prefetch/4 deliveries) or 'each'",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = broker_url(args.url)
    uvloop = use_uvloop(not args.no_uvloop)
    body = b"x" * args.size

    progress(
        f"munggoggo: {args.messages:,} x {args.size} B, prefetch {args.prefetch}, "
        f"window {args.window}"
    )
    ours = run_loop(
        lambda: munggoggo_pipe(
            url, body, args.messages, args.prefetch, args.window, min(args.batch, args.window)
        )
    )
    progress(f"munggoggo: {ours['msgs_per_s']:,.0f} msgs/s")

    result: dict[str, Any] = {
        "scenario": "engine",
        "msgs_per_s": ours["msgs_per_s"],
        "messages": args.messages,
        "seconds": ours["seconds"],
        "cpu_us_per_msg": ours["cpu_us_per_msg"],
        "size": args.size,
        "prefetch": args.prefetch,
        "window": args.window,
    }
    if args.aiormq_messages > 0:
        progress(f"aiormq: {args.aiormq_messages:,} x {args.size} B, acks {args.aiormq_ack}")
        theirs = run_loop(
            lambda: baseline_aiormq.pipe(
                url,
                body,
                args.aiormq_messages,
                args.prefetch,
                args.window,
                args.aiormq_ack,
                WARMUP,
            )
        )
        progress(f"aiormq: {theirs['msgs_per_s']:,.0f} msgs/s")
        result.update(
            aiormq_msgs_per_s=theirs["msgs_per_s"],
            aiormq_messages=args.aiormq_messages,
            aiormq_seconds=theirs["seconds"],
            aiormq_cpu_us_per_msg=theirs["cpu_us_per_msg"],
            aiormq_ack=args.aiormq_ack,
            aiormq_version=theirs["version"],
            ratio=round(ours["msgs_per_s"] / theirs["msgs_per_s"], 2),
        )
    result["broker"] = ours["broker"]
    result.update(environment(uvloop))
    return result


async def munggoggo_pipe(
    url: str, body: bytes, messages: int, prefetch: int, window: int, batch: int
) -> dict[str, Any]:
    from munggoggo._speedups import Properties, encode_properties
    from munggoggo.client import Connection

    loop = asyncio.get_running_loop()
    async with Connection(url) as conn:
        ch = await conn.channel(prefetch_count=prefetch)
        ch.max_unconfirmed = window
        queue = (await ch.queue_declare("", exclusive=True)).queue
        props = encode_properties(
            Properties(content_type="application/octet-stream", app_id="bench")
        )
        received = 0
        target = 0
        done: asyncio.Future[None] = loop.create_future()

        def on_batch(deliveries: list[Any]) -> None:
            nonlocal received
            ch.ack(deliveries[-1].delivery_tag, multiple=True)
            received += len(deliveries)
            if received >= target and not done.done():
                done.set_result(None)

        await ch.consume(queue, on_batch)

        async def pipe(n: int) -> None:
            publish = ch.publish
            for start in range(0, n, batch):
                for _ in range(min(batch, n - start)):
                    publish(body, "", queue, props)
                await ch.drain()
                # Let the tick's write go out and deliveries come in while we publish.
                await asyncio.sleep(0)
            await ch.wait_confirms()
            await done

        target = WARMUP
        await asyncio.wait_for(pipe(WARMUP), 30)

        received, target, done = 0, messages, loop.create_future()
        watch = Stopwatch()
        watch.start()
        await asyncio.wait_for(pipe(messages), timeout_for(messages))
        watch.stop()
        if received != messages:
            raise RuntimeError(f"munggoggo consumed {received} messages, published {messages}")
        await ch.close()
        version = conn.server_properties.get("version", "?")
    return {
        "msgs_per_s": rate(messages, watch.wall),
        **watch.figures(messages),
        "broker": f"RabbitMQ {version}",
    }
