"""Prometheus metrics of agents, cheap enough to leave on.

Nothing on the hot path touches prometheus_client: agents, behaviours and channels keep
plain ints and `FastHistogram`s (a bucket list and a bisect, no lock, no label lookup),
updated per batch where a batch exists, and `AgentCollector` turns them into metric
families when Prometheus scrapes. Confirm latency is sampled (one publish in 32): timing
every publish would cost more than the rest of the publish path. Step time is sampled too
(`StepHistogram`: one busy step in 16 is timed, every step is counted).

Names are prefixed `munggoggo_`; labels are agent, behaviour and kind where they apply.
Every family is exported from an agent's first scrape on, zero-valued for the label values
known by then (each behaviour and the inbox `""`, the message kinds, the exposed methods),
so dashboards show 0 rather than "No data" before the first event.
"""

from __future__ import annotations

import platform
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _speedups
from ._version import __version__
from .envelope import KIND_CONTROL, KIND_MESSAGE, KIND_RPC
from .extras import needs_extra
from .rpc import exposed_methods

if TYPE_CHECKING:
    from .agent import Agent

# Seconds. Wide enough for a local broker (tens of µs) and a slow handler (seconds).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
CONFIRM_SAMPLE_MASK = 31  # sample publishes whose seq & mask == 0
STEP_SAMPLE_EVERY = 16  # a behaviour times at least one step of work in this many
RPC_SERVED_OUTCOMES = ("ok", "error")  # the outcome label of munggoggo_rpc_served_total


class FastHistogram:
    """Cumulative-bucket histogram without locks (one event loop thread writes it).

    Args:
        bounds: the buckets' upper bounds, ascending (+Inf is added).

    Attributes:
        bounds: the buckets' upper bounds.
        counts: observations per bucket (not cumulative), the last one +Inf.
        sum: the sum of the observed values.
        count: how many values were observed.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one value.

        Args:
            value: the observation (seconds, for the latency histograms).
        """
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs as Prometheus wants them.

        Returns:
            One pair per bound, then ("+Inf", the total count).
        """
        out = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class StepHistogram:
    """The step-time histogram of a behaviour: every step counted, a sample of them timed.

    A behaviour reads the clock for one busy step in `STEP_SAMPLE_EVERY` (and for every
    step that starts with an empty mailbox: it reads the clock anyway); the other steps
    only add to `unsampled`. A timed step that the sampling chose stands for itself and
    for the untimed steps counted since the previous such step: it adds that weight
    (1 + `unsampled`) to its bucket and its duration times that weight to the sum. A step
    timed only because it started with an empty mailbox adds itself alone. Nothing is
    rescaled when read, so every exported series only grows; `count` is exact, and the
    buckets and the sum are an estimate of every step's time (docs/decisions.md).

    Args:
        bounds: the buckets' upper bounds, ascending (+Inf is added).

    Attributes:
        bounds: the buckets' upper bounds.
        counts: steps per bucket, weighted (not cumulative), the last one +Inf.
        sum: the estimated total time of the steps in the buckets, in seconds.
        sampled: how many steps were timed.
        unsampled: the untimed steps counted since the last timed step that stands for
            them; they are in `count` and the +Inf bucket, and go into a bucket with it.
    """

    __slots__ = ("_weighed", "bounds", "counts", "sampled", "sum", "unsampled")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.sampled = 0
        self.unsampled = 0
        self._weighed = 0  # steps in `counts`: the timed ones and those they stand for

    def observe(self, value: float, *, stands_for_unsampled: bool = True) -> None:
        """Count one timed step, with the untimed steps it stands for.

        Args:
            value: its duration, in seconds (a negative one counts as 0.0: the sum only
                grows).
            stands_for_unsampled: True for a step the sampling chose: it also stands for
                the `unsampled` steps, which it takes into its bucket. False for a step
                timed for another reason (it started with an empty mailbox): it counts
                for itself alone, so steps that differ from the busy ones do not stand for
                them.
        """
        weight = 1
        if stands_for_unsampled:
            weight += self.unsampled
            self.unsampled = 0
        self.counts[bisect_left(self.bounds, value)] += weight
        if value > 0.0:
            self.sum += value * weight
        self.sampled += 1
        self._weighed += weight

    @property
    def count(self) -> int:
        """How many steps were counted, timed or not."""
        return self._weighed + self.unsampled

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs as Prometheus wants them. Each only grows from one
        call to the next; the untimed steps not yet stood for are only in +Inf.

        Returns:
            One pair per bound, then ("+Inf", the total count).
        """
        out = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", self._weighed + self.unsampled))
        return out


