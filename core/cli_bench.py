"""`munggoggo bench`: a PerfTest-compatible load tool on munggoggo's own AMQP engine.

Owns the subcommand's options (PerfTest's names and short flags), their checks, the
per-second lines, the final summary, `--json` and `--csv`. The run itself is
`perf_run.run_bench`; bodies are `perf_body`'s, statistics `perf_stats`'.

Exit status: 0 done; 1 the run failed (a broker error, an unreachable broker, a refused
login) or a `--rate` was not met; 2 an option error. Every failure is one line on stderr,
and the summary of what ran is printed all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .amqp.errors import AMQPError
from .client import install_uvloop
from .perf_body import MIN_SIZE
from .perf_metrics import BenchCollector, serve_bench_metrics
from .perf_modes import add_mode_arguments, check_mode_args, mode_run
from .perf_report import RowRecorder, render_report, run_options, write_report
from .perf_run import BenchConfig, RunStats, run_bench
from .perf_scale import ScaleError, run_processes
from .url import DEFAULT_URL, URLError, parse_urls

__all__ = ["add_parser", "cmd_bench", "config_from_args", "rate_error", "summary"]

_PATTERN = re.compile(r"%[-+ 0#]*\d*d")  # one printf integer conversion
_RATE_SLACK = 0.9  # a --rate counts as met at 90% of it (a run's first and last second)
_CSV_FIELDS = (
    "time_s",
    "sent",
    "confirmed",
    "nacked",
    "returned",
    "received",
    "latency_min_us",
    "latency_p50_us",
    "latency_p75_us",
    "latency_p95_us",
    "latency_p99_us",
    "latency_max_us",
    "confirm_p50_us",
    "confirm_p95_us",
    "confirm_p99_us",
)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate in msgs/s: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"rate must be a finite number, 0 or more: {text!r}")
    return value


def _variable_rate(text: str) -> tuple[float, float]:
    rate, sep, seconds = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected RATE:SECONDS, got {text!r}")
    duration = _rate(seconds)
    if duration <= 0:
        raise argparse.ArgumentTypeError(f"SECONDS must be more than 0: {text!r}")
    return _rate(rate), duration


def _queue_name(pattern: str, number: int) -> str:
    """A --queue-pattern name: printf forms as PerfTest takes them ('perf-%d', 'q-%03d')."""
    if _PATTERN.search(pattern) is None:
        raise ValueError(f"--queue-pattern needs a %d (or a form like %03d): {pattern!r}")
    try:
        return pattern % number
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--queue-pattern {pattern!r}: {exc}") from None


def add_parser(sub: Any) -> None:
    """Add the `bench` subcommand to `munggoggo`'s subparsers.

    Args:
        sub: the object `ArgumentParser.add_subparsers()` returned.
    """
    p = sub.add_parser(
        "bench",
        help="load test: PerfTest-style producers and consumers (queue mode)",
        description=__doc__.splitlines()[0],
    )
    a = p.add_argument
    a(
        "--url",
        action="append",
        default=argparse.SUPPRESS,
        help="broker URL (repeatable, or comma-separated): connections take them in turn",
    )
    a("-x", "--producers", type=_non_negative_int, default=1, help="producer connections")
    a("-y", "--consumers", type=_non_negative_int, default=1, help="consumer connections")
    a(
        "-s",
        "--size",
        type=_non_negative_int,
        default=MIN_SIZE,
        help=f"message size in bytes (at least {MIN_SIZE}: sequence + timestamp)",
    )
    a("-r", "--rate", type=_rate, default=0.0, help="msgs/s per producer (0: as fast as possible)")
    a(
        "--variable-rate",
        type=_variable_rate,
        action="append",
        default=[],
        metavar="RATE:SECONDS",
        help="publish at RATE for SECONDS, then the next step (repeatable, cycled)",
    )
    a("-z", "--time", type=_rate, default=None, help="run this many seconds")
    a("-C", "--pmessages", type=_non_negative_int, default=0, help="messages per producer")
    a("-D", "--cmessages", type=_non_negative_int, default=0, help="messages per consumer")
    a(
        "-c",
        "--confirm",
        type=_non_negative_int,
        default=0,
        help="publisher confirms with at most this many unconfirmed per producer (0: off)",
    )
    a(
        "-ct",
        "--confirm-timeout",
        type=_rate,
        default=30.0,
        help="seconds to wait for outstanding confirms at the end; the rest count as unconfirmed",
    )
    a(
        "-A",
        "--multi-ack-every",
        type=_non_negative_int,
        default=0,
        help="ack with multiple=true every N messages (0: each message, coalesced per tick)",
    )
    a("-q", "--qos", type=_non_negative_int, default=0, help="consumer prefetch (0: unlimited)")
    a("-a", "--autoack", action="store_true", help="consume without acks")
    a("-e", "--exchange", default="", help="exchange (default: the default exchange)")
    a(
        "-t",
        "--type",
        default="",
        choices=("", "direct", "topic", "fanout"),
        help="exchange type to declare it with (default direct when --exchange is given)",
    )
    a(
        "-k",
        "--routing-key",
        default=None,
        help="routing key (and binding key) with --exchange; the default exchange routes "
        "by queue name",
    )
    a(
        "-u",
        "--queue",
        default=None,
        help="queue name, or several comma-separated (default: a generated one)",
    )
    a("--queue-pattern", default=None, help="queue names, printf form: 'perf-%%d', 'q-%%03d'")
    a("--queue-pattern-from", type=_non_negative_int, default=1)
    a("--queue-pattern-to", type=_non_negative_int, default=None)
    a("--quorum-queue", action="store_true", help="declare quorum queues (persistent messages)")
    a(
        "-f",
        "--flag",
        action="append",
        default=[],
        choices=("persistent", "mandatory"),
        help="message flag (repeatable)",
    )
    a(
        "-L",
        "--consumer-latency",
        type=_non_negative_int,
        default=0,
        help="microseconds each consumer spends per message",
    )
    # --mode agents / --mode rpc (core/perf_modes.py)
    add_mode_arguments(p)
    a("--json", action="store_true", help="end with one line: the run's figures as JSON")
    a("--csv", default=None, metavar="FILE", help="write the per-second rows to FILE")
    # Prometheus while running, an HTML report after (perf_metrics, perf_report)
    a(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve the run's figures to Prometheus on 0.0.0.0:PORT/metrics while it runs",
    )
    a(
        "--run-id",
        default=None,
        help="the run's id: where --workers-expected instances meet (default: from the "
        "options) and the metrics' run_id label (default: generated); the messages carry "
        "a fresh id of every run",
    )
    a("--report", default=None, metavar="FILE.html", help="write an HTML report of the run")
    # Several processes and hosts (perf_scale, perf_workers)
    a(
        "--processes",
        type=_positive_int,
        default=1,
        help="spread producers and consumers over N processes (one event loop each), merged",
    )
    a(
        "--workers-expected",
        type=_positive_int,
        default=1,
        metavar="N",
        help="N instances meet over the broker, start together, the first prints the merge",
    )
    a("--workers-timeout", type=_rate, default=60.0, help="seconds to wait for the instances")
    a("--child", action="store_true", help=argparse.SUPPRESS)  # one process of --processes
    p.set_defaults(handler=cmd_bench)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Check the options and build the run's configuration.

    Args:
        args: the parsed `bench` options.

    Returns:
        The configuration.

    Raises:
        ValueError: options that do not go together, or a bad URL.
    """
    check_mode_args(args)  # --mode agents / --mode rpc (core/perf_modes.py)
    given = getattr(args, "url", None)
    texts = given if isinstance(given, list) else [given or os.environ.get("MUNGGOGGO_URL")]
    urls = [u for text in texts for u in parse_urls(text or DEFAULT_URL)]
    if any(u.is_memory for u in urls):
        raise ValueError("bench needs a real broker: memory:// is not one")
    if args.queue and args.queue_pattern:
        raise ValueError("give --queue or --queue-pattern, not both")
    # PerfTest splits -u on commas: several queues, producers and consumers spread over them.
    queues: list[str] = [q for q in args.queue.split(",") if q] if args.queue else []
    if args.queue and not queues:
        raise ValueError(f"--queue names no queue: {args.queue!r}")
    if args.queue_pattern:
        if args.queue_pattern_to is None or args.queue_pattern_to < args.queue_pattern_from:
            raise ValueError("--queue-pattern needs --queue-pattern-to >= --queue-pattern-from")
        span = range(args.queue_pattern_from, args.queue_pattern_to + 1)
        queues = [_queue_name(args.queue_pattern, i) for i in span]
    if args.routing_key is not None and not args.exchange:
        raise ValueError(
            "--routing-key needs --exchange: with the default exchange the routing key is "
            "the queue name (give --queue)"
        )
    if args.type and not args.exchange:
        raise ValueError("--type declares the --exchange: give one (the default one has no type)")
    if args.qos and args.multi_ack_every > args.qos:
        raise ValueError("--multi-ack-every above --qos would stall: the ack never comes due")
    if args.autoack and args.multi_ack_every:
        raise ValueError("--autoack and --multi-ack-every do not go together")
    if args.producers == 0 and args.consumers == 0:
        raise ValueError("nothing to run: 0 producers and 0 consumers")
    return BenchConfig(
        urls=urls,
        producers=args.producers,
        consumers=args.consumers,
        size=max(MIN_SIZE, args.size),
        rate=args.rate,
        variable_rate=list(args.variable_rate),
        duration=args.time,
        pmessages=args.pmessages,
        cmessages=args.cmessages,
        confirm=args.confirm,
        multi_ack_every=args.multi_ack_every,
        qos=args.qos,
        autoack=args.autoack,
        exchange=args.exchange,
        exchange_type=args.type or ("direct" if args.exchange else ""),
        routing_key=args.routing_key,
        queues=queues,
        queue_pattern=bool(args.queue_pattern),
        quorum=args.quorum_queue,
        persistent="persistent" in args.flag or args.quorum_queue,
        mandatory="mandatory" in args.flag,
        consumer_latency_us=args.consumer_latency,
        confirm_timeout=args.confirm_timeout,
    )


