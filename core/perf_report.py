"""`munggoggo bench --report FILE.html`: one self-contained page about a finished run.

The page holds the options used, the summary (the figures `--json` prints), loss and
duplicates, and line charts of the per-second rows (the rows `--csv` writes): throughput
(sent, confirmed, received per second) and consumer and confirm latency (p50, p95, p99
per second). Everything is inline: CSS in a `<style>`, the charts as `<svg>` drawn here,
one `<polyline>` per series with one point per second of the run. No script, no font, no
stylesheet and no image is fetched, so the file opens offline, in a mail attachment or a
CI artifact, and looks the same years later.

Latency charts use a logarithmic axis (a run's latencies span microseconds to seconds);
a second without a value of a series (nothing received that second) is drawn on the
axis' floor, so every series keeps one point per second.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = ["RowRecorder", "line_chart", "render_report", "run_options", "write_report"]

_WIDTH, _HEIGHT = 880, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 76, 18, 34, 40
_DASHED = {"confirmed", "p95"}  # drawn over others often: dashed, so both stay visible
_COLOURS = {
    "sent": "#2563eb",
    "confirmed": "#16a34a",
    "received": "#ea580c",
    "nacked": "#dc2626",
    "returned": "#9333ea",
    "p50": "#2563eb",
    "p95": "#ea580c",
    "p99": "#dc2626",
}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;
 margin:0;background:#f8fafc}
main{max-width:920px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#64748b;margin:0 0 16px}
table{border-collapse:collapse;background:#fff;margin:4px 0}
th,td{border:1px solid #e2e8f0;padding:4px 10px;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f1f5f9;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.badge{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;margin-right:8px}
.ok{background:#dcfce7;color:#166534}.bad{background:#fee2e2;color:#991b1b}
.error{background:#fee2e2;color:#991b1b;padding:8px 12px;border-radius:6px}
figure{margin:8px 0 0;background:#fff;border:1px solid #e2e8f0;border-radius:6px;padding:6px}
figcaption{font-weight:600;padding:2px 6px}
svg text{font:11px system-ui,sans-serif;fill:#475569}
svg .axis{stroke:#94a3b8}svg .gridline{stroke:#e2e8f0}
svg polyline{fill:none;stroke-linejoin:round;stroke-opacity:.9}
.note{color:#64748b}
"""


class RowRecorder:
    """Keeps the per-second rows for the report, and passes each on to a CSV writer.

    It stands in for the `csv.writer` the per-second printer writes to: same `writerow`.

    Args:
        fields: the column names, in the order of the rows' values.
        forward: a writer each row is also written to (the `--csv` file), or None.

    Attributes:
        fields: the column names.
        rows: one dict per second, column name -> number.
    """

    def __init__(self, fields: Sequence[str], forward: Any = None) -> None:
        self.fields = tuple(fields)
        self.rows: list[dict[str, float]] = []
        self._forward = forward

    def writerow(self, row: Sequence[Any]) -> None:
        """Keep one row (numbers or their text), and write it on.

        Args:
            row: the values, in the order of `fields`.
        """
        self.rows.append({name: float(value) for name, value in zip(self.fields, row, strict=True)})
        if self._forward is not None:
            self._forward.writerow(row)


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(1, ticks)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _count_label(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _us_label(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g} s"
    if value >= 1e3:
        return f"{value / 1e3:g} ms"
    return f"{value:g} µs"


def line_chart(
    title: str,
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    log: bool = False,
    unit: str = "msgs/s",
) -> str:
    """An inline SVG line chart: one `<polyline>` per series, one point per x.

    Args:
        title: the chart's accessible name (its `<title>`).
        xs: the x values (seconds since the start), ascending.
        series: name -> y values, each as long as `xs`; drawn in this order.
        log: a logarithmic y axis (values of 0 are drawn on its floor).
        unit: `msgs/s` (counts) or `µs` (latencies, labelled µs, ms and s).

    Returns:
        The `<svg>` element's markup.

    Raises:
        ValueError: a series whose length is not that of `xs`.
    """
    for name, ys in series.items():
        if len(ys) != len(xs):
            raise ValueError(f"series {name!r} has {len(ys)} values for {len(xs)} x values")
    label = _us_label if unit == "µs" else _count_label
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    x_hi = max(xs[-1] if xs else 1.0, 1.0)
    values = [y for ys in series.values() for y in ys]
    out = [
        f'<svg role="img" width="{_WIDTH}" height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}">',
        f"<title>{html.escape(title)}</title>",
    ]
    if log:
        positive = [y for y in values if y > 0] or [1.0]
        lo = 10 ** math.floor(math.log10(min(positive)))
        hi = 10 ** math.ceil(math.log10(max(positive)))
        if hi <= lo:
            hi = lo * 10
        span = math.log10(hi) - math.log10(lo)

        def y_of(v: float) -> float:
            frac = (math.log10(v) - math.log10(lo)) / span if v > 0 else 0.0
            return _TOP + plot_h * (1 - max(0.0, frac))

        y_ticks = [lo * 10**i for i in range(round(span) + 1)]
    else:
        top = max(values, default=0.0)
        step = _nice_step(top if top > 0 else 1.0, 5)
        y_max = max(step, math.ceil(top / step) * step)

        def y_of(v: float) -> float:
            return _TOP + plot_h * (1 - v / y_max)

        y_ticks = [step * i for i in range(round(y_max / step) + 1)]

    def x_of(x: float) -> float:
        return _LEFT + plot_w * x / x_hi

    for tick in y_ticks:
        y = y_of(tick)
        out.append(
            f'<line class="gridline" x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" '
            f'y2="{y:.1f}"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label(tick)}</text>'
        )
    x_step = _nice_step(x_hi, 10)
    x_ticks = [x_step * i for i in range(int(x_hi / x_step) + 1)]
    for tick in x_ticks:
        x = x_of(tick)
        out.append(
            f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 16}" text-anchor="middle">{tick:g}</text>'
        )
    out.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - _RIGHT}" '
        f'y2="{_TOP + plot_h}"/><line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" '
        f'y2="{_TOP + plot_h}"/>'
        f'<text x="{_LEFT + plot_w / 2:.0f}" y="{_HEIGHT - 6}" text-anchor="middle">'
        f"seconds</text>"
    )
    legend_x = _LEFT
    for index, (name, ys) in enumerate(series.items()):
        colour = _COLOURS.get(name, "#334155")
        points = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in zip(xs, ys, strict=True))
        dash = ' stroke-dasharray="6 3"' if name in _DASHED else ""
        # Later series are drawn thinner on top: where lines coincide, each still shows.
        width = max(1.2, 3.4 - 0.9 * index)
        out.append(
            f'<polyline data-series="{html.escape(name)}" stroke="{colour}"{dash} '
            f'stroke-width="{width:.1f}" points="{points}"/>'
        )
        out.append(
            f'<rect x="{legend_x}" y="10" width="12" height="12" fill="{colour}"/>'
            f'<text x="{legend_x + 16}" y="20">{html.escape(name)}</text>'
        )
        legend_x += 24 + 7 * len(name) + 12
    out.append(
        f'<text x="{_WIDTH - _RIGHT}" y="20" text-anchor="end">{html.escape(unit)}</text></svg>'
    )
    return "".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int | float):
        return f"{int(value):,}"
    return html.escape(str(value))


