"""The soak's picture: throughput and RSS over time, faults marked (matplotlib, Agg)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

COLORS = {"cut": "tab:red", "freeze": "tab:blue", "close": "tab:orange", "restart": "tab:purple"}


def rates(samples: list[dict[str, Any]], field: str) -> tuple[list[float], list[float]]:
    """(minutes, msgs/s of `field` between consecutive samples)."""
    xs, ys = [], []
    for a, b in itertools.pairwise(samples):
        dt = b["t"] - a["t"]
        if dt > 0:
            xs.append(b["t"] / 60)
            ys.append((b[field] - a[field]) / dt)
    return xs, ys


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    summary = result["summary"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    x, sent = rates(samples, "sent")
    top.plot(x, sent, color="tab:gray", linewidth=0.8, label="published")
    x, consumed = rates(samples, "consumed")
    top.plot(x, consumed, color="tab:green", linewidth=0.8, label="consumed (unique ids)")
    top.set_ylabel("msgs/s")
    seen_kinds = set()
    for event in result["faults"]:
        kind = event["kind"]
        for ax in (top, bottom):
            ax.axvline(
                event["t"] / 60,
                color=COLORS.get(kind, "black"),
                linestyle="--",
                linewidth=0.8,
                label=f"fault: {kind}" if ax is top and kind not in seen_kinds else None,
            )
        seen_kinds.add(kind)
    top.legend(loc="lower right", fontsize=8, ncol=3)
    top.set_title(
        f"soak: {summary['sent']:,} sent, {summary['confirmed']:,} confirmed, "
        f"{summary['consumed']:,} consumed, {summary['duplicates']:,} duplicates, "
        f"lost {summary['lost']}, {summary['faults']} faults, "
        f"{summary['reconnects']} reconnects",
        fontsize=10,
    )
    bottom.plot([s["t"] / 60 for s in samples], [s["rss_mb"] for s in samples], color="tab:brown")
    bottom.set_ylabel("RSS (MiB)")
    bottom.set_xlabel("minutes")
    low = min(s["rss_mb"] for s in samples)
    bottom.set_ylim(low * 0.9, max(s["rss_mb"] for s in samples) * 1.05)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
