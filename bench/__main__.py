"""`python -m bench <command> [options]`.

- `engine`: the raw client pipe, munggoggo vs aiormq, one result (the original bench);
- `throughput --scenario NAME|all`: the scenarios of bench/throughput/scenarios/, one
  result each;
- `gateway [--connections 64] [--duration 10]`: HTTP JSON-RPC into an agent through
  `munggoggo gateway` and through the Starlette + aio-pika baseline, driven by wrk;
- `dashboards [--minutes 3]`: the Grafana dashboards drawn from a loaded mesh's real data;
- `soak [--minutes 10] [--rate R] [--plot docs/soak.png]`: the agent pipe under a fault
  every 30 s; exit status 1 when a confirmed message was lost;
- `idle [--seconds 5] [--no-pacing]`: CPU and steps of an idle behaviour polling `receive()`;
- `recovery [--rounds 5]`: how fast a deleted behaviour queue or inbox is consumed again, and
  how fast a call in flight fails when the caller's connection drops;
- `report [--input FILE]`: docs/bench-results.md and docs/bench-throughput.png;
- `cluster start|stop|status|failover`: a 3-node RabbitMQ cluster on this machine, and a
  node stopped under a confirmed stream between agents with a failover URL list.
- `scaleout [--workers 1,2,4] [--work-us 0,100]`: competing consumers across agent
  processes; docs/scaleout.md and docs/scaleout.png.

A command module has `add_arguments(parser)` and either `run(args) -> dict` (one result,
printed by `emit`) or `main(args) -> int` (it prints its own output; the exit status). The
commands live in subpackages by family (bench/throughput/, gateway/, soak/, scaleout/,
cluster/, dashboards/, recovery/; each family's own command in its `command.py`); what they share is
in bench/common.py (arguments, clocks, output) and bench/mesh.py (the agent-level message
and behaviours); bench/micro/ holds the pytest-benchmark micro benches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .common import emit, progress

# name -> (module, help). Modules import their clients inside run()/main(), so the parser
# builds even where a baseline client is not installed.
COMMANDS: dict[str, tuple[str, str]] = {
    "engine": (
        "bench.throughput.engine",
        "raw client pipe (publish with confirms + consume with acks), munggoggo vs aiormq",
    ),
    "throughput": (
        "bench.throughput.command",
        "scenarios from the broker's ceiling to agents and RPC, plus aiormq/aio-pika baselines",
    ),
    "gateway": (
        "bench.gateway.command",
        "HTTP JSON-RPC through `munggoggo gateway` vs a Starlette + aio-pika RPC baseline (wrk)",
    ),
    "dashboards": (
        "bench.dashboards.command",
        "run a loaded mesh + gateway under Prometheus; draw grafana/dashboards/ into docs/",
    ),
    "soak": (
        "bench.soak.command",
        "the agent pipe through a fault proxy at half its maximum, a fault every 30 s; "
        "counts lost/duplicated messages, RSS over time (JSON + PNG)",
    ),
    "cluster": (
        "bench.cluster.command",
        "a 3-node RabbitMQ cluster on this machine (start, stop, status); failover: a node "
        "stopped under a confirmed stream, exit 1 on any loss",
    ),
    "scaleout": (
        "bench.scaleout.command",
        "competing consumers: 1, 2, 4 agent processes on one shared queue, a producer at full "
        "speed; writes docs/scaleout.md and docs/scaleout.png",
    ),
    "idle": (
        "bench.throughput.idle",
        "what an idle behaviour polling receive() costs: CPU and steps over a window",
    ),
    "recovery": (
        "bench.recovery.command",
        "a deleted queue or inbox consumed again, a call in flight failing on a cut: times",
    ),
    "report": (
        "bench.report",
        "run (or read) all scenarios; write docs/bench-results.md and docs/bench-throughput.png",
    ),
}
SCENARIOS = COMMANDS  # the name before `throughput` existed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="munggoggo load benchmarks against RabbitMQ"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print JSON objects on stdout")
        importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args.module)
    try:
        if hasattr(module, "main"):
            return module.main(args)
        result = module.run(args)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except Exception as exc:
        progress(f"{args.command} failed: {type(exc).__name__}: {exc}")
        return 1
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
