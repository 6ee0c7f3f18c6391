"""Settings and per-worker state of the gateway, shared by every handler.

Each granian worker builds one `GatewayState` in the ASGI lifespan: its own mesh client,
its own limits. Settings come from the environment (`MUNGGOGGO_GATEWAY_*`), which is how
the `munggoggo gateway` command reaches workers in other processes.

Handlers take the worker's `GatewayState` (their contracts, `Handler` and `Endpoint`, are
in gateway/types.py), so the HTTP, WebSocket and dashboard modules stay independent.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .guard import Guard
from .limits import BodyDeadlines
from .mesh import Mesh
from .metrics import GatewayMetrics

_PREFIX = "MUNGGOGGO_GATEWAY_"


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's settings; each is also the environment variable
    `MUNGGOGGO_GATEWAY_<NAME>` (`from_env`, `to_env`), and every one has a default.

    Attributes:
        url: the broker URL (None: `MUNGGOGGO_URL`, else the local RabbitMQ).
        call_timeout: seconds an RPC may take before 504 / -32000.
        max_in_flight: concurrent calls per worker before 503 / -32000.
        max_body_bytes: request bodies above this get 413.
        max_json_depth: JSON nested deeper than this is refused (400 / -32600).
        max_batch: entries of a JSON-RPC batch, at most.
        body_timeout: seconds a request body may take to arrive before 408.
        ws_buffer: messages queued per WebSocket client before it is dropped.
        ws_buffer_bytes: bytes of frames queued per WebSocket client before it is dropped.
        ws_max_subscriptions: topic patterns per WebSocket client.
        publish_timeout: seconds a publish waits for room among the unconfirmed ones
            before it is refused (503 + Retry-After, or an error frame).
        publish_buffer: unconfirmed publishes a worker keeps, at most.
        publish_buffer_bytes: bytes of unconfirmed publishes a worker keeps, at most.
        tokens: accepted bearer tokens / API keys (none: the gateway is open to anyone).
        tokens_file: more tokens, one a line, read by each worker at start.
        metrics_public: serve /metrics without credentials.
        cors_origins: web page origins allowed cross-origin and on /ws ("*": any).
        allowed_hosts: host names browsers may reach the gateway by, besides the
            loopback names, the bind address and the CORS origins' hosts ("*": any).
        bind_address: where the server listens (`munggoggo gateway --host`).
        rate_limit: requests per second per client and worker (0: no limit).
        rate_burst: requests a client may make at once (0: twice the rate, at least 1).
        rate_limit_clients: clients tracked per worker before idle ones are evicted.
    """

    # Broker URL (None: MUNGGOGGO_URL or local RabbitMQ). repr=False: it may hold the
    # broker password; str(parse_url(url)) is the printable form.
    url: str | None = field(default=None, repr=False)
    call_timeout: float = 5.0  # seconds an RPC may take before 504 / -32000
    max_in_flight: int = 1024  # concurrent calls per worker before 503 / -32000
    max_body_bytes: int = 1_048_576  # request bodies above this get 413
    max_json_depth: int = 32  # nesting deeper than this is refused (400 / -32600)
    max_batch: int = 100  # JSON-RPC batch entries
    body_timeout: float = 30.0  # seconds a request body may take to arrive before 408
    ws_buffer: int = 1000  # messages queued per WebSocket client before it drops
    # Bytes of message frames queued per WebSocket client before it drops (a frame larger
    # than this still goes out when nothing else is queued).
    ws_buffer_bytes: int = 4_194_304
    ws_max_subscriptions: int = 100  # topic patterns per WebSocket client
    # Publishing (gateway/publisher.py): while the broker connection is down publishes are
    # refused at once; otherwise one waits at most publish_timeout seconds for room among
    # the published messages the broker has not confirmed yet (kept for a republish if the
    # connection drops: all a worker holds for the broker), at most publish_buffer of them
    # and publish_buffer_bytes bytes. Refused: 503 + Retry-After, or an error frame.
    publish_timeout: float = 1.0
    publish_buffer: int = 1024
    publish_buffer_bytes: int = 16_777_216
    # Security (gateway/guard.py; README "Securing the gateway"). No tokens: open to anyone.
    # repr=False: settings get logged and printed; the secrets must not be.
    tokens: tuple[str, ...] = field(default=(), repr=False)  # bearer tokens / API keys
    tokens_file: str | None = None  # more tokens, one a line, read by each worker at start
    metrics_public: bool = False  # serve /metrics without credentials (a scraper's network)
    cors_origins: tuple[str, ...] = ()  # page origins allowed cross-origin and on /ws; "*": any
    # Host names browsers may reach the gateway by, besides the loopback names, the bind
    # address and the CORS origins' hosts (gateway/hosts.py: DNS rebinding); "*": any.
    allowed_hosts: tuple[str, ...] = ()
    bind_address: str | None = None  # where the server listens (`munggoggo gateway --host`)
    rate_limit: float = 0.0  # requests per second per client and worker; 0: no limit
    rate_burst: int = 0  # requests a client may make at once; 0: twice the rate (at least 1)
    rate_limit_clients: int = 10_000  # clients tracked per worker before idle ones are evicted

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> GatewaySettings:
        """The settings the `MUNGGOGGO_GATEWAY_*` variables give, the rest at defaults.

        Args:
            environ: the environment (None: `os.environ`).

        Returns:
            The settings.

        Raises:
            ValueError: a variable whose value is not valid for its setting (the message
                names the variable).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = _parse(_PREFIX + name.upper(), raw, str(f.type))
        if "url" not in values and env.get("MUNGGOGGO_URL"):
            values["url"] = env["MUNGGOGGO_URL"]
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` return these settings (for workers).

        Returns:
            Variable name -> value.
        """
        env = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool):
                env[_PREFIX + name.upper()] = "1" if value else "0"
            elif isinstance(value, tuple):
                env[_PREFIX + name.upper()] = ",".join(value)
            elif value is not None:
                env[_PREFIX + name.upper()] = str(value)
        return env


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _parse(variable: str, raw: str, kind: str) -> Any:
    """One setting from its environment variable; ValueError naming the variable."""
    try:
        if kind == "float":
            value = float(raw)
            if not math.isfinite(value):  # nan and inf compare false: limits would vanish
                raise ValueError(raw)
            return value
        if kind == "int":
            return int(raw)
    except ValueError:
        raise ValueError(f"{variable} must be a number, got {raw!r}") from None
    if kind == "bool":
        word = raw.strip().lower()
        if word not in _TRUE and word not in _FALSE:
            raise ValueError(f"{variable} must be 1/0, true/false, yes/no or on/off")
        return word in _TRUE
    if kind.startswith("tuple"):
        # Comma-separated; a value may not contain commas (tokens are checked for it).
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw or None