class _Seconds:
    """The per-second printer: differences of the counters since the last line."""

    def __init__(self, out: TextIO, rows: Any) -> None:
        self.out = out
        self.rows = rows
        self.last = (0, 0, 0, 0, 0)

    def __call__(self, stats: RunStats, elapsed: float) -> None:
        now = (stats.published, stats.confirmed, stats.nacked, stats.returned, stats.consumed)
        sent, confirmed, nacked, returned, received = (
            a - b for a, b in zip(now, self.last, strict=True)
        )
        self.last = now
        latency, confirm = stats.tick()
        lat, con = latency.summary(), confirm.summary()
        print(
            f"time {elapsed:.1f} s, sent: {sent} msg/s, confirmed: {confirmed} msg/s, "
            f"nacked: {nacked} msg/s, returned: {returned} msg/s, received: {received} msg/s, "
            f"min/median/75th/95th/99th consumer latency: {lat['min']}/{lat['p50']}/"
            f"{lat['p75']}/{lat['p95']}/{lat['p99']} µs, confirm latency: {con['min']}/"
            f"{con['p50']}/{con['p75']}/{con['p95']}/{con['p99']} µs",
            file=self.out,
            flush=True,
        )
        if self.rows is not None:
            self.rows.writerow(
                (
                    f"{elapsed:.3f}",
                    sent,
                    confirmed,
                    nacked,
                    returned,
                    received,
                    lat["min"],
                    lat["p50"],
                    lat["p75"],
                    lat["p95"],
                    lat["p99"],
                    lat["max"],
                    con["p50"],
                    con["p95"],
                    con["p99"],
                )
            )


