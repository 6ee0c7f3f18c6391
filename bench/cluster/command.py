"""`python -m bench cluster start|stop|status|failover [--json]`.

- `start`: a 3-node RabbitMQ cluster on this machine (munggoggo.testing.cluster: nodes
  rabbit-c1..3@localhost, AMQP 5681-5683, everything under /var/tmp/munggoggo-cluster);
  prints the failover URL list for MUNGGOGGO_URL / --url;
- `stop`: halts the nodes and deletes their directory;
- `status`: which nodes answer, and the cluster as the first reachable node sees it;
- `failover`: bench/cluster/failover.py, a node stopped under a confirmed stream between two
  durable-mode agents; starts the cluster for the run (and stops it after) unless one is
  running. Exit status 1 when a confirmed message was lost or the agents did not recover.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from munggoggo.testing import Cluster, ClusterError

from ..common import emit, progress, use_uvloop


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status", "failover"])
    parser.add_argument("--after", type=int, default=3000, help="failover: messages after")


def main(args: argparse.Namespace) -> int:
    cluster = Cluster()
    try:
        if args.action == "start":
            cluster.start()
            urls = ",".join(cluster.urls)
            progress(f"cluster running: {', '.join(cluster.running_nodes())}")
            print(json.dumps({"urls": urls}) if args.json else f"MUNGGOGGO_URL={urls}")
            return 0
        if args.action == "stop":
            cluster.stop()
            progress(f"cluster stopped, {cluster.base} removed")
            return 0
        if args.action == "status":
            emit(cluster.status(), args.json)
            return 0
        return _failover(cluster, args)
    except ClusterError as exc:
        progress(f"cluster {args.action}: {exc}")
        return 1


def _failover(cluster: Cluster, args: argparse.Namespace) -> int:
    from .failover import failover

    ours = not cluster.status()["running"]
    if ours:
        progress("starting a 3-node cluster for the run")
        cluster.start()
    try:
        use_uvloop(True)
        result = asyncio.run(failover(cluster, after=args.after))
    finally:
        if ours:
            cluster.stop()
    emit(result, args.json)
    return 0 if result["lost"] == 0 and result["failed_reported"] == 0 else 1
