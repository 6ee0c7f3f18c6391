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
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

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
    """Wall and process CPU time of one timed section."""

    __slots__ = ("cpu", "cpu0", "wall", "wall0")

    def start(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


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
