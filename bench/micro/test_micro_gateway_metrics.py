"""Micro benchmark: what one gateway request costs in metric updates (no server, no broker).

Run with `pytest bench/micro/test_micro_gateway_metrics.py --benchmark-only -q`. One request's
updates: the requests counter and latency histogram (cached label children), one event
counter, the in-flight gauge up and down; in memory (one worker) and with prometheus_client's
multiprocess files (several granian workers), each in a fresh subprocess because the value
class is chosen when prometheus_client is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MEASURE = r"""
import json, os, sys, tempfile, timeit
if sys.argv[1] == "multiprocess":
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
from munggoggo.gateway.metrics import GatewayMetrics
m = GatewayMetrics(1024)
def request():
    m.observe_request("/agents/{identity}/call/{method}", "POST", 200, 0.0003)
    m.event("rest_calls")
    m.in_flight.inc()
    m.in_flight.dec()
n = 100_000
best = min(timeit.repeat(request, number=n, repeat=5))
print(json.dumps({"us_per_request": best / n * 1e6}))
"""


@pytest.mark.parametrize("mode", ["memory", "multiprocess"])
def test_gateway_metric_updates_per_request(benchmark, mode):
    def run() -> float:
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, mode], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)["us_per_request"]

    us = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["us_per_request"] = round(us, 2)
    print(f"\n{mode}: {us:.2f} us of metric updates per request")
    assert us > 0
