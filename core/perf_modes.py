"""`munggoggo bench --mode`: the options of the agents and rpc modes, and which run to start.

Queue mode (PerfTest's) is the default and `perf_run.run_bench`; `--mode agents` is
`perf_agents.AgentsRun`, `--mode rpc` is `perf_rpc.RpcRun`. Both share the queue mode's
options that mean the same thing for them (`--url`, `--rate`, `--time`, `--pmessages`,
`--consumer-latency`, `--size` for agents) and refuse the others with a clear error, so a
command line never silently measures something else than it says.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .perf_agents import AgentsRun
from .perf_body import MIN_SIZE
from .perf_rpc import RpcRun
from .perf_run import BenchConfig, RunStats

__all__ = ["MODES", "ModeRun", "add_mode_arguments", "check_mode_args", "mode_run"]

MODES = ("queue", "agents", "rpc")

# Queue-mode options the other modes do not use: option name -> (args attribute, default).
_QUEUE_ONLY: dict[str, tuple[str, Any]] = {
    "--producers": ("producers", 1),
    "--consumers": ("consumers", 1),
    "--cmessages": ("cmessages", 0),
    "--confirm": ("confirm", 0),
    "--multi-ack-every": ("multi_ack_every", 0),
    "--qos": ("qos", 0),
    "--autoack": ("autoack", False),
    "--exchange": ("exchange", ""),
    "--type": ("type", ""),
    "--routing-key": ("routing_key", None),
    "--queue": ("queue", None),
    "--queue-pattern": ("queue_pattern", None),
    "--quorum-queue": ("quorum_queue", False),
    "--flag": ("flag", []),
    "--variable-rate": ("variable_rate", []),
}


class ModeRun(Protocol):
    """A run of another mode than queue: called like `run_bench`, with keys of its own."""

    def __call__(
        self,
        config: BenchConfig,
        stats: RunStats,
        on_second: Callable[[RunStats, float], None] | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Run the load (see `perf_run.run_bench`)."""
        ...

    def figures(self, stats: RunStats) -> dict[str, Any]:
        """The mode's `--json` keys, added to (or replacing) the summary's.

        Args:
            stats: the finished run's stats.

        Returns:
            The keys and their values.
        """
        ...


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--mode`, `--agents`, `--behaviours` and `--concurrency` to `bench`'s parser.

    Args:
        parser: the `bench` subcommand's parser.
    """
    a = parser.add_argument
    a(
        "--mode",
        choices=MODES,
        default="queue",
        help="queue: producers and consumers (PerfTest's); agents: behaviours publishing "
        "and consuming through munggoggo.topic; rpc: concurrent calls of an @expose method",
    )
    a(
        "--agents",
        type=_positive_int,
        default=None,
        help="agents (--mode agents, default 2) or server agents (--mode rpc, default 1)",
    )
    a(
        "--behaviours",
        type=_positive_int,
        default=None,
        help="behaviours per agent, each publishing and consuming (--mode agents, default 2)",
    )
    a(
        "--concurrency",
        type=_positive_int,
        default=None,
        help="concurrent callers (--mode rpc, default 1)",
    )


def check_mode_args(args: argparse.Namespace) -> None:
    """Refuse options that do not go with the chosen mode.

    Args:
        args: the parsed `bench` options.

    Raises:
        ValueError: a mode's option given to another mode, or a queue-mode option given to
            the agents or rpc mode.
    """
    mode = getattr(args, "mode", "queue")
    if mode not in MODES:
        raise ValueError(f"unknown --mode {mode!r}: choose one of {', '.join(MODES)}")
    agents = getattr(args, "agents", None)
    behaviours = getattr(args, "behaviours", None)
    concurrency = getattr(args, "concurrency", None)
    if mode == "queue":
        for option, value in (
            ("--agents", agents),
            ("--behaviours", behaviours),
            ("--concurrency", concurrency),
        ):
            if value is not None:
                raise ValueError(f"{option} needs --mode agents or --mode rpc")
        return
    if mode == "agents" and concurrency is not None:
        raise ValueError("--concurrency goes with --mode rpc, not --mode agents")
    if mode == "rpc" and behaviours is not None:
        raise ValueError("--behaviours goes with --mode agents, not --mode rpc")
    if mode == "rpc" and args.size != MIN_SIZE:
        raise ValueError("--size does not apply to --mode rpc (calls carry no body of that size)")
    for option, (attribute, default) in _QUEUE_ONLY.items():
        if getattr(args, attribute, default) != default:
            raise ValueError(f"{option} is a queue-mode option: it does not apply to --mode {mode}")


def mode_run(args: argparse.Namespace, config: BenchConfig) -> ModeRun | None:
    """The run of `--mode agents` or `--mode rpc`; sets the config's producer count.

    Args:
        args: the parsed (and checked) `bench` options.
        config: the run's configuration: `producers`/`consumers` become the publishing
            behaviours (agents) or the callers (rpc), for the `--rate` check.

    Returns:
        The run, or None for queue mode.
    """
    mode = getattr(args, "mode", "queue")
    if mode == "agents":
        run_agents = AgentsRun(args.agents or 2, args.behaviours or 2)
        config.producers = config.consumers = run_agents.agents * run_agents.behaviours
        return run_agents
    if mode == "rpc":
        run_rpc = RpcRun(args.agents or 1, args.concurrency or 1)
        config.producers = config.consumers = run_rpc.concurrency
        return run_rpc
    return None
