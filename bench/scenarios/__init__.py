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
    "limit": "bench.scenarios.limit",
    "engine": "bench.scenarios.engine",
    "agent": "bench.scenarios.agent",
    "fanin": "bench.scenarios.fanin",
    "rpc_floor": "bench.scenarios.rpc_floor",
    "rpc": "bench.scenarios.rpc",
    "aiormq": "bench.scenarios.aiormq",
    "aio_pika": "bench.scenarios.aio_pika",
    "aio_pika_rpc": "bench.scenarios.aio_pika_rpc",
}

# Run only when asked for by name: too long for `all`.
EXTRA_SCENARIOS: dict[str, str] = {
    "agent_soak": "bench.scenarios.agent_soak",
    "agent_metrics": "bench.scenarios.agent_metrics",
    "agent_durable": "bench.scenarios.agent_durable",
}

ALL = list(SCENARIOS)


def module_name(scenario: str) -> str:
    return SCENARIOS.get(scenario) or EXTRA_SCENARIOS[scenario]


def names() -> list[str]:
    return [*SCENARIOS, *EXTRA_SCENARIOS]
