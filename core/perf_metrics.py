"""`munggoggo bench --metrics-port`: a run's figures served to Prometheus while it goes.

The run's hot path does not change: producers and consumers keep counting into `RunStats`
(plain ints and `LatencyHistogram`s), and `BenchCollector` reads them when Prometheus
scrapes, from the HTTP server's thread. Reads there are of ints and of copies of lists and
dicts taken in one step, so a scrape never holds up the event loop nor trips over it.

Every series carries `run_id` (one per run, `--run-id` or generated) and `mode` (the run's mode),
so several bench instances scraped by one Prometheus, or runs one after the other, can be
told apart on a dashboard; the scrape target's own `instance` and `job` labels are added
by Prometheus. Latencies are Prometheus histograms in seconds with buckets from 10 µs to
10 s, converted at scrape time from the run's log-linear histograms (whose values are
within 0.8%, so a value within 0.8% of a bucket bound may count in the neighbour bucket).

`munggoggo_bench_lost` is a gauge, not a counter: while the run goes it counts the
messages skipped by a later one of the same producer that have not arrived (yet); such a
gap can still fill, so the figure can fall. Once the run is over (`finish()`) it is the
run's final loss, as the summary reports it.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

from .extras import needs_extra
from .perf_run import RunStats
from .perf_stats import LatencyHistogram

__all__ = [
    "LATENCY_BUCKETS_US",
    "BenchCollector",
    "BenchMetricsServer",
    "prometheus_buckets",
    "serve_bench_metrics",
]

LATENCY_BUCKETS_US = (
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
    250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
)  # fmt: skip
"""Upper bounds of the latency buckets, microseconds (exported in seconds): a local
broker's tens of µs up to a backlog's seconds."""

_LABELS = ["run_id", "mode"]
_COUNTERS = (
    ("published", "Messages published"),
    ("confirmed", "Publishes the broker confirmed"),
    ("nacked", "Publishes the broker nacked (or lost with their channel)"),
    ("returned", "Mandatory publishes returned unroutable"),
    ("consumed", "Messages received, duplicates included"),
    ("duplicates", "Messages received more than once"),
    ("out_of_order", "Messages a consumer got after a later one of the same producer"),
    ("untimed", "Messages received without a usable timestamp"),
)


def prometheus_buckets(
    hist: LatencyHistogram, bounds_us: tuple[int, ...] = LATENCY_BUCKETS_US
) -> tuple[list[tuple[str, float]], float]:
    """A latency histogram in Prometheus' form: cumulative buckets and sum, in seconds.

    Safe to call while another thread records into `hist`: it reads a copy of the counts
    and derives the total count from them, so the `+Inf` bucket and the count agree.

    Args:
        hist: microsecond values.
        bounds_us: the buckets' upper bounds, microseconds, ascending.

    Returns:
        ([(le, cumulative count), ..., ("+Inf", count)], sum of the values in seconds).
    """
    counts = list(hist.counts)
    per_bound = [0] * (len(bounds_us) + 1)
    for index, n in enumerate(counts):
        if n:
            per_bound[bisect_left(bounds_us, hist.value_of(index))] += n
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(bounds_us, per_bound, strict=False):
        running += n
        out.append((repr(bound / 1e6), running))
    out.append(("+Inf", running + per_bound[-1]))
    return out, hist.total / 1e6


class BenchCollector:
    """A prometheus_client collector that reads one run's `RunStats` at scrape time.

    Args:
        stats: the run's stats, filled by the run as it goes.
        run_id: the `run_id` label of every series.
        mode: the `mode` label (the bench mode: `queue`).
        options: the run's options, exported as the labels of `munggoggo_bench_run_info`.

    Attributes:
        stats: the stats read at each scrape.
        run_id: the `run_id` label.
        mode: the `mode` label.
        options: the run-info labels.
        finished: whether the run is over (set by `finish()`).
    """

    def __init__(
        self,
        stats: RunStats,
        run_id: str,
        mode: str = "queue",
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.stats = stats
        self.run_id = run_id
        self.mode = mode
        self.options = dict(options or {})
        self.finished = False
        self._lock = threading.Lock()  # scrapes may run in parallel server threads
        self._high: dict[str, int] = {}

    def finish(self) -> None:
        """Mark the run over: `lost` becomes the final loss and `running` 0."""
        self.finished = True

    def describe(self) -> list[Any]:
        """Nothing: the families are built at collect time (prometheus_client's API).

        Returns:
            An empty list.
        """
        return []

    def counts(self) -> dict[str, int]:
        """The counters' values now, never below what an earlier scrape exported.

        A counter that went down would read as a reset to Prometheus; the confirm count,
        exact only at the end, could otherwise dip between two samples.

        Returns:
            Counter name (without prefix and `_total`) -> value.
        """
        stats = self.stats
        now = {
            "published": stats.published,
            "confirmed": sum(list(stats.confirmed_by_producer.values())),
            "nacked": stats.nacked,
            "returned": stats.returned,
            "consumed": stats.consumed,
            "duplicates": 0,
            "out_of_order": sum(check.out_of_order for check in list(stats.order_checks)),
            "untimed": stats.untimed,
        }
        for tracker in list(stats.sequences.values()):
            for producer in list(tracker.producers.values()):
                now["duplicates"] += producer.duplicates
        with self._lock:
            for name, value in now.items():
                now[name] = self._high[name] = max(value, self._high.get(name, 0))
        return now

    def lost(self) -> int:
        """`munggoggo_bench_lost`: open gaps while running, the final loss when finished.

        Returns:
            The count.
        """
        if self.finished:
            return self.stats.lost()
        total = 0
        for tracker in list(self.stats.sequences.values()):
            for producer in list(tracker.producers.values()):
                total += sum(end - start for start, end in list(producer.gaps))
        return total

    def collect(self) -> Iterator[Any]:
        """The run's metric families (prometheus_client's API).

        Yields:
            `munggoggo_build_info`, `munggoggo_bench_run_info`, the counters, the `lost`,
            `running` and `elapsed_seconds` gauges, and the two latency histograms.

        Raises:
            MissingExtra: prometheus-client is not installed (the `metrics` extra).
        """
        with needs_extra("metrics", "munggoggo bench --metrics-port"):
            from prometheus_client.core import (
                CounterMetricFamily,
                GaugeMetricFamily,
                HistogramMetricFamily,
                InfoMetricFamily,
            )

        from .metrics import build_info_family

        labels = [self.run_id, self.mode]
        yield build_info_family()
        info = InfoMetricFamily("munggoggo_bench_run", "The bench run's options", labels=_LABELS)
        # The run's own labels stay theirs: an option of the same name is not repeated.
        info.add_metric(labels, {k: v for k, v in self.options.items() if k not in _LABELS})
        yield info
        values = self.counts()
        for name, doc in _COUNTERS:
            family = CounterMetricFamily(f"munggoggo_bench_{name}", doc, labels=_LABELS)
            family.add_metric(labels, values[name])
            yield family
        stats = self.stats
        gauges = (
            (
                "lost",
                "Messages missing: open gaps while running, the final loss after",
                self.lost(),
            ),
            ("running", "1 while the run goes, 0 once it is over", 0 if self.finished else 1),
            (
                "elapsed_seconds",
                "Seconds since publishing started",
                ((stats.ended or time.perf_counter()) - stats.started) if stats.started else 0.0,
            ),
        )
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(f"munggoggo_bench_{name}", doc, labels=_LABELS)
            gauge.add_metric(labels, value)
            yield gauge
        latency, confirm = stats.histograms_so_far()
        for name, doc, hist in (
            ("latency_seconds", "Consumer latency: publish to receive", latency),
            (
                "confirm_latency_seconds",
                "Publish to broker confirm (the first publish of each batch)",
                confirm,
            ),
        ):
            histogram = HistogramMetricFamily(f"munggoggo_bench_{name}", doc, labels=_LABELS)
            buckets, total = prometheus_buckets(hist)
            histogram.add_metric(labels, buckets, total)
            yield histogram


class BenchMetricsServer:
    """The `/metrics` HTTP server of one run (its own registry: nothing global).

    Args:
        server: the WSGI server prometheus_client started.
        collector: the run's collector.

    Attributes:
        collector: the run's collector.
        port: the TCP port it listens on.
    """

    def __init__(self, server: Any, collector: BenchCollector) -> None:
        self._server = server
        self.collector = collector
        self.port: int = server.server_port

    def close(self) -> None:
        """Mark the run finished, stop serving and free the port."""
        self.collector.finish()
        self._server.shutdown()
        self._server.server_close()


def serve_bench_metrics(
    port: int, collector: BenchCollector, addr: str = "0.0.0.0"
) -> BenchMetricsServer:
    """Serve a run's figures on `addr:port/metrics` from a daemon thread.

    Args:
        port: the TCP port (0: any free one).
        collector: the run's collector.
        addr: the address to listen on.

    Returns:
        The running server; `close()` it after the run.

    Raises:
        MissingExtra: prometheus-client is not installed (the `metrics` extra).
        ValueError: a port outside 0-65535.
        OSError: the port cannot be bound (in use, not permitted).
    """
    with needs_extra("metrics", "munggoggo bench --metrics-port"):
        from prometheus_client import CollectorRegistry, start_http_server

    if not 0 <= port <= 65535:
        raise ValueError(f"cannot serve metrics on port {port}: ports are 0-65535")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
    return BenchMetricsServer(server, collector)