class AgentCollector:
    """A prometheus_client collector that reads every live agent's stats at scrape time."""

    def __init__(self) -> None:
        self._agents: weakref.WeakSet[Agent] = weakref.WeakSet()

    def add(self, agent: Agent) -> None:
        """Export an agent's stats (agents add themselves when they start).

        Args:
            agent: the agent; held weakly.
        """
        self._agents.add(agent)

    def remove(self, agent: Agent) -> None:
        """Stop exporting an agent's stats (agents remove themselves when they stop).

        Args:
            agent: the agent.
        """
        self._agents.discard(agent)

    def describe(self) -> list[Any]:
        """Nothing: the families are built at collect time (prometheus_client's API).

        Returns:
            An empty list.
        """
        return []  # families are built at collect time; no fixed description

    def collect(self) -> Iterator[Any]:
        """The metric families of every live agent (prometheus_client's API).

        Yields:
            `munggoggo_build_info`, then one family per metric, labelled by agent.
        """
        with needs_extra("metrics", "munggoggo.metrics"):
            from prometheus_client.core import (
                CounterMetricFamily,
                GaugeMetricFamily,
                HistogramMetricFamily,
            )

        yield build_info_family()

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return CounterMetricFamily(f"munggoggo_{name}", doc, labels=labels)

        published = counter(
            "messages_published", "Messages published", ["agent", "behaviour", "kind"]
        )
        consumed = counter(
            "messages_consumed", "Messages delivered to the agent", ["agent", "behaviour", "kind"]
        )
        acked = counter("messages_acked", "Messages acked after handling", ["agent", "behaviour"])
        nacked = counter("messages_nacked", "Messages nacked or requeued", ["agent", "behaviour"])
        redelivered = counter(
            "messages_redelivered",
            "Messages delivered again: flagged redelivered by the broker, or retried after a"
            " failed step",
            ["agent", "behaviour"],
        )
        batches = counter(
            "batches_received",
            "Batches received (AMQP messages carrying several messages, each counted as consumed)",
            ["agent", "behaviour"],
        )
        dead = counter(
            "messages_dead_lettered", "Messages sent to munggoggo.dlx", ["agent", "behaviour"]
        )
        batches_published = counter(
            "batches_published",
            "AMQP messages carrying batches of published messages (AgentConfig.batching)",
            ["agent"],
        )
        returned = counter(
            "messages_returned", "Publishes the broker returned as unroutable", ["agent"]
        )
        failures = counter(
            "behaviour_failures", "Behaviour steps that raised", ["agent", "behaviour"]
        )
        reconnects = counter("reconnects", "Connection recoveries", ["agent"])
        cancels = counter(
            "consumer_cancels",
            "Consumers the broker cancelled (queue deleted, not restorable): each is"
            " consumed again",
            ["agent", "behaviour"],
        )
        rpc_served = counter("rpc_served", "RPC requests served", ["agent", "method", "outcome"])
        mailbox = GaugeMetricFamily(
            "munggoggo_mailbox_depth",
            "Messages waiting in a mailbox",
            labels=["agent", "behaviour"],
        )
        inflight = GaugeMetricFamily(
            "munggoggo_inflight_deliveries",
            "Messages received and not yet settled",
            labels=["agent", "behaviour"],
        )
        connected = GaugeMetricFamily(
            "munggoggo_connection_up", "1 when the broker connection is open", labels=["agent"]
        )
        unconfirmed = GaugeMetricFamily(
            "munggoggo_unconfirmed_publishes",
            "Publishes awaiting a broker confirm",
            labels=["agent"],
        )
        confirm = HistogramMetricFamily(
            "munggoggo_publish_confirm_seconds",
            "Publish to broker confirm (sampled 1 in 32)",
            labels=["agent"],
        )
        step = HistogramMetricFamily(
            "munggoggo_behaviour_step_seconds",
            "Behaviour step duration without the wait for mail in receive(); a step whose"
            " receive() waited and got nothing is not counted",
            labels=["agent", "behaviour"],
        )
        rpc_client = HistogramMetricFamily(
            "munggoggo_rpc_client_seconds",
            "RPC call latency at the caller",
            labels=["agent", "method", "outcome"],
        )
        rpc_server = HistogramMetricFamily(
            "munggoggo_rpc_server_seconds",
            "RPC method duration at the callee",
            labels=["agent", "method"],
        )

        for agent in list(self._agents):
            a = agent.identity
            stats = agent.stats
            # Every series whose labels are known now is exported from the start, at 0
            # until its first event: a dashboard shows 0, not "No data", and rate() has a
            # starting point (Prometheus' instrumentation guidance).
            behaviours = ["", *(b.short_name for b in agent.behaviours.values())]
            methods = list(exposed_methods(type(agent)))
            for (behaviour, kind), n in _with_zeros(
                stats.published, [(b, KIND_MESSAGE) for b in behaviours]
            ):
                published.add_metric([a, behaviour, kind], n)
            inbox_kinds = [("", kind) for kind in (KIND_MESSAGE, KIND_RPC, KIND_CONTROL)]
            for (behaviour, kind), n in _with_zeros(
                stats.consumed, [*inbox_kinds, *((b, KIND_MESSAGE) for b in behaviours[1:])]
            ):
                consumed.add_metric([a, behaviour, kind], n)
            for behaviour, n in _with_zeros(stats.redelivered, behaviours):
                redelivered.add_metric([a, behaviour], n)
            for behaviour, n in _with_zeros(stats.batches_received, behaviours):
                batches.add_metric([a, behaviour], n)
            for behaviour, n in _with_zeros(stats.dead_lettered, behaviours):
                dead.add_metric([a, behaviour], n)
            returned.add_metric([a], stats.returned)
            batches_published.add_metric([a], stats.batches_published)
            for behaviour, n in _with_zeros(stats.consumer_cancels, behaviours):
                cancels.add_metric([a, behaviour], n)
            for (method, outcome), n in _with_zeros(
                stats.rpc_served, [(m, o) for m in methods for o in RPC_SERVED_OUTCOMES]
            ):
                rpc_served.add_metric([a, method, outcome], n)
            for behaviour, channel in agent.settling_channels():
                acked.add_metric([a, behaviour], channel.acked)
                nacked.add_metric([a, behaviour], channel.nacked)
            for b in agent.behaviours.values():
                mailbox.add_metric([a, b.short_name], b.mailbox_size)
                inflight.add_metric([a, b.short_name], b.mailbox_size + b.inflight_size)
                failures.add_metric([a, b.short_name], b.failed_steps)
                _add_histogram(step, [a, b.short_name], b.step_seconds)
            conn = agent.connection
            reconnects.add_metric([a], getattr(conn, "reconnects", 0))
            connected.add_metric([a], 1.0 if conn is not None and conn.is_open else 0.0)
            pub = agent.publish_channel
            unconfirmed.add_metric([a], pub.unconfirmed if pub is not None else 0)
            _add_histogram(confirm, [a], getattr(pub, "confirm_seconds", _NO_EVENTS))
            if stats.rpc_client:
                for (method, outcome), hist in stats.rpc_client.items():
                    _add_histogram(rpc_client, [a, method, outcome], hist)
            else:
                # The methods an agent will call are unknown until it calls one: until
                # then one zero series without method and outcome stands in for them.
                _add_histogram(rpc_client, [a, "", ""], _NO_EVENTS)
            for method, hist in _with_zeros(stats.rpc_server, methods, _NO_EVENTS):
                _add_histogram(rpc_server, [a, method], hist)
        yield batches_published
        yield from (
            published, consumed, acked, nacked, redelivered, batches, dead, returned, failures,
            reconnects, cancels, rpc_served, mailbox, inflight, connected, unconfirmed, confirm,
            step, rpc_client, rpc_server,
        )  # fmt: skip