def summary(stats: RunStats) -> dict[str, Any]:
    """The run's figures, as `--json` prints them.

    Args:
        stats: a finished (or interrupted) run's stats.

    Returns:
        published, confirmed, nacked, returned, consumed, lost (never arrived, not in
        the queue), unconsumed (still in the queue at the end), foreign (messages of
        another run), duplicates, out_of_order, untimed, seconds (of publishing),
        publish_rate, consume_rate (msgs/s, the latter up to the last delivery), latency_us and
        confirm_latency_us (min, p50, p75, p95, p99, max), client_cpu_us_per_msg (process
        CPU time over the messages published and consumed).
    """
    seconds = max(stats.ended - stats.started, 1e-9) if stats.started else 0.0
    # Consumers finish after the producers: their rate runs to the last delivery.
    consume_seconds = max(stats.last_received - stats.started, seconds) if stats.started else 0.0
    messages = stats.published + stats.consumed
    cpu = stats.cpu_end - stats.cpu_start if stats.started else 0.0
    return {
        "published": stats.published,
        "confirmed": stats.confirmed,
        "nacked": stats.nacked,
        "returned": stats.returned,
        "consumed": stats.consumed,
        "lost": stats.lost(),
        "unconsumed": stats.unconsumed(),
        "foreign": stats.foreign,
        "duplicates": stats.duplicates(),
        "out_of_order": stats.out_of_order(),
        "untimed": stats.untimed,
        "seconds": round(seconds, 3),
        "publish_rate": round(stats.published / seconds, 1) if seconds else 0.0,
        "consume_rate": round(stats.consumed / consume_seconds, 1) if consume_seconds else 0.0,
        "latency_us": stats.latency_us.summary(),
        "confirm_latency_us": stats.confirm_latency_us.summary(),
        "client_cpu_us_per_msg": round(cpu * 1e6 / messages, 2) if messages else 0.0,
    }


