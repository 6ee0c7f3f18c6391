"""Settings and per-worker state of the gateway, shared by every handler.

Each granian worker builds one `GatewayState` in the ASGI lifespan: its own mesh client,
its own limits. Settings come from the environment (`MUNGGOGGO_GATEWAY_*`), which is how
the `munggoggo gateway` command reaches workers in other processes.

Handler contract (so the HTTP, WebSocket and dashboard modules stay independent):
    async def endpoint(scope, receive, send, state: GatewayState) -> None
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .mesh import Mesh

_PREFIX = "MUNGGOGGO_GATEWAY_"


@dataclass(frozen=True)
class GatewaySettings:
    url: str | None = None  # broker URL (None: MUNGGOGGO_URL or local RabbitMQ)
    call_timeout: float = 5.0  # seconds an RPC may take before 504 / -32000
    max_in_flight: int = 1024  # concurrent calls per worker before 503 / -32000
    max_body_bytes: int = 1_048_576  # request bodies above this get 413
    max_json_depth: int = 32  # nesting deeper than this is refused (400 / -32600)
    max_batch: int = 100  # JSON-RPC batch entries
    ws_buffer: int = 1000  # messages queued per WebSocket client before it drops
    ws_max_subscriptions: int = 100  # topic patterns per WebSocket client

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(_PREFIX + name.upper())
            if raw is None:
                continue
            kind = f.type if isinstance(f.type, type) else str(f.type)
            if kind in ("float", float):
                values[name] = float(raw)
            elif kind in ("int", int):
                values[name] = int(raw)
            else:
                values[name] = raw or None
        if "url" not in values and env.get("MUNGGOGGO_URL"):
            values["url"] = env["MUNGGOGGO_URL"]
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` return these settings (for workers)."""
        env = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is not None:
                env[_PREFIX + name.upper()] = str(value)
        return env


@dataclass
class GatewayState:
    """What one worker's handlers share."""

    settings: GatewaySettings
    mesh: Mesh
    started_at: float = field(default_factory=time.time)
    in_flight: int = 0  # calls currently waiting for an agent
    # Counters the metrics issue turns into Prometheus series; handlers increment them.
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n