def _figure_rows(figures: Mapping[str, Any], keys: Sequence[tuple[str, str]]) -> str:
    return "".join(
        f'<tr><th>{html.escape(label)}</th><td class="n" data-figure="{key}">'
        f"{_cell(figures.get(key, ''))}</td></tr>"
        for key, label in keys
        if key in figures
    )


_COUNTS = (
    ("seconds", "seconds publishing"),
    ("published", "published"),
    ("confirmed", "confirmed"),
    ("nacked", "nacked"),
    ("returned", "returned"),
    ("consumed", "consumed"),
    ("lost", "lost"),
    ("duplicates", "duplicates"),
    ("out_of_order", "out of order"),
    ("untimed", "untimed"),
)
_RATES = (
    ("publish_rate", "publish rate (msgs/s)"),
    ("consume_rate", "consume rate (msgs/s)"),
    ("client_cpu_us_per_msg", "client CPU (µs/msg)"),
)
_LATENCY_KEYS = ("min", "p50", "p75", "p95", "p99", "max")


def _latency_table(figures: Mapping[str, Any]) -> str:
    head = "".join(f'<th class="n">{k}</th>' for k in _LATENCY_KEYS)
    rows = []
    for key, label in (("latency_us", "consumer"), ("confirm_latency_us", "confirm")):
        lat = figures.get(key) or {}
        cells = "".join(
            f'<td class="n" data-figure="{key}.{k}">{_cell(lat.get(k, 0))}</td>'
            for k in _LATENCY_KEYS
        )
        rows.append(f"<tr><th>{label}</th>{cells}</tr>")
    return f"<table><tr><th>latency (µs)</th>{head}</tr>{''.join(rows)}</table>"


def _column(rows: Sequence[Mapping[str, float]], name: str) -> list[float]:
    return [row.get(name, 0.0) for row in rows]


