"""`python -m bench report [--input FILE]`: the benchmark page and chart in docs/.

Without --input it runs `throughput --scenario all` (same options); with --input it reads a
JSON-lines file written by `python -m bench throughput --json > FILE` (non-JSON lines are
skipped; when a scenario appears more than once, its last result counts). `--include FILE`
adds results of scenarios the run or input lacks (e.g. `agent_soak`). It writes

- docs/bench-results.md: the machine, a table (scenario, msgs/s or calls/s, p50/p99) and the
  ratios agent/limit, agent/aiormq, rpc p50 / rpc_floor p50, rpc p50 / aio_pika_rpc p50;
- docs/bench-throughput.png: throughput bars and RPC latency bars (matplotlib, Agg).

Nothing here is a figure of its own: every number comes from the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from .common import progress
from .throughput.command import add_arguments as add_throughput_arguments
from .throughput.command import run_scenarios
from .throughput.scenarios import ALL, names

DOCS = Path(__file__).resolve().parent.parent / "docs"
MARKDOWN = "bench-results.md"
CHART = "bench-throughput.png"
ORDER = [*ALL, *(n for n in names() if n not in ALL)]
RPC_TARGET = 0.5  # rpc p50 <= 0.5 x aio-pika's RPC pattern p50
SOAK_TARGET_MB = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", default=None, help="JSON lines from `throughput --json` instead of a run"
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="FILE",
        help="JSON lines with more results to show (e.g. an agent_soak run); "
        "the run's own results win for the same scenario",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=DOCS, help=f"where to write (default {DOCS})"
    )
    add_throughput_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.input:
        results = read_results(Path(args.input))
        source = f"`{args.input}` (from `python -m bench throughput --json`)"
    else:
        args.scenario = "all"

        def show(result: dict[str, Any]) -> None:
            if args.json:
                print(json.dumps(result), flush=True)

        results = read_results_from(run_scenarios(args, show))
        source = "a `python -m bench throughput --scenario all` run made by the report"
    for extra in args.include:
        for name, result in read_results(Path(extra)).items():
            results.setdefault(name, result)
        source += f", with results from `{extra}`"
    results = read_results_from(list(results.values()))
    if not results:
        progress("report: no results to report")
        return 1
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKDOWN).write_text(markdown(results, source))
    chart(results, out / CHART)
    progress(f"report: wrote {out / MARKDOWN} and {out / CHART}")
    return 1 if any("error" in r for r in results.values()) else 0


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    found = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "scenario" in obj:
            found.append(obj)
    return read_results_from(found)


def read_results_from(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    for obj in found:
        by_name[obj["scenario"]] = obj
    return dict(sorted(by_name.items(), key=lambda kv: _rank(kv[0])))


def _rank(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


# -- markdown --------------------------------------------------------------------------


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}"


def _figure(r: dict[str, Any], key: str) -> float | None:
    value = r.get(key) if "error" not in r else None
    return float(value) if isinstance(value, int | float) else None


def ratio(results: dict[str, dict[str, Any]], a: str, ka: str, b: str, kb: str) -> float | None:
    x = _figure(results.get(a, {}), ka)
    y = _figure(results.get(b, {}), kb)
    if x is None or y is None or y == 0:
        return None
    return x / y


def notes(r: dict[str, Any]) -> str:
    name = r["scenario"]
    if "error" in r:
        return f"**FAILED**: {r['error']}"
    parts = []
    if "messages" in r:
        parts.append(f"{r['messages']:,} msgs")
    if name == "rpc":
        parts.append(
            f"{r['sequential_calls']:,} sequential calls; {r['calls']:,} calls with "
            f"{r['in_flight']} in flight: p50 {_num(r['load_p50_us'])} µs, "
            f"p99 {_num(r['load_p99_us'])} µs"
        )
    elif "calls" in r:
        parts.append(f"{r['calls']:,} sequential calls")
    if name == "rpc_floor":
        parts.append(
            f"reply via {r['variant']}; exclusive queue p50 {_num(r['exclusive_p50_us'])} µs, "
            f"direct reply-to p50 {_num(r['direct_reply_p50_us'])} µs"
        )
    if "behaviours" in r:
        parts.append(f"{r['behaviours']} behaviours")
    if "rss_growth_mb" in r:
        parts.append(
            f"RSS {r['rss_before_mb']} → {r['rss_after_mb']} MiB (+{r['rss_growth_mb']} MiB)"
        )
    for unit in ("msg", "call"):
        if f"cpu_us_per_{unit}" in r:
            cpu = f"CPU/{unit}: client {r[f'cpu_us_per_{unit}']} µs"
            if f"broker_cpu_us_per_{unit}" in r:
                cpu += f", broker {r[f'broker_cpu_us_per_{unit}']} µs"
            parts.append(cpu)
    if "ack_mode" in r:
        parts.append(f"consumer {r['ack_mode']}")
    if "topic_msgs_per_s" in r:
        topic = f"through `munggoggo.topic`: {_num(r['topic_msgs_per_s'])} msgs/s"
        if "topic_broker_cpu_us_per_msg" in r:
            topic += f", broker {r['topic_broker_cpu_us_per_msg']} µs CPU/msg"
        parts.append(topic)
    return "; ".join(parts)


def markdown(results: dict[str, dict[str, Any]], source: str) -> str:
    machine = next((r for r in results.values() if "python" in r), {})
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = []
    for r in results.values():
        for key in ("aiormq_version", "aio_pika_version"):
            if key in r:
                versions.append(f"{key.removesuffix('_version').replace('_', '-')} {r[key]}")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench report` on {when} from {source}.",
        "Each scenario is described in its module under `bench/throughput/scenarios/`; the client",
        "side of each scenario runs in one Python process, next to the broker on the same machine.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        f"| CPU cores | {machine.get('cpus', '?')} |",
        f"| Python | {machine.get('python', '?')} ({machine.get('implementation', '?')}) |",
        f"| uvloop | {'yes' if machine.get('uvloop') else 'no'} |",
        f"| `munggoggo._speedups.USING_EXTENSIONS` | {machine.get('extensions', '?')} |",
        f"| broker | {machine.get('broker', '?')} |",
        f"| baselines | {', '.join(sorted(set(versions))) or '?'} |",
        f"| 1-min load average before the scenarios | {load_range(results)} |",
        "",
        "## Results",
        "",
        "| scenario | msgs/s or calls/s | p50 (µs) | p99 (µs) | notes |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        if "msgs_per_s" in r:
            rate = f"{_num(r['msgs_per_s'])} msgs/s"
        elif "calls_per_s" in r:
            rate = f"{_num(r['calls_per_s'])} calls/s"
        else:
            rate = ""
        lines.append(
            f"| `{name}` | {rate} | {_num(r.get('p50_us'))} | {_num(r.get('p99_us'))} "
            f"| {notes(r)} |"
        )
    lines += [
        "",
        "For `rpc`, `rpc_floor` and `aio_pika_rpc`, p50/p99 are sequential calls (one in",
        "flight) and calls/s is `rpc`'s rate with 256 calls in flight, the sequential rate",
        "for the other two. CPU per message is over the timed section: the client process",
        "(publisher and consumer together) and the broker's beam.smp processes, which also",
        "count any other traffic the broker carried meanwhile.",
        "",
        "## Ratios",
        "",
        "| ratio | value | target |",
        "| --- | ---: | --- |",
    ]
    rows = [
        (
            "agent / limit (msgs/s)",
            ratio(results, "agent", "msgs_per_s", "limit", "msgs_per_s"),
            "",
        ),
        (
            "agent / limit through munggoggo.topic (msgs/s)",
            ratio(results, "agent", "msgs_per_s", "limit", "topic_msgs_per_s"),
            "",
        ),
        (
            "fanin / limit through munggoggo.topic (msgs/s)",
            ratio(results, "fanin", "msgs_per_s", "limit", "topic_msgs_per_s"),
            "",
        ),
        (
            "agent / aiormq (msgs/s)",
            ratio(results, "agent", "msgs_per_s", "aiormq", "msgs_per_s"),
            "",
        ),
        (
            "engine / limit (msgs/s)",
            ratio(results, "engine", "msgs_per_s", "limit", "msgs_per_s"),
            "",
        ),
        (
            "fanin / limit (msgs/s)",
            ratio(results, "fanin", "msgs_per_s", "limit", "msgs_per_s"),
            "",
        ),
        ("rpc p50 / rpc_floor p50", ratio(results, "rpc", "p50_us", "rpc_floor", "p50_us"), ""),
        (
            "rpc p50 / aio_pika_rpc p50",
            ratio(results, "rpc", "p50_us", "aio_pika_rpc", "p50_us"),
            f"≤ {RPC_TARGET}",
        ),
    ]
    for label, value, target in rows:
        shown = "n/a" if value is None else f"{value:.2f}"
        if target and value is not None:
            target += " (met)" if value <= RPC_TARGET else " (not met)"
        lines.append(f"| {label} | {shown} | {target} |")
    soak = results.get("agent_soak")
    if soak is not None and "rss_growth_mb" in soak:
        met = "met" if soak["rss_growth_mb"] < SOAK_TARGET_MB else "not met"
        lines.append(
            f"| agent_soak RSS growth over {soak['messages']:,} msgs (MiB) | "
            f"{soak['rss_growth_mb']:.2f} | < {SOAK_TARGET_MB} ({met}) |"
        )
    lines += ["", f"![throughput and RPC latency]({CHART})", ""]
    return "\n".join(lines)


def load_range(results: dict[str, dict[str, Any]]) -> str:
    loads = [r["load_1m_before"] for r in results.values() if r.get("load_1m_before") is not None]
    if not loads:
        return "?"
    return f"{min(loads):.2f} to {max(loads):.2f}"


# -- chart -----------------------------------------------------------------------------


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput = [
        (name, r["msgs_per_s"], "msgs/s")
        for name, r in results.items()
        if "error" not in r and "msgs_per_s" in r and name in ALL
    ]
    limit = results.get("limit", {})
    if "topic_msgs_per_s" in limit:
        at = next((i for i, t in enumerate(throughput) if t[0] == "limit"), -1) + 1
        throughput.insert(at, ("limit via munggoggo.topic", limit["topic_msgs_per_s"], "msgs/s"))
    if "rpc" in results and "calls_per_s" in results["rpc"]:
        throughput.append(("rpc (256 in flight)", results["rpc"]["calls_per_s"], "calls/s"))
    latency = [
        (name, r["p50_us"], r["p99_us"])
        for name, r in results.items()
        if "error" not in r and "p50_us" in r
    ]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]}, layout="constrained"
    )
    if throughput:
        labels = [t[0] for t in throughput]
        values = [t[1] for t in throughput]
        colors = ["tab:blue" if t[2] == "msgs/s" else "tab:orange" for t in throughput]
        bars = left.barh(labels, values, color=colors)
        left.invert_yaxis()
        left.bar_label(
            bars,
            labels=[f"{v:,.0f} {t[2]}" for v, t in zip(values, throughput, strict=True)],
            padding=3,
            fontsize=8,
        )
        left.set_xlabel("per second (higher is better)")
        left.set_title("Throughput")
        left.set_xlim(0, max(values) * 1.3)
    if latency:
        labels = [t[0] for t in latency]
        x = range(len(latency))
        width = 0.38
        p50 = right.bar([i - width / 2 for i in x], [t[1] for t in latency], width, label="p50")
        p99 = right.bar([i + width / 2 for i in x], [t[2] for t in latency], width, label="p99")
        right.bar_label(p50, fmt="%.0f", fontsize=8)
        right.bar_label(p99, fmt="%.0f", fontsize=8)
        right.set_xticks(list(x), labels)
        right.set_ylabel("µs per call (lower is better)")
        right.set_title("Sequential request/reply latency")
        right.legend()
    machine = next((r for r in results.values() if "python" in r), {})
    fig.suptitle(
        f"munggoggo benchmarks: {machine.get('cpus', '?')} cores, Python "
        f"{machine.get('python', '?')}, uvloop {'on' if machine.get('uvloop') else 'off'}, "
        f"extensions {machine.get('extensions', '?')}, {machine.get('broker', '?')}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
