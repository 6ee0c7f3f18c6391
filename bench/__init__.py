"""Load benchmarks against a real RabbitMQ: `python -m bench <command> [--json]`.

Commands (`bench/__main__.py` lists them all), in subpackages by family:

- throughput/: `engine` (the raw client pipe, munggoggo vs aiormq), `throughput --scenario
  NAME|all` (one module per scenario in `bench/throughput/scenarios/`, from the broker's
  ceiling through the agent runtime to the aiormq/aio-pika baselines), `idle`;
- gateway/: `gateway` (HTTP JSON-RPC through `munggoggo gateway` vs a Starlette baseline);
- soak/, scaleout/, cluster/, dashboards/: the command of that name;
- micro/: pytest-benchmark micro benches (`pytest bench/micro/ --benchmark-only`) and the
  differential frame fuzzer.

Shared: bench/common.py (arguments, clocks, output), bench/mesh.py (the agent-level message
and behaviours), bench/report.py (`report`: docs/bench-results.md and
docs/bench-throughput.png). The fault proxy, the broker fault lock and the local cluster
the soak and cluster commands use are `munggoggo.testing`. Progress goes to stderr, results
(a human table, or JSON objects with `--json`) to stdout.
"""
