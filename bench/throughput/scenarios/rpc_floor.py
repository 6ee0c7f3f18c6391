"""Scenario `rpc_floor`: the cheapest request/reply round trip through the broker.

A raw echo server and a raw client on munggoggo.client's low-level channels, each on its
own connection, no confirms, consumers with no_ack=true, properties encoded once. The
server's consumer callback publishes each request's body back to its `reply_to`; the
client's reply callback records the round trip and publishes the next request right there
(no Future, no Task, no await between calls). Measured twice, sequentially (one request in
flight), with the reply going

- to the client's exclusive, server-named queue (`exclusive_*` figures), and
- through RabbitMQ's direct reply-to, `amq.rabbitmq.reply-to` (`direct_reply_*`),

and the faster of the two (by p50) is the floor: `p50_us` / `p99_us`, `variant`. Every
reply is checked against its request's 8-byte sequence number.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from munggoggo._speedups import Properties, encode_properties

from ...common import check, percentiles_us, rate

DEFAULT_MESSAGES = 5000  # sequential round trips per variant
WARMUP = 200
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


async def measure(url: str, messages: int) -> dict[str, Any]:
    from munggoggo.client import Connection

    async with (
        Connection(url, reconnect=False) as server_conn,
        Connection(url, reconnect=False) as client_conn,
    ):
        server = await server_conn.channel(confirms=False)
        requests = (await server.queue_declare("", exclusive=True)).queue
        empty = encode_properties(None)
        publish_reply = server.publish

        def serve(batch: list[Any]) -> None:
            for d in batch:
                publish_reply(d.body, "", d.properties.reply_to, empty)

        await server.consume(requests, serve, no_ack=True)

        results = {}
        for variant in ("exclusive", "direct_reply"):
            client = await client_conn.channel(confirms=False)
            if variant == "exclusive":
                reply_queue = (await client.queue_declare("", exclusive=True)).queue
            else:
                reply_queue = DIRECT_REPLY_TO
            samples, wall = await round_trips(client, requests, reply_queue, WARMUP, messages)
            results[variant] = (samples, wall)
            await client.close()

    out: dict[str, Any] = {}
    best = None
    for variant, (samples, wall) in results.items():
        p50, p99 = percentiles_us(samples)
        out[f"{variant}_p50_us"] = p50
        out[f"{variant}_p99_us"] = p99
        out[f"{variant}_calls_per_s"] = rate(messages, wall)
        if best is None or p50 < out[f"{best}_p50_us"]:
            best = variant
    return {
        "calls_per_s": out[f"{best}_calls_per_s"],
        "p50_us": out[f"{best}_p50_us"],
        "p99_us": out[f"{best}_p99_us"],
        "variant": best,
        "calls": messages,
        **out,
    }


async def round_trips(
    ch: Any, requests: str, reply_queue: str, warmup: int, n: int
) -> tuple[list[int], float]:
    """`warmup` + `n` sequential round trips on one consumer; returns the nanoseconds of
    each of the last `n` and their wall seconds."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    props = encode_properties(Properties(reply_to=reply_queue))
    total = warmup + n
    bodies = [i.to_bytes(8, "big") for i in range(total)]
    samples = [0] * total
    perf = time.perf_counter_ns
    publish = ch.publish
    # [next index, send time, send time of the first timed trip, time of the last reply]
    state = [0, 0, 0, 0]

    def on_reply(batch: list[Any]) -> None:
        now = perf()
        i, sent = state[0], state[1]
        for d in batch:
            if i >= total or d.body != bodies[i]:
                if not done.done():
                    done.set_exception(
                        RuntimeError(f"reply {d.body!r} does not answer request {i}")
                    )
                return
            samples[i] = now - sent
            i += 1
        state[0] = i
        if i == total:
            state[3] = now
            done.set_result(None)
            return
        state[1] = sent = perf()
        if i == warmup:
            state[2] = sent
        publish(bodies[i], "", requests, props)

    tag = await ch.consume(reply_queue, on_reply, no_ack=True)
    state[1] = state[2] = perf()
    publish(bodies[0], "", requests, props)
    await asyncio.wait_for(done, 30 + total / 500)
    wall = (state[3] - state[2]) / 1e9
    await ch.cancel(tag)
    check(state[0] == total, f"{state[0]:,} of {total:,} replies received")
    return samples[warmup:], wall
