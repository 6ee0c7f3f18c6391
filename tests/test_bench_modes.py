"""`munggoggo bench --mode agents` and `--mode rpc` on real RabbitMQ, and their bad input.

Short runs only (-C small counts). The agents mode's deliveries are checked against what
its behaviours published (each publisher's messages reach one other behaviour), the rpc
mode's replies against the calls made.
"""

from __future__ import annotations

import json

import pytest

from munggoggo.cli import main
from munggoggo.perf_rpc import error_kind
from munggoggo.rpc import RpcError, RpcTimeout

pytestmark = pytest.mark.rabbitmq


def bench(capsys, *argv):
    """Run `munggoggo bench ARGV`: (exit status, the --json figures or None, stdout, stderr)."""
    status = main(["bench", *argv])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return status, (json.loads(lines[-1]) if lines else None), out, err


def ordered(lat):
    return 0 <= lat["min"] <= lat["p50"] <= lat["p75"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_agents_mode_delivers_every_message_across_agents(capsys, broker_url):
    status, figures, _, err = bench(
        capsys,
        "--url",
        broker_url,
        "--mode",
        "agents",
        "--agents",
        "2",
        "--behaviours",
        "2",
        "-C",
        "300",
        "-s",
        "64",
        "--json",
    )
    assert status == 0, err
    # 4 publishing behaviours x 300; each message reaches exactly one other behaviour.
    assert figures["published"] == 1200
    assert figures["consumed"] == 1200
    assert (figures["lost"], figures["duplicates"], figures["untimed"]) == (0, 0, 0)
    assert figures["confirmed"] == 1200
    assert figures["latency_us"]["max"] > 0 and ordered(figures["latency_us"])
    assert (figures["mode"], figures["agents"], figures["behaviours"]) == ("agents", 2, 2)
    assert figures["client_cpu_us_per_msg"] > 0


def test_agents_mode_with_one_agent_crosses_behaviours(capsys, broker_url):
    status, figures, out, err = bench(
        capsys,
        "--url",
        broker_url,
        "--mode",
        "agents",
        "--agents",
        "1",
        "--behaviours",
        "2",
        "-z",
        "1.3",
        "-r",
        "100",
        "--json",
    )
    assert status == 0, err
    assert any(line.startswith("time 1.0 s, sent: ") for line in out.splitlines())
    assert figures["published"] == figures["consumed"] > 0
    assert figures["lost"] == 0


def test_rpc_mode_gets_a_reply_for_every_call(capsys, broker_url, tmp_path):
    csv_path = tmp_path / "rows.csv"
    status, figures, _, err = bench(
        capsys,
        "--url",
        broker_url,
        "--mode",
        "rpc",
        "--agents",
        "2",
        "--concurrency",
        "4",
        "-C",
        "100",
        "-L",
        "50",
        "--csv",
        str(csv_path),
        "--json",
    )
    assert status == 0, err
    assert figures["published"] == figures["consumed"] == 400
    assert figures["lost"] == 0
    assert figures["errors"] == {}
    assert figures["latency_us"]["min"] > 0 and ordered(figures["latency_us"])
    assert figures["consume_rate"] > 0
    assert (figures["mode"], figures["agents"], figures["concurrency"]) == ("rpc", 2, 4)
    assert csv_path.read_text().startswith("time_s,sent,")


def test_error_kinds_name_the_rpc_code():
    assert error_kind(RpcTimeout(-32002, "late")) == "RpcTimeout -32002"
    assert error_kind(RpcError(-32601, "no such method")) == "RpcError -32601"
    assert error_kind(ConnectionResetError()) == "ConnectionResetError"


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--agents", "2"], "--agents"),
        (["--concurrency", "4"], "--concurrency"),
        (["--mode", "agents", "--concurrency", "4"], "--concurrency"),
        (["--mode", "rpc", "--behaviours", "2"], "--behaviours"),
        (["--mode", "rpc", "-s", "100"], "--size"),
        (["--mode", "agents", "-x", "3"], "--producers"),
        (["--mode", "agents", "-e", "ex"], "--exchange"),
        (["--mode", "rpc", "-c", "10"], "--confirm"),
        (["--mode", "rpc", "-D", "10"], "--cmessages"),
    ],
)
def test_options_that_do_not_go_with_the_mode(capsys, argv, names):
    status = main(["bench", *argv])
    _, err = capsys.readouterr()
    assert status == 2
    assert names in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--mode", "mesh"],
        ["--mode", "agents", "--agents", "0"],
        ["--mode", "rpc", "--concurrency", "x"],
    ],
)
def test_unknown_mode_and_bad_counts_are_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2
    assert "--" in capsys.readouterr().err


def test_python_m_bench_reads_percentiles_from_the_tools_histogram():
    from bench.common import percentiles_us

    samples_ns = [us * 1000 for us in range(1, 1001)]  # 1..1000 µs, shuffled below
    samples_ns = samples_ns[::2] + samples_ns[1::2]
    p50, p99 = percentiles_us(samples_ns)
    assert abs(p50 - 500) <= 500 * 0.008 and abs(p99 - 990) <= 990 * 0.008
    assert percentiles_us([250_000]) == (250.0, 250.0)  # one sample: exact (min = max)
    with pytest.raises(ValueError):
        percentiles_us([])
