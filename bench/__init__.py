"""Load benchmarks against a real RabbitMQ: `python -m bench <command> [--json]`.

Commands (`bench/__main__.py`): `engine` (the raw client pipe, munggoggo vs aiormq),
`throughput --scenario NAME|all` (one module per scenario in `bench/scenarios/`, from the
broker's ceiling through the agent runtime to the aiormq/aio-pika baselines) and `report`
(docs/bench-results.md and docs/bench-throughput.png). Progress goes to stderr, results
(a human table, or JSON objects with `--json`) to stdout.
"""
