"""The control plane's memory: a trace store of the last N messages in and out.

Everything else of the control plane is plain RPC: status, behaviours, start/stop and traces
are `@expose`d methods of every Agent (core/agent.py), and peer discovery is a broadcast of
a `describe` request over `munggoggo.fanout` whose replies are collected for a moment.
Recording is one tuple append per message; formatting happens only when someone asks.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Message

IN, OUT = "in", "out"


class TraceStore:
    """A ring buffer of recent traffic: (time, direction, kind, peer, routing key, size,
    correlation id, behaviour)."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._entries: deque[tuple[Any, ...]] = deque(maxlen=size or 1)

    def record_in(self, msg: Message, behaviour: str) -> None:
        self._entries.append(
            (
                time.time(),
                IN,
                msg.kind,
                msg.sender,
                msg.routing_key,
                len(msg.body),
                msg.correlation_id,
                behaviour,
            )
        )

    def record_out(
        self, kind: str, target: str, routing_key: str, size: int, correlation_id: str | None
    ) -> None:
        self._entries.append(
            (time.time(), OUT, kind, target, routing_key, size, correlation_id, None)
        )

    def __len__(self) -> int:
        return len(self._entries)

    def last(self, limit: int = 100) -> list[dict[str, Any]]:
        entries = list(self._entries)[-limit:] if limit > 0 else []
        keys = (
            "time",
            "direction",
            "kind",
            "peer",
            "routing_key",
            "size",
            "correlation_id",
            "behaviour",
        )
        return [dict(zip(keys, e, strict=True)) for e in entries]
