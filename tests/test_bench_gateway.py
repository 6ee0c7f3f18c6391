"""Smoke tests of `python -m bench gateway`'s parts: wrk's output is read right, the wrk
script counts wrong answers, and the Starlette + aio-pika baseline answers a tiny run.
Counts only: speed is the benchmark's business, never a test's."""

from __future__ import annotations

import json
import shutil

import pytest

from bench.gateway.command import bench_env, measure_side, python_module
from bench.gateway.load import lua_script, parse_wrk, run_wrk
from bench.gateway.procs import Processes, top_self_frames
from munggoggo.testing import free_port

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8000/jsonrpc
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.05ms    1.23ms  30.00ms   90.00%
    Req/Sec    12.70k     1.10k   14.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    5.50ms
     90%    6.20ms
     99%    1.20s
  1.27M requests in 10.00s, 20.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec: 126543.21
Transfer/sec:      2.00MB
BENCH_CHECK bad_status=7 bad_body=11
"""


def test_parse_wrk_reads_every_figure():
    r = parse_wrk(WRK_OUTPUT)
    assert r.requests == 1_270_000
    assert r.seconds == 10.0
    assert r.rps == 126543.21
    assert r.p50_ms == 0.85
    assert r.p99_ms == 1200.0
    assert r.socket_errors == 10
    assert (r.non_2xx, r.bad_status, r.bad_body) == (5, 7, 11)
    assert r.errors == 10 + 7 + 11  # wrk's non-2xx are among the script's bad statuses


def test_parse_wrk_without_errors_and_without_check_line():
    clean = "\n".join(
        line
        for line in WRK_OUTPUT.splitlines()
        if not line.lstrip().startswith(("Socket", "Non-2xx"))
    )
    r = parse_wrk(clean.replace("bad_status=7 bad_body=11", "bad_status=0 bad_body=0"))
    assert r.errors == 0
    with pytest.raises(ValueError, match="check line"):
        parse_wrk(clean.replace("BENCH_CHECK", "something else"))


def test_lua_script_embeds_body_and_escapes_the_expected_result():
    body = b'{"jsonrpc":"2.0","method":"a.mul","params":{"a":6,"b":7},"id":1}'
    script = lua_script(body, '"mun-ggo.ggo"')
    assert f"wrk.body = [==[{body.decode()}]==]" in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert '[==["result"%s*:%s*"mun%-ggo%.ggo"%s*[,}]]==]' in script


def test_top_self_frames(tmp_path):
    raw = tmp_path / "gw.txt"
    raw.write_text("main;serve;parse (h.py:1) 30\nmain;serve;send (h.py:9) 10\nmain;idle 40\n 20\n")
    assert top_self_frames(str(raw)) == [
        ("idle", 40.0),
        ("parse (h.py:1)", 30.0),
        ("(a thread without Python frames)", 20.0),
        ("send (h.py:9)", 10.0),
    ]


@needs_wrk
def test_wrk_script_counts_answers_without_the_expected_result():
    port = free_port()
    body = json.dumps({"jsonrpc": "2.0", "method": "x.mul", "id": 1}).encode()
    url = f"http://127.0.0.1:{port}/jsonrpc"
    with Processes() as procs:
        server = procs.start(
            "trivial server",
            python_module("bench.gateway.load", "trivial", "--port", str(port)),
            bench_env(),
            ready_line=True,
        )
        server.wait_ready_line(30)
        good = run_wrk(url, body, "42", connections=2, duration=1)
        bad = run_wrk(url, body, "43", connections=2, duration=1)
    assert good.requests > 0
    assert good.errors == 0
    assert bad.requests > 0
    assert bad.bad_body == bad.requests  # every answer carries 42, not 43
    assert bad.errors == bad.requests


@needs_wrk
@pytest.mark.rabbitmq
def test_baseline_answers_a_tiny_run(broker_url):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    figures = measure_side("baseline", broker_url, connections=4, duration=1, warmup=0)
    assert figures["requests"] > 0
    assert figures["errors"] == 0
    assert figures["sample_errors"] == 0
    assert figures["p50_ms"] <= figures["p99_ms"]
