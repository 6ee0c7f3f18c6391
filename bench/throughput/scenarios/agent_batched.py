"""Scenario `agent_batched`: the `agent` pipe with micro-batching on the sending agent.

The same two agents, behaviours, messages and checks as `agent`, the sender with
`AgentConfig(batching=Batching())`: the Readings it publishes within a millisecond to the
topic travel as one AMQP message of up to 256 of them (docs/performance.md,
"Micro-batching"), and the receiving agent hands them to its behaviour one by one. Not
part of `all`; compare it with `agent` run right before or after.

`broker_cpu_us_per_msg` and `amqp_messages` show where the gain comes from: the broker
routes, stores and delivers per AMQP message.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from munggoggo import Batching

from ...mesh import CONFIG
from .agent import agent_pipe

DEFAULT_MESSAGES = 100_000
BATCHED = dataclasses.replace(CONFIG, batching=Batching())


async def measure(url: str, messages: int) -> dict[str, Any]:
    return {**await agent_pipe(url, messages, sender_config=BATCHED), "batching": "default"}
