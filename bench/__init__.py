"""Load benchmarks against a real RabbitMQ: `python -m bench <scenario> [--json]`.

Each scenario is a module with `add_arguments(parser)` and `run(args) -> dict`; the
command line (`bench/__main__.py`) registers them as subcommands. Progress goes to stderr,
the result (a human table, or one JSON object with `--json`) to stdout.
"""
