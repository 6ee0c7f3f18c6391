"""Prometheus series of the gateway, and its `GET /metrics` exposition.

Owns every `munggoggo_gateway_*` series: requests by route, method and status, a latency
histogram by route and method, calls in flight, WebSocket clients, the publish buffer
(messages and bytes awaiting the broker's confirms, and its bounds), and one counter per
gateway event (`state.count("ws_dropped")` -> `munggoggo_gateway_ws_dropped_total`).

Several granian workers are separate processes, so a scrape answered by one worker must
show all of them. When `PROMETHEUS_MULTIPROC_DIR` is set (`munggoggo gateway --workers N`
sets it for N > 1), prometheus_client keeps every value in a per-process file in that
directory and `render` sums the files; gauges say how to combine workers (`livesum`: live
workers only). Without it, values live in memory and a scrape shows the one process.

Label children are cached per (route, method, status): a request costs a dict lookup, a
counter increment and a histogram observation, no label resolution.

Every series is there from the worker's start: the event counters and gauges have no
labels, and `declare_routes` creates the request counter (status 200) and the latency
histogram of every route at 0, so dashboards show 0 rather than "No data" before the
first request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from munggoggo.extras import needs_extra
from munggoggo.metrics import LATENCY_BUCKETS, build_info_family

with needs_extra("gateway", "munggoggo.gateway"):
    from prometheus_client import (
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        multiprocess,
    )

if TYPE_CHECKING:
    from .types import GatewayState

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "munggoggo_gateway_"
UNMATCHED_ROUTE = "unmatched"  # paths without a route: never the raw path (unbounded)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Every name handlers pass to `GatewayState.count`; each becomes `<PREFIX><name>_total`.
EVENTS = {
    "jsonrpc_batches": "JSON-RPC batch requests",
    "jsonrpc_calls": "JSON-RPC calls (batch entries included)",
    "jsonrpc_errors": "JSON-RPC calls answered with an error",
    "rest_calls": "REST method calls",
    "published": "Messages published on topics through REST",
    "overloaded": "Calls refused because max_in_flight calls were waiting",
    "ws_connected": "WebSocket connections accepted",
    "ws_disconnected": "WebSocket connections closed",
    "ws_published": "Messages published by WebSocket clients",
    "ws_calls": "RPC calls made by WebSocket clients",
    "ws_messages_out": "Mesh messages written to WebSocket clients",
    "ws_dropped": "Messages dropped because a WebSocket client's buffer was full",
    "ws_errors": "Error frames sent to WebSocket clients",
    "publish_refused": "Publishes refused: broker connection down, or no room in time",
    "sent": "Direct messages sent to agents through REST",
    "broadcast": "Messages broadcast to every agent through REST",
    "dead_letters_requeued": "Dead letters requeued through REST",
    "dead_letters_purged": "Dead letters purged through REST",
}


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


class GatewayMetrics:
    """The series of one gateway worker (its own registry: several apps may share a
    process, in tests)."""

    def __init__(self, max_in_flight: int) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            PREFIX + "requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            PREFIX + "request_seconds",
            "HTTP request duration, from routing to the last byte handed to the server",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            PREFIX + "in_flight",
            "Calls waiting for an agent",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ws_clients = Gauge(
            PREFIX + "ws_clients",
            "Open WebSocket connections",
            registry=registry,
            multiprocess_mode="livesum",
        )
        max_gauge = Gauge(
            PREFIX + "max_in_flight",
            "Calls one worker lets wait for agents before answering 503",
            registry=registry,
            multiprocess_mode="livemax",
        )
        max_gauge.set(max_in_flight)
        self.publish_buffered = Gauge(
            PREFIX + "publish_buffered",
            "Messages published by the worker and not yet confirmed by the broker (kept "
            "for a republish while the connection is down)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.publish_buffered_bytes = Gauge(
            PREFIX + "publish_buffered_bytes",
            "Bytes of the messages in publish_buffered",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._publish_max = Gauge(
            PREFIX + "publish_buffer_max",
            "Messages publish_buffered may reach per worker before publishes wait (then 503)",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._publish_max_bytes = Gauge(
            PREFIX + "publish_buffer_max_bytes",
            "Bytes publish_buffered_bytes may reach per worker before publishes wait",
            registry=registry,
            multiprocess_mode="livemax",
        )
        started = Gauge(
            PREFIX + "start_time_seconds",
            "When the worker started (Unix time)",
            registry=registry,
            multiprocess_mode="liveall",
        )
        started.set(time.time())
        self._events = {
            name: Counter(PREFIX + name, doc, registry=registry) for name, doc in EVENTS.items()
        }
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def declare_routes(self, routes: Iterable[tuple[str, str]]) -> None:
        """Export every route's request series at 0 before its first request.

        Args:
            routes: (route template, method) pairs, the labels `observe_request` gets.
        """
        for route, method in routes:
            key = (route, method, 200)
            if key not in self._children:
                self._children[key] = self._label_children(route, method, 200)

    def publish_limits(self, messages: int, size: int) -> None:
        """Export the bounds of the worker's publish buffer."""
        self._publish_max.set(messages)
        self._publish_max_bytes.set(size)

    def publish_buffer(self, messages: int, size: int) -> None:
        """What the worker's publish buffer holds now (gateway/publisher.py)."""
        self.publish_buffered.set(messages)
        self.publish_buffered_bytes.set(size)

    def event(self, name: str, n: int = 1) -> None:
        self._events[name].inc(n)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = self._label_children(route, method, status)
        children[0].inc()
        children[1].observe(seconds)

    def _label_children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        if method not in _METHODS:
            method = "other"  # methods come from clients: keep the label set bounded
        counter = self.requests.labels(route=route, method=method, status=str(status))
        return counter, self.latency.labels(route=route, method=method)

    def render(self) -> bytes:
        """The exposition text: every worker's series under multiprocess mode, else ours."""
        directory = multiprocess_dir()
        if directory is None:
            registry = self.registry
        else:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
        text = generate_latest(registry)
        return text + generate_latest(_BuildInfo())

    def close(self) -> None:
        """This worker is going away: drop its live gauges from the shared files."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())


class _BuildInfo:
    """A registry-like object for `generate_latest` with just the build information."""

    def collect(self) -> Any:
        yield build_info_family()


def render(state: GatewayState) -> bytes:
    """This worker's metrics (all workers' in multiprocess mode) in the text format."""
    return state.metrics.render()