def build_info_family() -> Any:
    """`munggoggo_build_info`: version, Python and whether the compiled speedups loaded.

    Returns:
        The info metric family.
    """
    with needs_extra("metrics", "munggoggo.metrics"):
        from prometheus_client.core import InfoMetricFamily

    info = InfoMetricFamily("munggoggo_build", "munggoggo build information")
    info.add_metric(
        [],
        {
            "version": __version__,
            "python": platform.python_version(),
            "extensions": str(_speedups.USING_EXTENSIONS).lower(),
        },
    )
    return info


def _add_histogram(family: Any, labels: list[str], hist: FastHistogram | StepHistogram) -> None:
    family.add_metric(labels, hist.buckets(), hist.sum)


def _with_zeros(
    table: dict[Any, Any], known: Iterable[Any], zero: Any = 0
) -> list[tuple[Any, Any]]:
    """`table`'s items plus `zero` for every key in `known` that has no entry yet."""
    items = list(table.items())
    items.extend((key, zero) for key in dict.fromkeys(known) if key not in table)
    return items


class AgentStats:
    """Plain counters an agent updates on its paths; read by AgentCollector."""

    __slots__ = (
        "batches_published",
        "batches_received",
        "consumed",
        "consumer_cancels",
        "dead_lettered",
        "published",
        "redelivered",
        "returned",
        "rpc_client",
        "rpc_served",
        "rpc_server",
    )

    def __init__(self) -> None:
        self.published: dict[tuple[str, str], int] = {}
        self.consumed: dict[tuple[str, str], int] = {}  # logical messages: batch items each
        self.batches_received: dict[str, int] = {}  # batches (core/batch_consume.py)
        self.redelivered: dict[str, int] = {}
        self.dead_lettered: dict[str, int] = {}
        self.consumer_cancels: dict[str, int] = {}  # behaviour short name, "" the inbox
        self.returned = 0
        # AMQP messages that carried batches of published messages (core/batching.py).
        self.batches_published = 0
        self.rpc_served: dict[tuple[str, str], int] = {}
        self.rpc_client: dict[tuple[str, str], FastHistogram] = {}
        self.rpc_server: dict[str, FastHistogram] = {}

    def count(self, table: dict[Any, int], key: Any, n: int = 1) -> None:
        """Add to a counter of one of the tables.

        Args:
            table: one of this object's counter tables (`published`, `consumed`, ...).
            key: the counter's label values.
            n: how much to add.
        """
        table[key] = table.get(key, 0) + n

    def rpc_client_hist(self, method: str, outcome: str) -> FastHistogram:
        """The call-latency histogram of a method and outcome, created on first use.

        Method names come from callers, so past 1000 series new ones share `_other`.

        Args:
            method: the method called.
            outcome: how the call ended.

        Returns:
            The histogram.
        """
        hist = self.rpc_client.get((method, outcome))
        if hist is None:
            if len(self.rpc_client) >= 1000:  # method names come from callers: stay bounded
                method = "_other"
                hist = self.rpc_client.get((method, outcome))
            if hist is None:
                hist = self.rpc_client[(method, outcome)] = FastHistogram()
        return hist

    def rpc_server_hist(self, method: str) -> FastHistogram:
        """The serving-time histogram of an exposed method, created on first use.

        Args:
            method: the exposed method.

        Returns:
            The histogram.
        """
        hist = self.rpc_server.get(method)
        if hist is None:
            hist = self.rpc_server[method] = FastHistogram()
        return hist


_NO_EVENTS = FastHistogram()  # never observed: the zero histogram of a series without events

COLLECTOR = AgentCollector()
_registered = False


def register() -> None:
    """Register the agent collector with prometheus_client's default registry (once)."""
    global _registered
    if _registered:
        return
    with needs_extra("metrics", "munggoggo.metrics"):
        from prometheus_client import REGISTRY

    REGISTRY.register(COLLECTOR)
    _registered = True


def serve_metrics(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve /metrics for this process from a daemon thread; a port in use is a clear
    error, not silence.

    Args:
        port: the TCP port (0: any free one).
        addr: the address to listen on.

    Returns:
        The server (`.shutdown()` stops it).

    Raises:
        MissingExtra: prometheus-client is not installed (the `metrics` extra).
        ValueError: a port outside 0-65535.
        OSError: the port cannot be bound (in use, not permitted).
    """
    with needs_extra("metrics", "munggoggo.metrics"):
        from prometheus_client import start_http_server

    if not 0 <= port <= 65535:
        raise ValueError(f"cannot serve metrics on port {port}: ports are 0-65535")
    register()
    try:
        server, _thread = start_http_server(port, addr=addr)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
    return server
