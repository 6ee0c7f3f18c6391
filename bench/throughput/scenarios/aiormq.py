"""Scenario `aiormq`: the engine pipe on aiormq, the baseline for agent/aiormq.

Publish with confirms in gathered windows of 500, consume with acks (multiple=true every
prefetch/4 deliveries), 100 B bodies, prefetch 1000: `bench.throughput.baseline_aiormq.pipe`.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from .. import baseline_aiormq

DEFAULT_MESSAGES = 30_000
SIZE = 100
PREFETCH = 1000
WINDOW = 500
WARMUP = 2000


async def measure(url: str, messages: int) -> dict[str, Any]:
    result = await baseline_aiormq.pipe(
        url, b"x" * SIZE, messages, PREFETCH, WINDOW, "multiple", min(WARMUP, messages)
    )
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
        "aiormq_version": version("aiormq"),
    }
