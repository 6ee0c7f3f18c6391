"""`python -m bench soak --minutes M [--rate R] [--interval 30] [--plot docs/soak.png]`.

The agent pipe under faults, for a long time: a publishing agent and a consuming agent
(the `agent` scenario's Reading messages over munggoggo.topic), both connected through
munggoggo.testing.fault_proxy, the publisher paced at half the pipe's maximum (measured first
through the proxy with the `agent` scenario, or `--rate`). Every `--interval` seconds a
fault, in rotation:

- `cut`: the proxy drops both agents' connections;
- `freeze`: the proxy moves no bytes until both agents noticed the missing heartbeats
  (the agents use heartbeat=2), then thaws;
- `close`: `rabbitmqctl close_connection` of the publisher's connection, next time the
  consumer's (found by connection name = agent identity);
- `restart` (only with `--faults ...,restart`): rabbitmqctl stop_app / start_app under the
  broker fault lock; the behaviour queue is then a quorum queue (durable, every message on
  disk), since a transient queue loses what it holds in a restart by RabbitMQ's design.

Reported (stdout, and JSON to `--output`): sent, confirmed, consumed (unique ids),
duplicates, lost (confirmed but never consumed: must be 0), failed and reported to the
publisher, reconnects, each fault with the seconds until messages flowed again, and RSS
over time; a PNG of throughput and RSS over time goes to `--plot`. The exit status is 1
when anything was lost or left unsettled, or a fault could not be made or was never
recovered from.

The publisher is paced by a token bucket holding at most 0.1 s of messages: time lost in
a fault is not made up in a burst, so the offered load stays at the chosen rate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from ..common import (
    broker_url,
    emit,
    environment,
    progress,
    run_loop,
    use_uvloop,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
FAULTS = ("cut", "freeze", "close", "restart")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    parser.add_argument(
        "--rate", type=float, default=None, help="msgs/s (default: half the measured maximum)"
    )
    parser.add_argument(
        "--calibrate-messages",
        type=int,
        default=50_000,
        help="messages for measuring the maximum rate through the proxy",
    )
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between faults")
    parser.add_argument(
        "--faults",
        default="cut,freeze,close",
        help=f"comma-separated rotation out of {', '.join(FAULTS)}",
    )
    parser.add_argument("--heartbeat", type=int, default=2, help="AMQP heartbeat, seconds")
    parser.add_argument("--sample", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--plot", type=Path, default=DOCS / "soak.png", help="PNG to write")
    parser.add_argument("--output", type=Path, default=DOCS / "soak.json", help="JSON to write")
    parser.add_argument("--url", default=None, help="broker URL (default MUNGGOGGO_URL)")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")


def main(args: argparse.Namespace) -> int:
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown or not faults:
        progress(f"soak: unknown fault(s) {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        return 2
    uvloop = use_uvloop(not args.no_uvloop)
    url = broker_url(args.url)
    from .run import Soak

    soak = Soak(
        url,
        minutes=args.minutes,
        rate=args.rate,
        calibrate_messages=args.calibrate_messages,
        interval=args.interval,
        faults=faults,
        heartbeat=args.heartbeat,
        sample=args.sample,
    )
    started = datetime.datetime.now(datetime.UTC)
    result = run_loop(soak.run)
    result["environment"] = environment(uvloop)
    result["started_at"] = started.isoformat(timespec="seconds")
    result["command"] = " ".join(["python -m bench", *sys.argv[1:]])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    from .plot import plot

    plot(result, args.plot)
    progress(f"soak: wrote {os.path.relpath(args.output)} and {os.path.relpath(args.plot)}")
    emit(result["summary"], args.json)
    return 0 if result["summary"]["ok"] else 1
