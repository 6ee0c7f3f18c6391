"""`python -m bench gateway [--connections 64] [--duration 10] [--warmup 2] [--json]`.

HTTP JSON-RPC 2.0 calls into an agent's exposed method through a gateway, driven by wrk
at `--connections` keep-alive connections, for two stacks one after the other in one run
(never both at once: they would share the machine's cores):

- munggoggo: `munggoggo gateway --workers 1` in a subprocess; behind it a munggoggo agent
  (bench/gateway/agent.py) in a process of its own exposing `mul` and `echo`;
- baseline: what the original project did (bench/gateway/baseline_starlette.py): a Starlette app
  under uvicorn calling `aio_pika.patterns.RPC`, and an aio-pika RPC worker process
  registering the same methods.

Each side: start the agent process (it announces `ready`), start the HTTP server, poll until
a JSON-RPC POST through it comes back with the right result, warm up for `--warmup`
seconds (not counted), then measure for `--duration` seconds. Every request is
`{"jsonrpc":"2.0","method":"<identity>.mul","params":{"a":6,"b":7},"id":1}`; an answer
counts as an error unless it is a 2xx carrying `"result": 42` (see bench/gateway/load.py).
After the run a few direct requests with their own ids are checked field by field.

One JSON object: `rps`, `p50_ms`, `p99_ms`, `errors` for munggoggo, the same four with a
`baseline_` prefix, and `ratio` (rps / baseline_rps). Then the CPU each process used during
the measured window, in percent of one core (`gateway_cpu_pct`, `agent_cpu_pct`,
`broker_cpu_pct`, `wrk_cpu_pct`, and the baseline's) and in CPU microseconds per request
(`..._cpu_us_per_req`: on a small machine these shares decide the ceiling); `other_cpu_pct`
is the rest of the machine's busy time (kernel, other processes: high means a disturbed
run). Then whether the issue's targets were met, and the machine. `--profile FILE` also
records the gateway's worker with py-spy (raw collapsed stacks) during the measured window
and adds its top self-time frames.
All traffic stays on 127.0.0.1; every process started is stopped when the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from munggoggo.testing import free_port

from ..common import broker_cpu_seconds, broker_url, broker_version, environment, progress
from .load import run_wrk, summary, wrk_path, wrk_version
from .procs import (
    Process,
    Processes,
    busiest,
    machine_busy_seconds,
    sample_check,
    top_self_frames,
    wait_answering,
)

# The targets at 64 connections
TARGET_RPS = 8000
TARGET_RATIO = 5.0
TARGET_P99_MS = 25.0

START_TIMEOUT = 60.0  # seconds for a side's processes to come up and answer

METHODS = {  # method -> (params by name, expected result)
    "mul": ({"a": 6, "b": 7}, 42),
    "echo": ({"x": "munggoggo"}, "munggoggo"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds (2)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--workers", type=int, default=1, help="gateway workers (1)")
    parser.add_argument("--method", choices=list(METHODS), default="mul")
    parser.add_argument(
        "--side",
        choices=["both", "gateway", "baseline"],
        default="both",
        help="measure both stacks (default) or one of them",
    )
    parser.add_argument("--url", default=None, help="broker URL (default MUNGGOGGO_URL)")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also measure wrk against a trivial server (the load generator's ceiling)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        default=None,
        help="py-spy record the gateway worker into FILE (raw) during the measured window",
    )
    parser.add_argument("--profile-seconds", type=int, default=5)


# -- the two stacks ----------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[2]  # where `bench` is importable from


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def bench_env() -> dict[str, str]:
    """`python -m bench.<module>` works in the child wherever the bench was started from."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(REPO) if not path else f"{REPO}{os.pathsep}{path}"}


def munggoggo_command() -> list[str]:
    """The `munggoggo` console script of this interpreter's environment (or its twin)."""
    script = Path(sys.executable).with_name("munggoggo")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from munggoggo.cli import main; sys.exit(main())"]


