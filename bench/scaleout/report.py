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

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]


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
        "How to read it: the broker, the producer and every consumer share this machine's "
        f"{cores} cores. A consumer process adds throughput only while there is a free core "
        "for it; once all are busy it takes CPU from the broker and the other consumers. "
        "RabbitMQ also serves one queue from one Erlang process, so a single shared queue "
        "is bounded by about one core of broker work, however many consumers it has. With "
        "the broker on its own hosts and consumers in their own pods, each consumer brings "
        "its own core and the curve follows the handlers' cost until that queue bound; "
        "several queues (topics) spread the broker's side too. The load column is the "
        "1-minute load average before each point, the previous point's processes included.",
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
        lines += ["", *observations(rows, cores), ""]
    return "\n".join(lines)


def _used(r: dict[str, Any]) -> float:
    return r.get("broker_cores", 0) + r["consumers_cores"] + r["producer_cores"]


def observations(rows: list[dict[str, Any]], cores: int) -> list[str]:
    """What the figures of one work level say, read off the figures themselves."""
    best = max(rows, key=lambda r: r["consumed_msgs_per_s"])
    base = rows[0]
    if best is base:
        first = (
            f"- Most consumed with {base['workers']} worker(s), "
            f"{base['consumed_msgs_per_s']:,} msgs/s: more processes only lowered it."
        )
    else:
        gain = best["consumed_msgs_per_s"] / (base["consumed_msgs_per_s"] or 1)
        first = (
            f"- Most consumed: {best['consumed_msgs_per_s']:,} msgs/s with {best['workers']} "
            f"workers, {gain:.2f}x {base['workers']} worker(s)."
        )
    out = [first]
    busy = [r for r in rows if _used(r) >= 0.9 * cores]
    if busy:
        out.append(
            f"- CPU-bound: with {', '.join(str(r['workers']) for r in busy)} worker(s) the "
            f"processes used {', '.join(f'{_used(r):.2f}' for r in busy)} of the "
            f"{cores} cores, RabbitMQ alone "
            f"{', '.join(str(r.get('broker_cores', '?')) for r in busy)}: another consumer "
            "process can only take CPU from the others, the broker included."
        )
    ahead = [r for r in rows if r["published_msgs_per_s"] > 1.1 * r["consumed_msgs_per_s"]]
    if ahead:
        growth = [r["published_msgs_per_s"] - r["consumed_msgs_per_s"] for r in ahead]
        out.append(
            "- The producer outran the consumers with "
            f"{', '.join(str(r['workers']) for r in ahead)} worker(s): the queue grew by "
            f"{', '.join(f'{g:,}' for g in growth)} msgs/s, and taking those in cost the "
            "broker CPU the deliveries needed."
        )
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cores = results[0]["cpus"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (work_us, rows), color in zip(_levels(results).items(), COLORS, strict=False):
        xs = [r["workers"] for r in rows]
        label = f"work {work_us} µs/msg"
        left.plot(xs, [r["consumed_msgs_per_s"] for r in rows], "o-", color=color, label=label)
        broker = [r.get("broker_cores", 0) for r in rows]
        right.plot(xs, broker, "o-", color=color, label=f"{label}: RabbitMQ")
        right.plot(xs, [_used(r) for r in rows], "s--", color=color, label=f"{label}: all")
    for ax in (left, right):
        ax.set_xlabel("consumer processes")
        ax.set_xticks(sorted({r["workers"] for r in results}))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    left.set_ylabel("consumed msgs/s")
    left.set_title("competing consumers on one shared queue", fontsize=10)
    right.set_ylabel("CPU (cores)")
    right.set_ylim(0, cores * 1.1)
    right.axhline(cores, color="gray", linestyle=":", linewidth=0.8)
    right.set_title(f"CPU used: RabbitMQ and all processes ({cores} cores)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
