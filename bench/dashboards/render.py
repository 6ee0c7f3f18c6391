"""Draw a Grafana dashboard JSON from a Prometheus server's data, with matplotlib.

Grafana is not installable on our machines, so this renders the panels of our dashboards
from the same PromQL Grafana would send: each `timeseries` panel at its `gridPos`, each
target a `query_range` against Prometheus' HTTP API, series labelled by `legendFormat`.
Only what our dashboards use is supported (`$__rate_interval`, `{{label}}` legends).
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRID_COLUMNS = 24  # Grafana's grid width
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]


class Prometheus:
    """The two HTTP API calls we need."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = json.load(response)
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {params.get('query')!r}: {payload}")
        return payload["data"]

    def query_range(self, query: str, start: float, end: float, step: float) -> list[Any]:
        params = {"query": query, "start": start, "end": end, "step": step}
        return self._get("/api/v1/query_range", params)["result"]

    def targets_up(self) -> dict[str, float]:
        """instance -> value of `up` now."""
        result = self._get("/api/v1/query", {"query": "up"})["result"]
        return {r["metric"].get("instance", "?"): float(r["value"][1]) for r in result}


def legend(template: str, labels: dict[str, str]) -> str:
    if not template:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), template)


def panel_series(
    prom: Prometheus, panel: dict[str, Any], start: float, end: float, step: float
) -> list[Series]:
    rate_interval = f"{max(int(step * 4), 4)}s"  # Grafana's rule: at least 4 scrapes
    found = []
    for target in panel.get("targets", []):
        query = target["expr"].replace("$__rate_interval", rate_interval)
        for result in prom.query_range(query, start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"]]
            points = [(t, v) for t, v in points if v == v]  # NaN: no data at that step
            if not points:
                continue
            found.append(
                Series(
                    legend(target.get("legendFormat", ""), result["metric"]),
                    [t - start for t, _ in points],
                    [v for _, v in points],
                )
            )
    return found


def render(
    dashboard: dict[str, Any], prom: Prometheus, start: float, end: float, out: Path
) -> dict[str, int]:
    """Draw every panel; returns panel title -> number of series drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in dashboard["panels"] if p.get("type") == "timeseries"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    step = max(1.0, (end - start) / 240)
    plt.style.use("dark_background")
    fig = plt.figure(figsize=(16, rows * 0.42 + 1.0), facecolor="#111217")
    top = 1 - 0.6 / fig.get_figheight()  # room for the title, whatever the height
    grid = fig.add_gridspec(
        rows, GRID_COLUMNS, hspace=12, wspace=3, top=top, bottom=0.02, left=0.04, right=0.99
    )
    drawn = {}
    for panel in panels:
        pos = panel["gridPos"]
        ax = fig.add_subplot(
            grid[pos["y"] : pos["y"] + pos["h"] - 1, pos["x"] : pos["x"] + pos["w"] - 1]
        )
        ax.set_facecolor("#181b1f")
        series = panel_series(prom, panel, start, end, step)
        drawn[panel["title"]] = len(series)
        for s in series[:12]:  # a legend beyond a dozen lines is unreadable
            ax.plot(s.times, s.values, linewidth=1.2, label=s.label)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(panel["title"], fontsize=10, loc="left", color="#ccccdc")
        ax.tick_params(labelsize=7, colors="#8e8e8e")
        ax.grid(color="#2c3235", linewidth=0.5)
        ax.set_xlabel("seconds", fontsize=7, color="#8e8e8e")
        if unit:
            ax.set_ylabel(unit, fontsize=7, color="#8e8e8e")
        if series:
            ax.legend(fontsize=6, loc="upper left", framealpha=0.3)
        else:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", color="#8e8e8e")
    fig.suptitle(
        dashboard.get("title", ""), x=0.01, y=0.995, ha="left", fontsize=13, color="#ccccdc"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor(), bbox_inches="tight")
    plt.close(fig)
    return drawn
