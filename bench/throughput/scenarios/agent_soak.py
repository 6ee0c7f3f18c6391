"""Scenario `agent_soak`: the `agent` pipe over many messages (1M by default), for memory.

Not part of `all` (it takes about a minute). Reports `rss_growth_mb`: RSS (MiB) after the
run minus RSS after the warm-up, both after a gc.collect(); the target is < 20 MB over 1M
messages. RSS is also sampled once a second during the run (`rss_peak_mb`, and
`rss_samples_mb` at each tenth of the run), with a progress line on stderr per tenth.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...common import progress, rss_mb
from .agent import agent_pipe

DEFAULT_MESSAGES = 1_000_000
TARGET_MB = 20


async def measure(url: str, messages: int) -> dict[str, Any]:
    samples: list[float] = []
    peak = [0.0]

    async def sample(rx: Any) -> None:
        tenth = max(1, messages // 10)
        next_mark = tenth
        while True:
            await asyncio.sleep(1.0)
            tally = rx.tally
            rss = rss_mb()
            peak[0] = max(peak[0], rss)
            if tally.received >= next_mark:
                samples.append(round(rss, 1))
                progress(
                    f"agent_soak: {tally.received:,} of {messages:,} received, RSS {rss:.1f} MiB"
                )
                next_mark = (tally.received // tenth + 1) * tenth

    result = await agent_pipe(url, messages, on_progress=sample)
    result["rss_peak_mb"] = round(max(peak[0], result["rss_after_mb"]), 1)
    result["rss_samples_mb"] = samples
    result["rss_target_mb"] = TARGET_MB
    return result
