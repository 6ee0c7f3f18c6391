"""Scenario `agent`: one agent's behaviour publishes, another agent's behaviour receives.

Agent `bench-tx-*` publishes msgspec Structs (~100 B of JSON) to one topic from a loop in a
behaviour's run(); agent `bench-rx-*` has a cyclic behaviour bound to that topic whose step
receives one message and decodes it with `msg.decode(Reading)`; the runtime acks it. Both
agents live in this process, each with its own connection, on default settings (prefetch
256 per behaviour, 1024 unconfirmed publishes; no metrics). The clock runs from the first
publish to the last decoded message; the count and a checksum of the sequence numbers are
verified afterwards, as is that the broker confirmed every publish.

RSS is read after a warm-up (so codecs, caches and allocator pools exist) and after the
timed run: `rss_growth_mb` (MiB) is what the timed messages left behind.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from munggoggo import Agent

from ...common import rate, rss_mb
from ...mesh import BODY_BYTES, CONFIG, WARMUP, Receive, phase, run_id

DEFAULT_MESSAGES = 100_000


async def measure(url: str, messages: int) -> dict[str, Any]:
    return await agent_pipe(url, messages)


async def agent_pipe(
    url: str,
    messages: int,
    on_progress: Any = None,
    config: Any = CONFIG,
    sender_config: Any = None,
) -> dict[str, Any]:
    """The agent pipe; `on_progress` (a coroutine function taking the receiver) runs next
    to the timed phase when given (the soak scenario samples RSS with it); `sender_config`
    is the sending agent's config when it differs (default: `config`)."""
    rid = run_id()
    key = f"bench.agent.{rid}"
    receiver = Agent(f"bench-rx-{rid}", url=url, config=config)
    sender = Agent(f"bench-tx-{rid}", url=url, config=sender_config or config)
    await receiver.start()
    try:
        await sender.start()
        try:
            rx = await receiver.add_behaviour(Receive(receiver, binding_keys=[key]))
            await phase(sender, [rx], [key], min(WARMUP, messages), "Warmup", 60)
            gc.collect()
            rss_before = rss_mb()
            batches_before = sender.stats.batches_published
            sampler = None
            if on_progress is not None:
                sampler = asyncio.ensure_future(on_progress(rx))
            try:
                timed = await phase(sender, [rx], [key], messages, "Publish", 30 + messages / 500)
            finally:
                if sampler is not None:
                    sampler.cancel()
            gc.collect()
            rss_after = rss_mb()
            batches = sender.stats.batches_published - batches_before
        finally:
            await sender.stop()
    finally:
        await receiver.stop()
    # With batching (AgentConfig.batching): the AMQP messages that carried the timed ones.
    carried = {"amqp_messages": batches} if batches else {}
    return {
        "msgs_per_s": rate(messages, timed["wall"]),
        "messages": messages,
        **timed["figures"],
        **carried,
        "body_bytes": BODY_BYTES,
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 2),
    }
