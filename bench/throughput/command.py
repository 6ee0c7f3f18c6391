"""`python -m bench throughput --scenario NAME|all [--messages N] [--url URL] [--json]`.

Runs scenarios (bench/throughput/scenarios/) one after the other in this process, each in a fresh
event loop (uvloop unless --no-uvloop) and under a time limit: 30 s for a scenario at its
default size, more when --messages asks for more (or --timeout). Per scenario a progress
line goes to stderr and one result to stdout: a JSON object per line with --json, a table
otherwise. Each object carries `scenario`, its figures (`msgs_per_s` or `calls_per_s`,
`p50_us`/`p99_us` where they apply), CPU per message of the client process and, when
the broker runs on this machine, of the broker (`broker_cpu_us_per_msg`), the 1-minute load
average before it started (`load_1m_before`: other work on the machine skews the figures),
and the machine: cores, Python, uvloop, whether munggoggo's compiled speedups are in use,
broker version.

A scenario whose counts do not add up (or that fails or runs out of time) prints
`{"scenario": ..., "error": ...}`, the others still run, and the exit status is 1.
No metrics exporter is involved: agents run on their default configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
from typing import Any

from ..common import (
    broker_url,
    broker_version,
    emit,
    environment,
    positive_int,
    progress,
    run_loop,
    timeout_for,
    use_uvloop,
    watch_broker,
)
from .scenarios import ALL, module_name, names

SCENARIO_LIMIT = 30.0  # seconds, for a scenario at its default size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        choices=[*names(), "all"],
        default="all",
        help=f"one scenario, or all ({', '.join(ALL)}); agent_soak only by name",
    )
    parser.add_argument(
        "--messages",
        type=positive_int,
        default=None,
        help="messages (or calls) per scenario instead of each scenario's default",
    )
    parser.add_argument("--url", default=None, help="broker URL (default MUNGGOGGO_URL)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per scenario")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")


def main(args: argparse.Namespace) -> int:
    results = run_scenarios(args, lambda result: emit_line(result, args.json))
    return 1 if any("error" in r for r in results) else 0


def emit_line(result: dict[str, Any], as_json: bool) -> None:
    emit(result, as_json)
    if not as_json:
        print()
    sys.stdout.flush()


def run_scenarios(args: argparse.Namespace, on_result: Any = None) -> list[dict[str, Any]]:
    """Run the scenarios `args` select; returns their result objects (errors included)."""
    url = broker_url(args.url)
    watch_broker(url)
    uvloop = use_uvloop(not args.no_uvloop)
    selected = ALL if args.scenario == "all" else [args.scenario]
    machine = environment(uvloop)
    try:
        machine["broker"] = run_loop(lambda: asyncio.wait_for(broker_version(url), 15))
    except Exception as exc:
        machine["broker"] = f"unknown ({type(exc).__name__}: {exc})"
    results = []
    for name in selected:
        result = run_one(name, url, args.messages, args.timeout)
        result.update(machine)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def run_one(name: str, url: str, messages: int | None, timeout: float | None) -> dict[str, Any]:
    module = importlib.import_module(module_name(name))
    n = messages or module.DEFAULT_MESSAGES
    if timeout is None:
        timeout = SCENARIO_LIMIT if messages is None else max(SCENARIO_LIMIT, timeout_for(n))
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    try:
        figures = run_loop(lambda: asyncio.wait_for(module.measure(url, n), timeout))
    except TimeoutError:
        error = f"did not finish within {timeout:g}s"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        took = time.perf_counter() - started
        progress(f"{name}: {headline(figures)} ({took:.1f} s)")
        return {"scenario": name, **figures, "load_1m_before": load}
    progress(f"{name}: FAILED: {error}")
    return {"scenario": name, "error": error}


def headline(figures: dict[str, Any]) -> str:
    parts = []
    if "msgs_per_s" in figures:
        parts.append(f"{figures['msgs_per_s']:,.0f} msgs/s")
    if "topic_msgs_per_s" in figures:
        parts.append(f"{figures['topic_msgs_per_s']:,.0f} msgs/s through munggoggo.topic")
    if "calls_per_s" in figures:
        parts.append(f"{figures['calls_per_s']:,.0f} calls/s")
    if "p50_us" in figures:
        parts.append(f"p50 {figures['p50_us']:,.0f} us, p99 {figures['p99_us']:,.0f} us")
    if "rss_growth_mb" in figures:
        parts.append(f"RSS +{figures['rss_growth_mb']:.1f} MiB")
    return ", ".join(parts)