def _print_summary(figures: dict[str, Any], out: TextIO) -> None:
    lat, con = figures["latency_us"], figures["confirm_latency_us"]
    print(
        f"summary: {figures['seconds']} s, published {figures['published']}, confirmed "
        f"{figures['confirmed']}, nacked {figures['nacked']}, returned {figures['returned']}, "
        f"consumed {figures['consumed']}, lost {figures['lost']}, unconsumed "
        f"{figures['unconsumed']}, duplicates {figures['duplicates']}, out of order "
        f"{figures['out_of_order']}, of another run {figures['foreign']}",
        file=out,
    )
    print(
        f"sending rate avg: {figures['publish_rate']:.0f} msg/s, receiving rate avg: "
        f"{figures['consume_rate']:.0f} msg/s, client CPU {figures['client_cpu_us_per_msg']} "
        "µs/msg",
        file=out,
    )
    print(
        f"consumer latency min/median/75th/95th/99th/max: {lat['min']}/{lat['p50']}/"
        f"{lat['p75']}/{lat['p95']}/{lat['p99']}/{lat['max']} µs; confirm latency: "
        f"{con['min']}/{con['p50']}/{con['p75']}/{con['p95']}/{con['p99']}/{con['max']} µs",
        file=out,
    )


async def _scaled(
    args: argparse.Namespace,
    config: BenchConfig,
    stats: RunStats,
    seconds: _Seconds,
    view: RunStats | None = None,
) -> str | None:
    """One process, several (`--processes`) or instances over the broker.

    `view` (--processes) gets the merged figures so far, as the run goes: the children
    fill `stats` only at the end.
    """
    if args.workers_expected > 1:
        from .perf_workers import default_run_id, run_workers

        run_id = args.run_id or default_run_id(config, args.workers_expected)
        return await run_workers(
            config,
            stats,
            args.workers_expected,
            args.workers_timeout,
            run_id,
            args.processes,
            seconds,
        )
    if args.processes > 1:
        await run_processes(config, args.processes, stats, seconds, view=view)
    else:
        await run_bench(config, stats, seconds)
    return None