@dataclass
class GatewayState:
    """What one worker's handlers share.

    Attributes:
        settings: the gateway's settings.
        mesh: the worker's window on the mesh (its client agent).
        started_at: when the worker started, in epoch seconds.
        in_flight: calls currently waiting for an agent.
        guard: origins, credentials and rate limit of this worker (built from the
            settings when None).
        counters: this worker's own event counts.
        metrics: the worker's Prometheus series.
        body_deadlines: the request-body deadlines (`settings.body_timeout`).
    """

    settings: GatewaySettings
    mesh: Mesh
    started_at: float = field(default_factory=time.time)
    in_flight: int = 0  # calls currently waiting for an agent
    # Origins, credentials and rate limit of this worker (gateway/guard.py); built from the
    # settings when None (tests and tools that make a state without the app's lifespan).
    guard: Guard = None  # type: ignore[assignment]
    # This worker's own event counts (the Prometheus series may sum several workers).
    counters: dict[str, int] = field(default_factory=dict)
    metrics: GatewayMetrics = field(init=False)
    body_deadlines: BodyDeadlines = field(init=False)  # settings.body_timeout, per worker

    def __post_init__(self) -> None:
        self.metrics = GatewayMetrics(self.settings.max_in_flight)
        self.body_deadlines = BodyDeadlines(self.settings.body_timeout)
        if self.guard is None:
            self.guard = Guard(self.settings)
        publisher = self.mesh.publisher  # None until the mesh started
        if publisher is not None:
            self.metrics.publish_limits(publisher.max_messages, publisher.max_bytes)
            publisher.on_change = self.metrics.publish_buffer

    def count(self, name: str, n: int = 1) -> None:
        """Count a gateway event.

        Args:
            name: one of gateway/metrics.py's EVENTS.
            n: how many.
        """
        self.metrics.event(name, n)
        self.counters[name] = self.counters.get(name, 0) + n

    def call_started(self) -> None:
        """Count a call waiting for an agent (`in_flight` and its gauge)."""
        self.in_flight += 1
        self.metrics.in_flight.inc()

    def call_finished(self) -> None:
        """Count a call that got its answer (or gave up)."""
        self.in_flight -= 1
        self.metrics.in_flight.dec()
