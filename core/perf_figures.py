"""The mergeable figures of a `munggoggo bench` run: what processes and instances exchange.

`figures_of` turns a run's `RunStats` into a JSON-able form; `merge_figures` adds several
up exactly (histograms bucket by bucket, sequence trackers by uniting the numbers each
saw, so loss and duplicates are counted over every consumer of a queue); `load_figures`
puts the result back into a `RunStats` for `cli_bench.summary`. Durations travel, not
instants: clocks of different hosts are never compared.
"""

from __future__ import annotations

from typing import Any

from .perf_run import BenchConfig, RunStats, queue_depths
from .perf_stats import LatencyHistogram, OrderCheck, SequenceTracker

__all__ = ["figures_of", "load_figures", "merge_figures", "remeasure_depths"]


def figures_of(stats: RunStats) -> dict[str, Any]:
    """A run's figures in the JSON-able form that `merge_figures` adds up exactly.

    Args:
        stats: a finished (or interrupted) run's stats.

    Returns:
        Counters, per-producer sent and confirmed counts and routes, the histograms and the
        sequence trackers (`to_dict` forms), and durations (publishing, consuming, CPU) in
        seconds: clocks of different hosts are not compared, only durations.
    """
    started = bool(stats.started)
    seconds = max(0.0, stats.ended - stats.started) if started else 0.0
    consume = max(seconds, stats.last_received - stats.started) if started else 0.0
    return {
        "started": started,
        "published": stats.published,
        "nacked": stats.nacked,
        "returned": stats.returned,
        "consumed": stats.consumed,
        "untimed": stats.untimed,
        "foreign": stats.foreign,
        "queue_depths": dict(stats.queue_depths),
        "out_of_order": sum(check.out_of_order for check in stats.order_checks),
        "confirmed_by_producer": {str(p): n for p, n in stats.confirmed_by_producer.items()},
        "sent_by_producer": {str(p): n for p, n in stats.sent_by_producer.items()},
        "routes": {str(p): list(q) for p, q in stats.routes.items()},
        "latency_us": stats.latency_us.to_dict(),
        "confirm_latency_us": stats.confirm_latency_us.to_dict(),
        "sequences": {q: t.to_dict() for q, t in stats.sequences.items()},
        "seconds": seconds,
        "consume_seconds": consume,
        "cpu_seconds": stats.cpu_end - stats.cpu_start if started else 0.0,
    }


def merge_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the figures of processes or instances that ran together.

    Counts add up; histograms merge bucket by bucket; the sequence trackers of one queue
    merge by uniting the numbers received (a number two consumers both got is a
    duplicate, a gap one filled for the other is no loss); per-producer counts are keyed by
    producer ids, unique over the run. Durations take the longest (they started together),
    CPU time adds up; a part with no producer has no publishing time of its own (its run
    lasted as long as its consumers did, which would stretch the publish rate's time).

    Args:
        parts: `figures_of` forms (after a JSON round trip, say).

    Returns:
        One figures form.

    Raises:
        ValueError: a part is not a figures form.
    """
    out: dict[str, Any] = {
        "started": False,
        "published": 0,
        "nacked": 0,
        "returned": 0,
        "consumed": 0,
        "untimed": 0,
        "foreign": 0,
        "queue_depths": {},
        "out_of_order": 0,
        "confirmed_by_producer": {},
        "sent_by_producer": {},
        "routes": {},
        "seconds": 0.0,
        "consume_seconds": 0.0,
        "cpu_seconds": 0.0,
    }
    latency, confirm = LatencyHistogram(), LatencyHistogram()
    trackers: dict[str, SequenceTracker] = {}
    try:
        for part in parts:
            out["started"] = out["started"] or bool(part["started"])
            for key in ("published", "nacked", "returned", "consumed", "untimed", "out_of_order"):
                out[key] += int(part[key])
            out["foreign"] += int(part.get("foreign", 0))
            # Each process looked at the queues as it ended; whoever merges looks again
            # once all ended (`remeasure_depths`): this is only the fallback.
            for queue, depth in part.get("queue_depths", {}).items():
                out["queue_depths"][queue] = max(out["queue_depths"].get(queue, 0), int(depth))
            for key in ("confirmed_by_producer", "sent_by_producer", "routes"):
                out[key].update(part[key])
            if part["sent_by_producer"]:
                out["seconds"] = max(out["seconds"], float(part["seconds"]))
            out["consume_seconds"] = max(out["consume_seconds"], float(part["consume_seconds"]))
            out["cpu_seconds"] += float(part["cpu_seconds"])
            latency.merge(LatencyHistogram.from_dict(part["latency_us"]))
            confirm.merge(LatencyHistogram.from_dict(part["confirm_latency_us"]))
            for queue, data in part["sequences"].items():
                tracker = SequenceTracker.from_dict(data)
                if queue in trackers:
                    trackers[queue].merge(tracker)
                else:
                    trackers[queue] = tracker
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a bench figures form: {exc!r}") from None
    out["latency_us"] = latency.to_dict()
    out["confirm_latency_us"] = confirm.to_dict()
    out["sequences"] = {q: t.to_dict() for q, t in trackers.items()}
    return out


async def remeasure_depths(config: BenchConfig, stats: RunStats) -> None:
    """Measure the consumed queues' depths once more, now that every part has ended.

    The parts' own depths were taken as each ended, while others may still have been
    consuming; `unconsumed` and `lost` read the depth after everything ended. Call it before
    the generated queues are deleted.

    Args:
        config: the run's options (the broker to ask).
        stats: merged stats (`load_figures`); their `queue_depths` are replaced when the
            broker answers.
    """
    queues = sorted(set(stats.queue_depths) | set(stats.sequences))
    if not queues:
        return
    depths = await queue_depths(config, queues)
    if depths:  # nothing at all: the broker could not be asked, keep the parts' view
        stats.queue_depths = depths


def load_figures(figures: dict[str, Any], stats: RunStats) -> None:
    """Fill a RunStats with (merged) figures, so `cli_bench.summary` reports them.

    Args:
        figures: a `figures_of` or `merge_figures` form.
        stats: the stats to overwrite.
    """
    stats.published = figures["published"]
    stats.nacked = figures["nacked"]
    stats.returned = figures["returned"]
    stats.consumed = figures["consumed"]
    stats.untimed = figures["untimed"]
    stats.foreign = figures.get("foreign", 0)
    stats.queue_depths = dict(figures.get("queue_depths", {}))
    order = OrderCheck()
    order.out_of_order = figures["out_of_order"]
    stats.order_checks = [order]
    stats.confirmed_by_producer = {int(p): n for p, n in figures["confirmed_by_producer"].items()}
    stats.sent_by_producer = {int(p): n for p, n in figures["sent_by_producer"].items()}
    stats.routes = {int(p): list(q) for p, q in figures["routes"].items()}
    stats.latency_us = LatencyHistogram.from_dict(figures["latency_us"])
    stats.confirm_latency_us = LatencyHistogram.from_dict(figures["confirm_latency_us"])
    stats.sequences = {q: SequenceTracker.from_dict(t) for q, t in figures["sequences"].items()}
    # summary() reads instants: rebuild them from the durations on a clock starting at 1.
    base = 1.0 if figures["started"] else 0.0
    stats.started = base
    stats.ended = base + figures["seconds"] if base else 0.0
    stats.last_received = base + figures["consume_seconds"] if base else 0.0
    stats.cpu_start, stats.cpu_end = 0.0, figures["cpu_seconds"]