def gateway_available() -> str | None:
    """None when `munggoggo gateway --help` works; otherwise why not."""
    try:
        done = subprocess.run(
            [*munggoggo_command(), "gateway", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip()[-500:] or f"exit status {done.returncode}"
    return None


def start_munggoggo(procs: Processes, identity: str, port: int, url: str, workers: int) -> Any:
    agent = procs.start(
        "agent",
        python_module("bench.gateway.agent", "--identity", identity, "--url", url),
        bench_env(),
        ready_line=True,
    )
    agent.wait_ready_line(START_TIMEOUT)
    server = procs.start(
        "munggoggo gateway",
        [
            *munggoggo_command(),
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--url",
            url,
        ],
    )
    return agent, server


def start_baseline(procs: Processes, identity: str, port: int, url: str) -> Any:
    agent = procs.start(
        "aio-pika RPC worker",
        python_module(
            "bench.gateway.baseline_starlette", "worker", "--identity", identity, "--url", url
        ),
        bench_env(),
        ready_line=True,
    )
    agent.wait_ready_line(START_TIMEOUT)
    server = procs.start(
        "Starlette/uvicorn baseline",
        python_module(
            "bench.gateway.baseline_starlette",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--url",
            url,
        ),
        bench_env(),
    )
    return agent, server


# -- one side ----------------------------------------------------------------------------


def measure_side(
    side: str,
    url: str,
    *,
    method: str = "mul",
    connections: int = 64,
    duration: float = 10,
    warmup: float = 2,
    threads: int = 1,
    workers: int = 1,
    profile: str | None = None,
    profile_seconds: int = 5,
) -> dict[str, Any]:
    """Start one stack (`gateway` or `baseline`), load it, stop it; its figures."""
    identity = f"bench-gw-{uuid.uuid4().hex[:8]}"
    params, expected = METHODS[method]
    request = {"jsonrpc": "2.0", "method": f"{identity}.{method}", "params": params, "id": 1}
    body = json.dumps(request, separators=(",", ":")).encode()
    expected_json = json.dumps(expected, separators=(",", ":"))
    port = free_port()
    target = f"http://127.0.0.1:{port}/jsonrpc"
    with Processes() as procs:
        if side == "gateway":
            agent, server = start_munggoggo(procs, identity, port, url, workers)
        elif side == "baseline":
            agent, server = start_baseline(procs, identity, port, url)
        elif side == "trivial":
            server = procs.start(
                "trivial server",
                python_module("bench.gateway.load", "trivial", "--port", str(port)),
                bench_env(),
                ready_line=True,
            )
            server.wait_ready_line(START_TIMEOUT)
            agent = None
        else:
            raise ValueError(f"unknown side {side!r}")
        live = [p for p in (agent, server) if p is not None]
        wait_answering(port, body, expected, START_TIMEOUT, live)
        if warmup > 0:
            run_wrk(
                target,
                body,
                expected_json,
                connections=connections,
                duration=warmup,
                threads=threads,
            )
        spy = None
        if profile:
            spy = start_profile(server, profile, profile_seconds)
        cpu0 = snapshot(server, agent)
        wall0 = time.perf_counter()
        result = run_wrk(
            target,
            body,
            expected_json,
            connections=connections,
            duration=duration,
            threads=threads,
        )
        wall = time.perf_counter() - wall0
        cpu1 = snapshot(server, agent)
        for proc in live:
            proc.check_alive()
        # (the trivial server answers every request alike: nothing to check per request)
        sample_bad = sample_check(port, request, expected) if agent is not None else 0
        if spy is not None:
            spy.wait(timeout=profile_seconds + 30)
    figures = summary(result)
    figures["errors"] += sample_bad
    figures["sample_errors"] = sample_bad
    used = {name: delta(cpu0[name], cpu1[name]) for name in cpu0}
    used["wrk"] = result.cpu_seconds
    # Busy CPU of the whole machine minus the processes above: other work, kernel time
    # (loopback networking) and the bench itself. Large values mean a disturbed run.
    machine = used.pop("machine")
    if machine is not None:
        used["other"] = machine - sum(v for v in used.values() if v is not None)
    for name, seconds in used.items():
        if seconds is None:
            continue
        figures[f"{name}_cpu_pct"] = round(100 * seconds / wall, 1)
        figures[f"{name}_cpu_us_per_req"] = round(seconds / max(1, result.requests) * 1e6, 1)
    if profile:
        figures["profile_file"] = profile
        figures["profile_top_self"] = [
            f"{share}% {frame}" for frame, share in top_self_frames(profile)
        ]
    return figures


def snapshot(server: Process, agent: Process | None) -> dict[str, float | None]:
    return {
        "server": server.cpu_seconds(),
        "agent": agent.cpu_seconds() if agent is not None else None,
        "broker": broker_cpu_seconds(),
        "machine": machine_busy_seconds(),
    }


def delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def start_profile(server: Process, out: str, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy on the server's busiest process (granian's worker, not its supervisor)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(spy):
        raise RuntimeError("py-spy not found (pip install py-spy)")
    worker = busiest(server.tree())
    progress(f"py-spy: recording pid {worker} for {seconds}s into {out}")
    return subprocess.Popen(
        [spy, "record", "-p", str(worker), "-d", str(seconds), "-o", out, "-f", "raw"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- the command ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = broker_url(args.url)
    wrk_path()  # fail early, with the install hint
    if args.connections < 1 or args.duration < 1 or args.warmup < 0:
        raise ValueError("--connections and --duration must be >= 1, --warmup >= 0")
    if args.side in ("both", "gateway"):
        why = gateway_available()
        if why is not None:
            raise RuntimeError(f"`munggoggo gateway` is not available: {why}")
    common = {
        "method": args.method,
        "connections": args.connections,
        "duration": args.duration,
        "warmup": args.warmup,
        "threads": args.threads,
    }
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    out: dict[str, Any] = {}
    if args.side in ("both", "gateway"):
        progress(
            f"gateway: munggoggo gateway --workers {args.workers}, {args.connections} "
            f"connections, {args.warmup}+{args.duration} s"
        )
        mine = measure_side(
            "gateway",
            url,
            workers=args.workers,
            profile=args.profile,
            profile_seconds=args.profile_seconds,
            **common,
        )
        progress(f"gateway: {headline(mine)}")
        out.update({k: mine.pop(k) for k in ("rps", "p50_ms", "p99_ms", "errors")})
    if args.side in ("both", "baseline"):
        progress(
            f"baseline: Starlette + uvicorn + aio_pika.patterns.RPC, "
            f"{args.connections} connections, {args.warmup}+{args.duration} s"
        )
        base = measure_side("baseline", url, **common)
        progress(f"baseline: {headline(base)}")
        out.update({f"baseline_{k}": base.pop(k) for k in ("rps", "p50_ms", "p99_ms", "errors")})
    if args.side == "both":
        out["ratio"] = round(out["rps"] / out["baseline_rps"], 2) if out["baseline_rps"] else None
    if args.side in ("both", "gateway"):
        out.update({k.replace("server_", "gateway_", 1): v for k, v in mine.items()})
    if args.side in ("both", "baseline"):
        out.update({f"baseline_{k}": v for k, v in base.items()})
    if args.calibrate:
        progress("calibrate: wrk against a trivial uvloop server")
        ceiling = measure_side("trivial", url, **{**common, "method": "mul"})
        out["wrk_ceiling_rps"] = ceiling["rps"]
        out["wrk_ceiling_wrk_cpu_pct"] = ceiling.get("wrk_cpu_pct")
        out["wrk_ceiling_errors"] = ceiling["errors"]
    if args.side == "both":
        out["targets"] = targets(out)
        out["targets_met"] = all(out["targets"].values())
    out.update(
        {
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "wrk_threads": args.threads,
            "gateway_workers": args.workers,
            "method": args.method,
            "load_1m_before": load,
            "wrk": wrk_version(),
        }
    )
    machine = environment(False)
    machine.pop("uvloop")  # the bench process itself runs no event loop that matters
    out.update(machine)
    try:
        out["broker"] = asyncio.run(asyncio.wait_for(broker_version(url), 15))
    except Exception as exc:
        out["broker"] = f"unknown ({type(exc).__name__}: {exc})"
    return out


def targets(out: dict[str, Any]) -> dict[str, bool]:
    return {
        f"rps>={TARGET_RPS}": out["rps"] >= TARGET_RPS,
        f"ratio>={TARGET_RATIO:g}": (out.get("ratio") or 0) >= TARGET_RATIO,
        f"p99_ms<={TARGET_P99_MS:g}": out["p99_ms"] <= TARGET_P99_MS,
        "errors==0": out["errors"] == 0,
    }


def headline(figures: dict[str, Any]) -> str:
    return (
        f"{figures['rps']:,.0f} req/s, p50 {figures['p50_ms']:.2f} ms, "
        f"p99 {figures['p99_ms']:.2f} ms, {figures['errors']} errors "
        f"({figures['requests']:,} requests)"
    )
