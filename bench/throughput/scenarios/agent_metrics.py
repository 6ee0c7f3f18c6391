"""Scenario `agent_metrics`: the `agent` pipe with metrics on and off, in the same run.

Not part of `all`. Alternates five runs of each (on, off, on, off, ...) so drift in the
machine's load hits both alike, and reports the median of each and the slowdown. "On"
means `AgentConfig(metrics=True)` (step, RPC and sampled confirm timing) with the
Prometheus collector registered and scraped once a second during the run, more often than
a real Prometheus would; "off" means `metrics=False` and no scraping. The target is a
slowdown of at most 5%.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from munggoggo.metrics import COLLECTOR

from ...common import progress
from ...mesh import CONFIG
from .agent import agent_pipe

DEFAULT_MESSAGES = 100_000
ROUNDS = 5


async def measure(url: str, messages: int) -> dict[str, Any]:
    registry = CollectorRegistry()
    registry.register(COLLECTOR)
    scrapes = [0]

    async def scrape_every_second(_: Any) -> None:
        while True:
            await asyncio.sleep(1.0)
            generate_latest(registry)
            scrapes[0] += 1

    on_rates, off_rates = [], []
    for round_no in range(ROUNDS):
        on = await agent_pipe(
            url,
            messages,
            on_progress=scrape_every_second,
            config=dataclasses.replace(CONFIG, metrics=True),
        )
        off = await agent_pipe(url, messages, config=dataclasses.replace(CONFIG, metrics=False))
        on_rates.append(on["msgs_per_s"])
        off_rates.append(off["msgs_per_s"])
        progress(
            f"agent_metrics round {round_no + 1}: on {on['msgs_per_s']:,.0f}, "
            f"off {off['msgs_per_s']:,.0f} msgs/s"
        )
    on_median, off_median = statistics.median(on_rates), statistics.median(off_rates)
    return {
        "msgs_per_s": on_median,
        "metrics_on_msgs_per_s": on_median,
        "metrics_off_msgs_per_s": off_median,
        "slowdown_pct": round(100 * (off_median - on_median) / off_median, 2),
        "rounds_on": on_rates,
        "rounds_off": off_rates,
        "scrapes": scrapes[0],
        "messages": messages,
    }
