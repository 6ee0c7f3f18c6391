"""What every scenario shares: the environment record, progress on stderr, result output.

A result is a flat dict; `emit()` prints it as one JSON object (machine use, stdout only)
or as a two-column table. Progress lines never go to stdout, so `--json` output can be
piped straight into `jq` or a report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from munggoggo.perf_stats import LatencyHistogram

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

T = TypeVar("T")


def broker_url(url: str | None) -> str:
    return url or os.environ.get("MUNGGOGGO_URL") or DEFAULT_URL


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def environment(uvloop: bool) -> dict[str, Any]:
    from munggoggo._speedups import USING_EXTENSIONS

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "uvloop": uvloop,
        "extensions": USING_EXTENSIONS,
        "cpus": os.cpu_count(),
    }


def use_uvloop(wanted: bool) -> bool:
    """Install uvloop's policy the way applications do; returns whether it is in use."""
    if not wanted:
        return False
    from munggoggo.client import install_uvloop

    return install_uvloop()


def run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one measurement in a fresh event loop, so runs share no loop state."""
    return asyncio.run(main())


class Stopwatch:
    """Wall and process CPU time of one timed section, and the broker's CPU time when the
    broker runs on this machine (`broker` is None otherwise)."""

    __slots__ = ("broker", "broker0", "cpu", "cpu0", "wall", "wall0")

    def start(self) -> None:
        self.broker0 = broker_cpu_seconds()
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        broker = broker_cpu_seconds()
        self.broker = None if broker is None or self.broker0 is None else broker - self.broker0

    def figures(self, count: int, unit: str = "msg") -> dict[str, Any]:
        """`seconds`, client and broker CPU µs per message (or call) of `count` of them."""
        out: dict[str, Any] = {
            "seconds": round(self.wall, 3),
            f"cpu_us_per_{unit}": round(self.cpu / count * 1e6, 2),
        }
        if self.broker is not None:
            out[f"broker_cpu_us_per_{unit}"] = round(self.broker / count * 1e6, 1)
        return out


def rate(messages: int, seconds: float) -> float:
    return round(messages / seconds, 1) if seconds > 0 else 0.0


def timeout_for(messages: int, slowest_rate: float = 1000) -> float:
    """Generous: below `slowest_rate` msgs/s something is broken, not slow."""
    return 30 + messages / slowest_rate


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=False))
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        if isinstance(value, float):
            shown = f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
        elif isinstance(value, int) and not isinstance(value, bool):
            shown = f"{value:,}"
        else:
            shown = str(value)
        print(f"{key:<{width}}  {shown}")


def percentiles_us(samples_ns: Iterable[int]) -> tuple[float, float]:
    """(p50, p99) in microseconds of latency samples in nanoseconds.

    Read from `munggoggo bench`'s histogram (munggoggo.perf_stats.LatencyHistogram, within
    0.8% of the exact rank), so these scenarios and the installed tool agree on what a
    percentile is."""
    histogram = LatencyHistogram()
    for sample in samples_ns:
        histogram.record(sample)
    if not histogram.count:
        raise ValueError("no latency samples")
    return (
        round(histogram.percentile(0.50) / 1000, 1),
        round(histogram.percentile(0.99) / 1000, 1),
    )


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


async def broker_version(url: str) -> str:
    """`RabbitMQ <version>` as the broker announces itself (one short connection)."""
    from munggoggo.client import Connection

    async with Connection(url, reconnect=False) as conn:
        props = conn.server_properties
        product = props.get("product", "broker")
        return f"{product} {props.get('version', '?')}"


def check(condition: bool, message: str) -> None:
    """A count or content check of a run: fails the scenario loudly when it does not hold."""
    if not condition:
        raise RuntimeError(message)


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_broker_pids: list[int] | None = None
_broker_port: int | None = None


def watch_broker(url: str) -> None:
    """Count the CPU of the broker node behind `url` only (several nodes may run here:
    RabbitMQ 3.10 and 4.3, a local cluster). Call before the first broker_cpu_seconds()."""
    global _broker_port, _broker_pids
    _broker_port = urlsplit(url.split(",")[0].strip()).port or 5672
    _broker_pids = None


def _node_port(pid: str) -> int:
    """The AMQP port a beam.smp was started for (RABBITMQ_NODE_PORT, 5672 by default)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        for item in f.read().split(b"\0"):
            if item.startswith(b"RABBITMQ_NODE_PORT="):
                return int(item.partition(b"=")[2] or 5672)
    return 5672


def broker_cpu_seconds() -> float | None:
    """CPU seconds used so far by the RabbitMQ on this machine (its beam.smp processes; only
    the node `watch_broker` named, if it was called), or None when none is visible here (a
    remote broker, another container, no /proc)."""
    global _broker_pids
    if _broker_pids is None:
        _broker_pids = []
        try:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/comm") as f:
                            if f.read().strip() != "beam.smp":
                                continue
                        if _broker_port is None or _node_port(entry) == _broker_port:
                            _broker_pids.append(int(entry))
                    except (OSError, ValueError):
                        continue
        except OSError:
            pass
    total = 0
    found = False
    for pid in _broker_pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        found = True
    return total / _CLK_TCK if found else None