def render_report(
    figures: Mapping[str, Any],
    rows: Sequence[Mapping[str, float]],
    options: Mapping[str, str],
    *,
    error: str | None = None,
    started: _dt.datetime | None = None,
) -> str:
    """The report page.

    Args:
        figures: the run's summary, as `--json` prints it (`cli_bench.summary`).
        rows: the per-second rows, as `--csv` writes them (`time_s`, `sent`, `confirmed`,
            `received`, `latency_p50_us`, ..., `confirm_p99_us`).
        options: the options used, name -> text (passwords already left out).
        error: the line the command ended with, if the run failed.
        started: when the run started (shown in the header).

    Returns:
        The HTML document.
    """
    when = (started or _dt.datetime.now(_dt.UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    xs = _column(rows, "time_s")
    lost, dups = int(figures.get("lost", 0)), int(figures.get("duplicates", 0))
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>munggoggo bench report {html.escape(when)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>munggoggo bench</h1>",
        f'<p class="meta">{html.escape(_shape(options))}<br>{html.escape(when)} · munggoggo '
        f"{html.escape(__version__)} · {len(rows)} s of per-second rows</p>",
    ]
    if error:
        parts.append(f'<p class="error">The run ended with an error: {html.escape(error)}</p>')
    verdict = "ok" if lost == 0 and dups == 0 else "bad"
    parts.append(
        f'<h2>Loss and duplicates</h2><p><span class="badge {verdict}" data-figure="lost">'
        f'lost {lost:,}</span><span class="badge {verdict}" data-figure="duplicates">'
        f"duplicates {dups:,}</span></p>"
    )
    parts.append(
        '<h2>Summary</h2><div class="grid">'
        f"<table>{_figure_rows(figures, _COUNTS)}</table>"
        f"<table>{_figure_rows(figures, _RATES)}</table></div>"
        f"{_latency_table(figures)}"
    )
    parts.append("<h2>Throughput</h2>")
    if rows:
        throughput = {
            "sent": _column(rows, "sent"),
            "confirmed": _column(rows, "confirmed"),
            "received": _column(rows, "received"),
        }
        for extra in ("nacked", "returned"):
            if any(_column(rows, extra)):
                throughput[extra] = _column(rows, extra)
        parts.append(_figure("Messages per second", line_chart("throughput", xs, throughput)))
        consumer = {q: _column(rows, f"latency_{q}_us") for q in ("p50", "p95", "p99")}
        confirm = {q: _column(rows, f"confirm_{q}_us") for q in ("p50", "p95", "p99")}
        parts.append("<h2>Latency</h2>")
        parts.append(
            _figure(
                "Consumer latency (publish to receive) per second",
                line_chart("consumer latency", xs, consumer, log=True, unit="µs"),
            )
        )
        if figures.get("confirmed") or any(any(ys) for ys in confirm.values()):
            parts.append(
                _figure(
                    "Confirm latency (publish to broker confirm) per second",
                    line_chart("confirm latency", xs, confirm, log=True, unit="µs"),
                )
            )
        else:
            parts.append('<p class="note">No confirm latency: publisher confirms were off.</p>')
    else:
        parts.append('<p class="note">No per-second rows: the run was shorter than a second.</p>')
    option_rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value) or '&#8211;'}</td></tr>"
        for name, value in options.items()
    )
    parts.append(f"<h2>Options</h2><table>{option_rows}</table>")
    parts.append("</main></body></html>\n")
    return "".join(parts)


def _shape(options: Mapping[str, str]) -> str:
    """One line on what ran: run id, producers, consumers, size, rate, confirms."""
    get = options.get
    rate = get("rate", "0")
    parts = [
        f"run {get('run_id', '?')}",
        f"{get('producers', '?')} producers, {get('consumers', '?')} consumers",
        f"{get('size', '?')} B bodies",
        "as fast as possible" if rate in ("0", "0.0") else f"{rate} msgs/s per producer",
    ]
    if get("variable_rate"):
        parts[-1] = f"variable rate {get('variable_rate')}"
    confirm = get("confirm", "0")
    parts.append("no confirms" if confirm == "0" else f"confirm window {confirm}")
    return ", ".join(parts)


def _figure(caption: str, svg: str) -> str:
    return f"<figure><figcaption>{html.escape(caption)}</figcaption>{svg}</figure>"


def write_report(path: str | Path, page: str) -> None:
    """Write the page, replacing the file.

    Args:
        path: where.
        page: `render_report`'s document.

    Raises:
        OSError: the file cannot be written.
    """
    Path(path).write_text(page, encoding="utf-8")


def run_options(args: Any, config: Any) -> dict[str, str]:
    """The options a run used, as text: for the report's table and the metrics' run info.

    Args:
        args: the parsed `bench` options (an `argparse.Namespace`).
        config: the run's `BenchConfig` (its URLs are shown without passwords).

    Returns:
        Option name -> text, `run_id` (the given `--run-id` or a generated one) and `url`
        first; options left at None are left out.
    """
    out = {
        "run_id": args.run_id or uuid.uuid4().hex[:8],
        "url": ", ".join(str(url) for url in config.urls),
    }
    for name, value in sorted(vars(args).items()):
        if name in ("handler", "command", "url", "run_id") or value is None or callable(value):
            continue
        if isinstance(value, list):
            value = " ".join(
                ":".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value
            )
        out[name] = str(value)
    return out
