"""docs/scaleout.md and docs/scaleout.png from `python -m bench scaleout` results.

The table gives each configuration's consumed msgs/s, its speed-up over one worker at the
same work level, what the producer offered, and where the CPU went (broker, consumers,
producer, in cores of the machine's total), so a flat curve can be read for what it is.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any


def write(results: list[dict[str, Any]], md: Path, png: Path, args: argparse.Namespace) -> None:
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(results, args))
    plot(results, png)


def _levels(results: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    levels: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        levels.setdefault(r["work_us"], []).append(r)
    return levels


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    first = results[0]
    cores = first["cpus"]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    workers = ",".join(str(w) for w in args.workers)
    work = ",".join(str(w) for w in args.work_us)
    lines = [
        "# Scale-out: competing consumers",
        "",
        f"Written by `python -m bench scaleout --workers {workers} --work-us {work} "
        f"--seconds {args.seconds:g} --queue-type {args.queue_type}` on {when}: "
        f"{cores} CPU cores, {first['broker']}, Python {first['python']}, compiled speedups "
        f"{'on' if first['extensions'] else 'off'}, broker, producer and consumers on this "
        "one machine. 1-minute load average before each point in the last column.",
        "",
        "N agent processes each run one behaviour on the same queue (`Behaviour(agent, "
        "binding_keys=[topic], queue=name)`), subscribed to a work topic; one more process "
        "publishes ~100-byte Readings to that topic at full speed (confirmed). `work` is the "
        "CPU each handler spins per message on top of decoding it (0: messaging only). "
        "Cores: CPU seconds per second over the measured window.",
        "",
        "![consumed msgs/s by worker processes](scaleout.png)",
        "",
    ]
    for work_us, rows in _levels(results).items():
        base = rows[0]["consumed_msgs_per_s"] or 1
        lines += [
            f"## work {work_us} µs per message",
            "",
            "| workers | consumed msgs/s | speed-up | per worker | published msgs/s "
            "| broker cores | consumer cores | producer cores | load |",
            "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            per = ", ".join(f"{v:,}" for v in r["per_worker_msgs_per_s"])
            lines.append(
                f"| {r['workers']} | {r['consumed_msgs_per_s']:,} "
                f"| {r['consumed_msgs_per_s'] / base:.2f}x | {per} "
                f"| {r['published_msgs_per_s']:,} | {r.get('broker_cores', '?')} "
                f"| {r['consumers_cores']} | {r['producer_cores']} | {r['load_1m_before']} |"
            )
        busiest = max(rows, key=lambda r: r["workers"])
        used = busiest.get("broker_cores", 0) + busiest["consumers_cores"]
        used += busiest["producer_cores"]
        lines += [
            "",
            f"With {busiest['workers']} workers the broker, consumers and producer together "
            f"used {used:.2f} of the machine's {cores} cores.",
            "",
        ]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for work_us, rows in _levels(results).items():
        xs = [r["workers"] for r in rows]
        label = f"work {work_us} µs/msg"
        left.plot(xs, [r["consumed_msgs_per_s"] for r in rows], marker="o", label=label)
        right.plot(xs, [r.get("broker_cores", 0) for r in rows], marker="o", label=label)
    for ax in (left, right):
        ax.set_xlabel("consumer processes")
        ax.set_xticks(sorted({r["workers"] for r in results}))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    left.set_ylabel("consumed msgs/s")
    left.set_title("competing consumers on one shared queue", fontsize=10)
    right.set_ylabel("broker CPU (cores)")
    right.axhline(results[0]["cpus"], color="gray", linestyle="--", linewidth=0.8)
    right.set_title(f"RabbitMQ's CPU ({results[0]['cpus']} cores in the machine)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
