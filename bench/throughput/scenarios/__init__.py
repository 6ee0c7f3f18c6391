"""The scenarios of `python -m bench throughput`, one module each.

A scenario module has `DEFAULT_MESSAGES` (sized so that it finishes well within 30 s on two
cores) and `async def measure(url, messages) -> dict`: one measurement in a fresh event loop,
returning the figures of one JSON object (without `scenario`, which the runner adds).
`measure` verifies its own counts and raises when they do not add up.
"""

from __future__ import annotations

# name -> module; `all` runs them in this order. The broker's ceiling first, then our
# client's layers from the bottom up, then the baselines.
SCENARIOS: dict[str, str] = {
    "limit": "bench.throughput.scenarios.limit",
    "engine": "bench.throughput.scenarios.engine",
    "agent": "bench.throughput.scenarios.agent",
    "fanin": "bench.throughput.scenarios.fanin",
    "rpc_floor": "bench.throughput.scenarios.rpc_floor",
    "rpc": "bench.throughput.scenarios.rpc",
    "aiormq": "bench.throughput.scenarios.aiormq",
    "aio_pika": "bench.throughput.scenarios.aio_pika",
    "aio_pika_rpc": "bench.throughput.scenarios.aio_pika_rpc",
}

# Run only when asked for by name: too long for `all`.
EXTRA_SCENARIOS: dict[str, str] = {
    "agent_soak": "bench.throughput.scenarios.agent_soak",
    "agent_metrics": "bench.throughput.scenarios.agent_metrics",
    "agent_durable": "bench.throughput.scenarios.agent_durable",
    "agent_batched": "bench.throughput.scenarios.agent_batched",
}

ALL = list(SCENARIOS)


def module_name(scenario: str) -> str:
    return SCENARIOS.get(scenario) or EXTRA_SCENARIOS[scenario]


def names() -> list[str]:
    return [*SCENARIOS, *EXTRA_SCENARIOS]
