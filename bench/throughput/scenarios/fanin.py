"""Scenario `fanin`: one agent with 64 behaviours on distinct topics, one publisher.

Agent `bench-fanin-*` has 64 cyclic behaviours, behaviour i bound to topic `<prefix>.i`
(each its own queue and consumer on the agent's one connection). A behaviour of agent
`bench-fanout-*` publishes N Readings round robin over the 64 topics. msgs/s is the total
received (decoded and acked) by the 64 behaviours together; the per-behaviour counts and a
checksum of the sequence numbers are verified.
"""

from __future__ import annotations

from typing import Any

from munggoggo import Agent

from ...common import check, rate
from ...mesh import BODY_BYTES, CONFIG, WARMUP, Receive, phase, run_id

DEFAULT_MESSAGES = 100_000
BEHAVIOURS = 64


async def measure(url: str, messages: int) -> dict[str, Any]:
    rid = run_id()
    keys = [f"bench.fanin.{rid}.{i}" for i in range(BEHAVIOURS)]
    receiver = Agent(f"bench-fanin-{rid}", url=url, config=CONFIG)
    sender = Agent(f"bench-fanout-{rid}", url=url, config=CONFIG)
    await receiver.start()
    try:
        await sender.start()
        try:
            rxs = [
                await receiver.add_behaviour(
                    Receive(receiver, binding_keys=[key], name=f"Topic{i:02d}")
                )
                for i, key in enumerate(keys)
            ]
            warmup = max(BEHAVIOURS, min(WARMUP, messages))
            await phase(sender, rxs, keys, warmup, "Warmup", 60)
            for rx in rxs:
                rx.count = 0
            timed = await phase(sender, rxs, keys, messages, "Publish", 30 + messages / 500)
            for i, rx in enumerate(rxs):
                expected = messages // BEHAVIOURS + (1 if i < messages % BEHAVIOURS else 0)
                check(
                    rx.count == expected,
                    f"behaviour {rx.name} received {rx.count:,} messages, expected {expected:,}",
                )
        finally:
            await sender.stop()
    finally:
        await receiver.stop()
    return {
        "msgs_per_s": rate(messages, timed["wall"]),
        "messages": messages,
        **timed["figures"],
        "behaviours": BEHAVIOURS,
        "body_bytes": BODY_BYTES,
    }
