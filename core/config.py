"""An agent's settings: `AgentConfig`, and `agent_config()` which takes what users pass.

Agents take an `AgentConfig`, or a plain mapping of its field names (the original
munggoggo's `Core(identity, config={...})` spelling); anything else is refused with an
error that names what is accepted, before the agent touches the broker.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .batching import Batching, batching_setting
from .delays import retry_delays
from .durable import QUORUM, normalize_queue_type

# Keys of the original munggoggo's config dict that have no field here, and why.
RETIRED_KEYS = {
    "update_peer_interval": "peers are found on demand: `await agent.peers()` asks the mesh",
}


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one agent; every field has a default.

    Frozen: make a changed copy with `dataclasses.replace(config, prefetch=64)`. Agents also
    take a mapping of these field names (`AgentConfig.from_mapping`).

    Attributes:
        prefetch: per behaviour queue consumer: bounds each behaviour's mailbox.
        prefetch_budget: shared by all consuming behaviours of the agent.
        inbox_prefetch: the inbox consumer's prefetch.
        inbox_expires_ms: how long the inbox (a durable queue) outlives its consumer: what
            is sent to an agent during a connection blip or a restart waits that long.
        max_redeliveries: failed handling attempts before a message is dead-lettered.
        retry_delays: seconds a failed message waits (in the broker) before each retry;
            empty: immediate retries, up to `max_redeliveries`.
        rpc_timeout: seconds `call()` waits for a reply when it is given no timeout.
        unreachable_grace: seconds after this agent's connection recovered during which a
            call to an agent without an inbox fails as unreachable (-32005, retry: it may
            still be reconnecting) rather than as unknown (-32001).
        drain_timeout: grace, in seconds, for in-flight work when stopping.
        trace_size: messages kept for the `traces` control method; 0 turns it off.
        behaviour_queue_expires_ms: how long a behaviour queue outlives its last consumer.
        queue_type: "transient" (None and "classic" mean the same) or "quorum".
        metrics: time steps, RPCs and (sampled) confirms; counters are always kept.
        presence: announce the agent's start and stop on `munggoggo.fanout`.
        presence_interval: seconds between the agent's repeated announcements; an agent
            silent for 3 of its intervals is reported stopped. None: start and stop only.
        max_concurrent_calls: exposed calls the agent runs at once (None: no limit); the
            others wait, unacked, in the order they came.
        batching: micro-batching of `publish()` (a `Batching`; None: off, the default).

    Raises:
        ValueError: `max_concurrent_calls` neither None nor a positive int, a
            `presence_interval` that is not positive, or a `batching` that is no
            `Batching` (nor a dict of its fields, True or None).
    """

    prefetch: int = 256
    """Prefetch of each behaviour queue's consumer: the most messages a behaviour holds
    unsettled (its mailbox and the step's messages). `Behaviour(prefetch=...)` overrides it
    for one behaviour."""
    prefetch_budget: int = 4096
    """Prefetch shared by all consuming behaviours of the agent: each consumer gets an
    equal share of it (at least 16), capped by its own `prefetch`."""
    inbox_prefetch: int = 256
    """Prefetch of the inbox consumer (direct messages, RPC requests and replies)."""
    inbox_expires_ms: int | None = 60_000
    """Milliseconds the inbox (a durable queue) outlives its consumer: what is sent to the
    agent during a connection blip or a restart waits that long. None: it never expires."""
    max_redeliveries: int = 3
    """Failed handling attempts (retries) before a message is dead-lettered to
    `munggoggo.dlx`. With `retry_delays`, their count decides instead."""
    retry_delays: tuple[float, ...] = ()
    """Seconds a failed message waits before each retry, in turn: `(0.5, 2.0, 10.0)`
    retries it 0.5 s after its first failure, 2 s after its second, 10 s after its third,
    and dead-letters it when it fails a fourth time. The waiting is done in the broker
    (a delay queue per delay, core/delays.py), so it survives the agent's restart; a delay
    of 0 retries at once. Empty (the default): failed messages are retried at once, up to
    `max_redeliveries` times."""
    rpc_timeout: float = 5.0
    """Seconds `call()` waits for a reply when it is given no `timeout`."""
    unreachable_grace: float = 15.0
    """Seconds after this agent's connection recovered during which a call to an agent
    without an inbox fails as unreachable (-32005, `AgentUnreachable`: retry, it may still be
    reconnecting) rather than as an unknown agent (-32001)."""
    drain_timeout: float = 10.0
    """Seconds of grace for in-flight work when the agent stops: each behaviour's current
    step, outstanding publisher confirms, cancelling consumers."""
    trace_size: int = 1000
    """Messages in and out kept for the `traces` control method; 0 turns tracing off."""
    # A behaviour queue outlives its agent (a successor picks up what was left), then
    # expires unused; MUNGGOGGO_QUEUE_EXPIRES_MS changes the default (the test suite
    # shortens it so test runs do not leave queues behind on a shared broker).
    behaviour_queue_expires_ms: int | None = field(
        default_factory=lambda: int(os.environ.get("MUNGGOGGO_QUEUE_EXPIRES_MS", 24 * 3600 * 1000))
    )
    """Milliseconds a behaviour queue outlives its last consumer (default a day, or
    `MUNGGOGGO_QUEUE_EXPIRES_MS`): a successor picks up what was left. None: never."""
    # Durable mode is "quorum": quorum behaviour queues and persistent messages
    # (core/durable.py, docs/durable.md). MUNGGOGGO_QUEUE_TYPE changes the default
    # (`munggoggo run --queue-type` sets it).
    queue_type: str | None = field(
        default_factory=lambda: os.environ.get("MUNGGOGGO_QUEUE_TYPE") or "transient"
    )
    """"transient" (the default; None and "classic" mean the same) or "quorum" (durable
    mode: quorum behaviour queues, persistent messages; docs/durable.md). The default comes
    from `MUNGGOGGO_QUEUE_TYPE` when set; after construction it is always one of the two."""
    metrics: bool = True
    """Time steps, RPCs and (sampled) publisher confirms for the Prometheus histograms;
    counters are kept either way."""
    presence: bool = True
    """Announce the agent's start and stop (and that it still runs, every
    `presence_interval`) on `munggoggo.fanout`, kind `presence` (docs/how-to/presence.md).
    False: the agent only listens; its `on_presence` still hears the others."""
    presence_interval: float | None = 30.0
    """Seconds between the agent's repeated presence announcements. The others report it
    stopped after 3 intervals of silence (sooner when its inbox is gone or unconsumed after
    1.5). Each announcement reaches every agent: 100 agents at 30 s are ~330 deliveries a
    second mesh-wide. None: it announces its start and stop only, and a crash of it goes
    unnoticed."""
    max_concurrent_calls: int | None = None
    """Exposed calls (RPC requests) the agent runs at once; None (the default): no limit.
    The others wait unacked, in the order they came, within `inbox_prefetch` (beyond it
    they wait in the inbox queue), and a waiting call whose deadline passes is never
    started. Control requests (`peers()`' broadcast `describe`) are not counted."""
    batching: Batching | None = None
    """Micro-batching of `publish()`: messages published to one routing key within
    `Batching.linger` travel as one AMQP message, cutting the broker's work per message
    (docs/performance.md, "Micro-batching"). None (the default): every message goes alone.
    A mapping of `Batching`'s fields (from JSON or YAML) and True (`Batching()`) are taken
    too. `Behaviour.batching` overrides it per behaviour."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "queue_type", normalize_queue_type(self.queue_type))
        # A list from a mapping (JSON, YAML) is as good as a tuple; frozen: set once here.
        object.__setattr__(self, "retry_delays", retry_delays(self.retry_delays))
        object.__setattr__(self, "batching", batching_setting(self.batching))
        interval = self.presence_interval
        if interval is not None and not interval > 0:
            raise ValueError(f"presence_interval must be > 0 seconds or None, got {interval!r}")
        limit = self.max_concurrent_calls
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ValueError(f"max_concurrent_calls must be None or an int >= 1, got {limit!r}")

    @property
    def durable(self) -> bool:
        """Durable mode: quorum behaviour queues, persistent messages."""
        return self.queue_type == QUORUM

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> AgentConfig:
        """An AgentConfig from a mapping of field names (any case: `PREFETCH` or
        `prefetch`), the rest at their defaults.

        Args:
            settings: field name -> value.

        Returns:
            The config.

        Raises:
            ValueError: a key that is no field (the message lists the fields).
            TypeError: a key that is not a string.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in settings.items():
            if not isinstance(key, str):
                raise TypeError(f"agent config keys are field names (str), got {key!r}")
            name = key.lower()
            if name not in names:
                why = RETIRED_KEYS.get(name)
                hint = f" ({why})" if why else ""
                raise ValueError(
                    f"unknown agent config key {key!r}{hint}; accepted keys (any case): "
                    + ", ".join(names)
                )
            values[name] = value
        return cls(**values)


def agent_config(config: AgentConfig | Mapping[str, Any] | None) -> AgentConfig:
    """The AgentConfig for what an agent was given: itself, a mapping of field names
    (`AgentConfig.from_mapping`), or None for the defaults.

    Args:
        config: what the agent was given.

    Returns:
        The config.

    Raises:
        TypeError: anything else (the message names what is accepted).
        ValueError: a mapping with a key that is no field.
    """
    if config is None:
        return AgentConfig()
    if isinstance(config, AgentConfig):
        return config
    if isinstance(config, Mapping):
        return AgentConfig.from_mapping(config)
    raise TypeError(
        "agent config must be an AgentConfig or a dict of its fields "
        f"(for example {{'prefetch': 64}}), got {type(config).__name__}"
    )
