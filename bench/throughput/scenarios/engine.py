"""Scenario `engine`: munggoggo.client's pipe, publish with confirms + consume with acks.

The same pipe as `python -m bench engine` (one connection, one confirm channel, a fresh
exclusive queue, 100 B bodies, prefetch 1000, 500 unconfirmed publishes in flight,
drain() every 100 publishes), without the aiormq half: that one is scenario `aiormq`.
"""

from __future__ import annotations

from typing import Any

from ..engine import munggoggo_pipe

DEFAULT_MESSAGES = 200_000
SIZE = 100
PREFETCH = 1000
WINDOW = 500
BATCH = 100


async def measure(url: str, messages: int) -> dict[str, Any]:
    result = await munggoggo_pipe(url, b"x" * SIZE, messages, PREFETCH, WINDOW, BATCH)
    return {
        "msgs_per_s": result["msgs_per_s"],
        "messages": messages,
        "seconds": result["seconds"],
        "cpu_us_per_msg": result["cpu_us_per_msg"],
        **(
            {"broker_cpu_us_per_msg": result["broker_cpu_us_per_msg"]}
            if "broker_cpu_us_per_msg" in result
            else {}
        ),
        "size": SIZE,
        "prefetch": PREFETCH,
        "window": WINDOW,
    }
