"""`python -m bench scaleout [--workers 1,2,4] [--work-us 0,100] [--seconds 8] [--json]`.

Competing consumers: N agent processes (bench/scaleout/procs.py) each run a behaviour on
one shared queue (`Behaviour(queue=...)`) subscribed to a work topic; one more process
publishes to that topic at full speed. For each per-message work level (`--work-us`: CPU
a handler spins per message, 0 = messaging only) and each N, the consumers' counters are
sampled over `--seconds` after a 2 s warm-up: consumed msgs/s in total and per process,
published msgs/s, and the CPU the broker (its beam.smp processes), the consumers and the
producer used meanwhile, in cores. A fresh queue per configuration, deleted after it.

Writes docs/scaleout.md (a table) and docs/scaleout.png (the curve) unless `--no-docs`;
one result object per configuration on stdout (JSON lines with --json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import uuid
from pathlib import Path
from typing import Any

from ..common import (
    broker_cpu_seconds,
    broker_url,
    broker_version,
    emit,
    environment,
    progress,
    run_loop,
)
from .procs import consume, produce

DOCS = Path(__file__).resolve().parents[2] / "docs"
WARMUP = 2.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated counts, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_int_list, default=[1, 2, 4], help="e.g. 1,2,4")
    parser.add_argument(
        "--work-us", type=_int_list, default=[0, 100], help="CPU per message, e.g. 0,100"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per point")
    parser.add_argument("--queue-type", choices=["transient", "quorum"], default="transient")
    parser.add_argument("--url", default=None, help="broker URL (default MUNGGOGGO_URL)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/scaleout.*")
    parser.add_argument(
        "--input", type=Path, help="write the docs from these JSON lines instead of measuring"
    )


def main(args: argparse.Namespace) -> int:
    from munggoggo.client import install_uvloop

    install_uvloop()
    if args.input is not None:
        results = [json.loads(line) for line in args.input.read_text().splitlines() if line]
        _write_docs(results, args)
        return 0
    url = broker_url(args.url)
    machine = environment(True)
    machine["broker"] = run_loop(lambda: broker_version(url))
    results = []
    for work_us in args.work_us:
        for workers in args.workers:
            if workers < 1:
                continue
            result = {**measure(url, workers, work_us, args.seconds, args.queue_type), **machine}
            progress(
                f"scaleout: {workers} worker(s), {work_us} us work: "
                f"{result['consumed_msgs_per_s']:,.0f} msgs/s consumed, broker "
                f"{result['broker_cores']} cores"
            )
            emit(result, args.json)
            results.append(result)
    if not args.no_docs:
        _write_docs(results, args)
    return 0


def _write_docs(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from .report import write

    write(results, DOCS / "scaleout.md", DOCS / "scaleout.png", args)
    progress("wrote docs/scaleout.md and docs/scaleout.png")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _snapshot(counts: Any, procs: list[Any]) -> dict[str, Any]:
    return {
        "t": time.perf_counter(),
        "counts": list(counts),
        "cpu": [_cpu_seconds(p.pid) for p in procs],
        "broker": broker_cpu_seconds(),
    }


def measure(url: str, workers: int, work_us: int, seconds: float, queue_type: str) -> dict:
    """One configuration: N consumers + the producer, sampled over `seconds`."""
    ctx = multiprocessing.get_context("spawn")
    rid = uuid.uuid4().hex[:8]
    spec = {
        "url": url,
        "rid": rid,
        "key": f"bench.scaleout.{rid}",
        "queue": f"bench.scaleout.{rid}",
        "work_us": work_us,
        "queue_type": queue_type,
    }
    counts = ctx.Array("q", workers + 1, lock=False)  # consumers..., then the producer
    stop = ctx.Event()
    load = round(os.getloadavg()[0], 2)
    procs, readies = [], []
    try:
        for slot in range(workers + 1):
            target = consume if slot < workers else produce
            ready = ctx.Event()
            proc = ctx.Process(target=target, args=(spec, slot, counts, ready, stop))
            proc.start()
            procs.append(proc)
            readies.append(ready)
            if slot == workers - 1:  # every consumer subscribed before the producer starts
                _wait_ready(readies, procs)
        _wait_ready(readies, procs)
        time.sleep(WARMUP)
        a = _snapshot(counts, procs)
        time.sleep(seconds)
        b = _snapshot(counts, procs)
    finally:
        stop.set()
        for proc in procs:
            proc.join(20)
            if proc.is_alive():
                proc.terminate()
        run_loop(lambda: _delete_queue(url, spec["queue"]))
    wall = b["t"] - a["t"]
    per_worker = [round((b["counts"][i] - a["counts"][i]) / wall) for i in range(workers)]
    cpu = [(y - x) / wall for x, y in zip(a["cpu"], b["cpu"], strict=True)]
    result: dict[str, Any] = {
        "workers": workers,
        "work_us": work_us,
        "queue_type": queue_type,
        "consumed_msgs_per_s": sum(per_worker),
        "per_worker_msgs_per_s": per_worker,
        "published_msgs_per_s": round((b["counts"][-1] - a["counts"][-1]) / wall),
        "consumers_cores": round(sum(cpu[:workers]), 2),
        "producer_cores": round(cpu[-1], 2),
        "seconds": round(wall, 2),
        "load_1m_before": load,
    }
    if a["broker"] is not None and b["broker"] is not None:
        result["broker_cores"] = round((b["broker"] - a["broker"]) / wall, 2)
    return result


def _wait_ready(readies: list[Any], procs: list[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for ready, proc in zip(readies, procs, strict=True):
        while not ready.wait(0.2):
            if not proc.is_alive():
                raise RuntimeError(f"a scaleout process exited with {proc.exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the scaleout processes did not start in time")


async def _delete_queue(url: str, queue: str) -> None:
    from munggoggo.client import Connection

    async with Connection(url, reconnect=False) as conn:
        await (await conn.channel(confirms=False)).queue_delete(queue)