def rate_error(config: BenchConfig, publish_rate: float, producers: int) -> str | None:
    """The error of a run whose `--rate` was not met, if it was not.

    Args:
        config: the run's options (`rate`, `variable_rate`, `producers`).
        publish_rate: the (merged) figures' messages per second, all producers together.
        producers: producers in the (merged) figures: over every process and instance, so
            a leader divides the merged rate by all of them, not by its own share; 0 (a
            mode that does not count them) falls back to the options' producers.

    Returns:
        One line, or None when the rate was met or none was asked for.
    """
    producers = producers or config.producers
    if not config.rate or config.variable_rate or not producers:
        return None
    achieved = publish_rate / producers
    if achieved >= config.rate * _RATE_SLACK:
        return None
    return (
        f"rate not met: asked {config.rate:g} msgs/s per producer, "
        f"sent {achieved:.0f} msgs/s per producer"
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `munggoggo bench`.

    Args:
        args: the parsed options.

    Returns:
        The exit status (see the module docstring).
    """
    if getattr(args, "child", False):  # a process of --processes, driven by its parent
        from .perf_scale import child_main

        return child_main()
    try:
        config = config_from_args(args)
        mode = mode_run(args, config)  # --mode agents / rpc (core/perf_modes.py)
    except (ValueError, URLError) as exc:
        print(f"munggoggo bench: {exc}", file=sys.stderr)
        return 2
    if mode is not None and (args.processes > 1 or args.workers_expected > 1):
        print(
            "munggoggo bench: --processes and --workers-expected apply to the queue mode only",
            file=sys.stderr,
        )
        return 2
    stats = RunStats()
    error: str | None = None
    # A report nobody can write fails before the run.
    if args.report and not Path(args.report).resolve().parent.is_dir():
        print(f"munggoggo bench: no directory for --report {args.report!r}", file=sys.stderr)
        return 2
    options = run_options(args, config)
    if mode is None and args.workers_expected > 1:
        from .perf_workers import default_run_id

        # Metrics and the report carry the id the instances meet under, as the note says.
        options["run_id"] = args.run_id or default_run_id(config, args.workers_expected)
    metrics = None
    started_at = datetime.now(UTC)
    recorder = None
    note: str | None = None
    csv_file = open(args.csv, "w", newline="") if args.csv else None  # noqa: SIM115
    try:
        # With --processes the children run the share: scrapes read the parent's live view.
        view = RunStats() if mode is None and args.processes > 1 else None
        if args.metrics_port is not None:
            collector = BenchCollector(
                view if view is not None else stats,
                options["run_id"],
                options.get("mode", "queue"),
                options=options,
            )
            metrics = serve_bench_metrics(args.metrics_port, collector)
        rows: Any = None
        if csv_file is not None:
            rows = csv.writer(csv_file)
            rows.writerow(_CSV_FIELDS)
        if args.report:  # keep the rows for the report
            rows = recorder = RowRecorder(_CSV_FIELDS, forward=rows)
        install_uvloop()
        try:
            if mode is not None:
                asyncio.run(mode(config, stats, _Seconds(sys.stdout, rows)))
            else:  # --processes / --workers-expected run elsewhere and fill `stats` merged
                note = asyncio.run(_scaled(args, config, stats, _Seconds(sys.stdout, rows), view))
        except KeyboardInterrupt:
            error = "interrupted"
        except (AMQPError, OSError, RuntimeError, ScaleError) as exc:  # RuntimeError: a behaviour
            error = str(exc)
    finally:
        if csv_file is not None:
            csv_file.close()
        if metrics is not None:
            metrics.close()
    figures = summary(stats)
    if mode is not None:  # --mode agents / rpc: its own keys
        figures.update(mode.figures(stats))
    _print_summary(figures, sys.stdout)
    if note:
        print(note, file=sys.stdout)
    if error is None:
        error = rate_error(config, figures["publish_rate"], len(stats.sent_by_producer))
    if recorder is not None:
        page = render_report(figures, recorder.rows, options, error=error, started=started_at)
        try:
            write_report(args.report, page)
        except OSError as exc:
            error = error or f"cannot write the report: {exc}"
    if args.json:
        print(json.dumps(figures), flush=True)
    if error is not None:
        print(f"munggoggo bench: {error}", file=sys.stderr)
        return 1
    return 0
