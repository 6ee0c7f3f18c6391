"""The control plane's memory: a trace store of the last N messages in and out.

Everything else of the control plane is plain RPC: status, behaviours, start/stop and traces
are `@expose`d methods of every Agent (core/control_plane.py), and peer discovery
(`Agent.peers`, core/rpc_client.py) is a broadcast of a `describe` request over
`munggoggo.fanout` whose replies are collected for a moment.
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
        # Keep the (shared, small) properties object; kind/sender/correlation id are read
        # from it only when someone asks for the traces.
        d = msg.delivery
        self._entries.append((time.time(), IN, d.properties, d.routing_key, len(d.body), behaviour))

    def record_out(
        self, kind: str, target: str, routing_key: str, size: int, correlation_id: str | None
    ) -> None:
        self._entries.append((time.time(), OUT, kind, target, routing_key, size, correlation_id))

    def __len__(self) -> int:
        return len(self._entries)

    def last(self, limit: int = 100) -> list[dict[str, Any]]:
        entries = list(self._entries)[-limit:] if limit > 0 else []
        return [_as_dict(e) for e in entries]


def _as_dict(entry: tuple[Any, ...]) -> dict[str, Any]:
    if entry[1] == IN:
        at, _, props, routing_key, size, behaviour = entry
        return {
            "time": at,
            "direction": IN,
            "kind": props.type or "message",
            "peer": props.app_id,
            "routing_key": routing_key,
            "size": size,
            "correlation_id": props.correlation_id,
            "behaviour": behaviour,
        }
    at, _, kind, target, routing_key, size, correlation_id = entry
    return {
        "time": at,
        "direction": OUT,
        "kind": kind,
        "peer": target,
        "routing_key": routing_key,
        "size": size,
        "correlation_id": correlation_id,
        "behaviour": None,
    }
