"""`python -m bench <scenario> [options] [--json]`.

A scenario is a module in this package with `add_arguments(parser)` and
`run(args) -> dict`; register it in SCENARIOS with a one-line help text.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .common import emit, progress

# name -> (module, help). Scenario modules import their clients inside run(), so the
# parser builds even where a baseline client is not installed.
SCENARIOS: dict[str, tuple[str, str]] = {
    "engine": (
        "bench.engine",
        "raw client pipe (publish with confirms + consume with acks), munggoggo vs aiormq",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="munggoggo load benchmarks against RabbitMQ"
    )
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name, (module_name, help_text) in SCENARIOS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args.module)
    try:
        result = module.run(args)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except Exception as exc:
        progress(f"{args.scenario} failed: {type(exc).__name__}: {exc}")
        return 1
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
