"""Scenario `aio_pika_rpc`: aio-pika's RPC pattern (`aio_pika.patterns.RPC`), sequential.

The pattern as its documentation shows it: a server connection registers `echo` with
`RPC.create(channel)` + `rpc.register(...)`; a client connection calls
`await rpc.call(name, kwargs={"x": i})` one call at a time (default channels, so calls are
published with confirms, and its default pickle serializer). Each call is timed with
perf_counter_ns into a preallocated list: `p50_us` / `p99_us`, the yardstick of the target
"rpc p50 <= 0.5 x aio-pika's RPC pattern p50". Every result is checked.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from ...common import percentiles_us, rate
from ...mesh import run_id

DEFAULT_MESSAGES = 2000  # sequential calls
WARMUP = 200


async def echo(*, x: int) -> int:
    return x


async def measure(url: str, messages: int) -> dict[str, Any]:
    import aio_pika
    from aio_pika.patterns import RPC

    method = f"bench-echo-{run_id()}"
    server_conn = await aio_pika.connect(url)
    async with server_conn:
        # Exclusive result queues: the pattern's default (non-durable, auto-delete) is a
        # queue RabbitMQ 4.3 refuses.
        server = await RPC.create(await server_conn.channel(), exclusive=True)
        # Durable: RabbitMQ 4.3 refuses a non-durable, non-exclusive queue (the pattern's
        # default); auto-delete still removes it after the run.
        await server.register(method, echo, durable=True, auto_delete=True)
        client_conn = await aio_pika.connect(url)
        async with client_conn:
            client = await RPC.create(await client_conn.channel(), exclusive=True)
            call = client.call
            for i in range(WARMUP):
                if await call(method, kwargs={"x": i}) != i:
                    raise RuntimeError("echo returned a different value")
            samples = [0] * messages
            perf = time.perf_counter_ns
            for i in range(messages):
                t0 = perf()
                result = await call(method, kwargs={"x": i})
                samples[i] = perf() - t0
                if result != i:
                    raise RuntimeError(f"echo({i}) returned {result!r}")
            await client.close()
        await server.close()
    p50, p99 = percentiles_us(samples)
    return {
        "calls_per_s": rate(messages, sum(samples) / 1e9),
        "p50_us": p50,
        "p99_us": p99,
        "calls": messages,
        "aio_pika_version": version("aio-pika"),
    }
