"""Scenario `agent_durable`: the `agent` pipe in durable mode.

The same two agents, behaviours, messages and checks as `agent`, with
`AgentConfig(queue_type="quorum")`: the receiving behaviour's queue is a quorum queue (on
one node here, so the Raft log is written but not replicated) and every message is
published persistent. Not part of `all`; compare it with `agent` run right before or after
(docs/durable.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...mesh import CONFIG
from .agent import agent_pipe

DEFAULT_MESSAGES = 100_000
DURABLE = dataclasses.replace(CONFIG, queue_type="quorum")


async def measure(url: str, messages: int) -> dict[str, Any]:
    return {**await agent_pipe(url, messages, config=DURABLE), "queue_type": "quorum"}
