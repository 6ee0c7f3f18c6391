"""`munggoggo bench` on real RabbitMQ: clean runs, crafted streams, bad input.

Short runs only (-C small counts, -z 1). Crafted streams are published with aiormq, an
independent client, so the accounting is checked against bodies and headers we did not
write ourselves.
"""

from __future__ import annotations

import asyncio
import csv
import json
import struct
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import aiormq
import pytest

from munggoggo.cli import main

pytestmark = pytest.mark.rabbitmq


def bench(capsys, *argv):
    """Run `munggoggo bench ARGV`: (exit status, the --json figures or None, stderr)."""
    status = main(["bench", *argv])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return status, (json.loads(lines[-1]) if lines else None), err


def test_clean_run_publishes_and_consumes_everything(capsys, broker_url):
    status, figures, err = bench(
        capsys,
        "--url",
        broker_url,
        "-x",
        "2",
        "-y",
        "2",
        "-s",
        "100",
        "-C",
        "1500",
        "-c",
        "100",
        "--json",
    )
    assert status == 0, err
    assert figures["published"] == figures["consumed"] == figures["confirmed"] == 3000
    assert (figures["lost"], figures["duplicates"], figures["nacked"]) == (0, 0, 0)
    assert figures["untimed"] == 0
    for key in ("latency_us", "confirm_latency_us"):
        lat = figures[key]
        assert 0 <= lat["min"] <= lat["p50"] <= lat["p75"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert figures["client_cpu_us_per_msg"] > 0
    assert figures["publish_rate"] > 0 and figures["consume_rate"] > 0


def test_timed_run_prints_seconds_and_writes_csv(capsys, broker_url, tmp_path):
    csv_path = tmp_path / "rows.csv"
    status = main(
        [
            "bench",
            "--url",
            broker_url,
            "-z",
            "1.2",
            "-r",
            "200",
            "-q",
            "50",
            "-A",
            "10",
            "-f",
            "persistent",
            "--csv",
            str(csv_path),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert any(line.startswith("time 1.0 s, sent: ") for line in out.splitlines())
    figures = json.loads(out.splitlines()[-1])
    # -A 10: up to 9 stay unacked at the end (PerfTest's behaviour too); none is lost.
    assert figures["published"] == figures["consumed"] > 0
    assert figures["lost"] == 0
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("time_s,sent,confirmed")
    assert len(rows) >= 2


def test_exchange_and_queue_pattern_route_each_producer(capsys, broker_url):
    tag = uuid.uuid4().hex[:8]
    status, figures, err = bench(
        capsys,
        "--url",
        broker_url,
        "-e",
        f"bench-test-{tag}",
        "-t",
        "direct",
        "--queue-pattern",
        f"bench-test-{tag}-%d",
        "--queue-pattern-to",
        "2",
        "-x",
        "2",
        "-y",
        "2",
        "-C",
        "300",
        "-c",
        "50",
        "-f",
        "mandatory",
        "--json",
    )
    assert status == 0, err
    assert (figures["published"], figures["consumed"], figures["returned"]) == (600, 600, 0)
    assert figures["lost"] == 0
    asyncio.run(delete(broker_url, exchanges=[f"bench-test-{tag}"]))


async def delete(url, exchanges=(), queues=()):
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    for name in exchanges:
        await ch.exchange_delete(name)
    for name in queues:
        await ch.queue_delete(name)
    await conn.close()


async def publish_crafted(url, queue, messages):
    """Publish (headers, body) pairs to `queue` through the default exchange, with aiormq.

    The queue is declared as the bench declares its queues (durable, auto-delete).
    """
    conn = await aiormq.connect(url)
    ch = await conn.channel()
    await ch.queue_declare(queue, durable=True, auto_delete=True)
    for headers, body in messages:
        await ch.basic_publish(
            body, routing_key=queue, properties=aiormq.spec.Basic.Properties(headers=headers)
        )
    await conn.close()


def omq(pid, seq, when_ns):
    """An omq-style message: headers carry the identity, the body 1234 and UnixNano."""
    return {"x-omq-publisher-id": pid, "x-omq-seq": seq}, struct.pack(">iq", 1234, when_ns)


def test_loss_duplicates_and_order_of_a_crafted_stream(capsys, broker_url):
    queue = f"bench-test-crafted-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    # Producer 7: 2 never arrives (lost), 3 twice (duplicate), 4 after 5 (out of order).
    # Producer 8: 0..2 in order.
    seqs = [(7, 0), (7, 1), (7, 3), (7, 3), (7, 5), (7, 4), (8, 0), (8, 1), (8, 2)]
    asyncio.run(publish_crafted(broker_url, queue, [omq(p, s, now) for p, s in seqs]))
    status, figures, err = bench(
        capsys,
        "--url",
        broker_url,
        "-u",
        queue,
        "-x",
        "0",
        "-y",
        "1",
        "-D",
        str(len(seqs)),
        "--json",
    )
    assert status == 0, err
    assert figures["consumed"] == len(seqs)
    assert (figures["lost"], figures["duplicates"], figures["out_of_order"]) == (1, 1, 2)
    assert figures["untimed"] == 0


def test_perftest_bodies_without_headers_are_timed(capsys, broker_url):
    queue = f"bench-test-perftest-{uuid.uuid4().hex[:8]}"
    millis = time.time_ns() // 1_000_000
    perftest_millis = [({}, struct.pack(">iq", i, millis) + bytes(20)) for i in range(3)]
    perftest_nanotime = [({}, struct.pack(">iq", 3, 5 * 86_400 * 10**9))]
    asyncio.run(publish_crafted(broker_url, queue, perftest_millis + perftest_nanotime))
    status, figures, err = bench(
        capsys, "--url", broker_url, "-u", queue, "-x", "0", "-y", "1", "-D", "4", "--json"
    )
    assert status == 0, err
    assert figures["consumed"] == 4
    assert figures["untimed"] == 1  # nanoTime has no epoch: no latency from it
    assert 0 <= figures["latency_us"]["max"] < 600 * 10**6  # millis read as millis, not ns
    assert figures["lost"] == figures["duplicates"] == 0  # no identity: not accounted


def test_queue_declared_with_other_arguments_fails_with_one_line(capsys, broker_url):
    queue = f"bench-test-conflict-{uuid.uuid4().hex[:8]}"

    async def declare_plain():
        conn = await aiormq.connect(broker_url)
        ch = await conn.channel()
        await ch.queue_declare(queue, durable=True, auto_delete=False)
        await conn.close()

    asyncio.run(declare_plain())
    try:
        status, figures, err = bench(capsys, "--url", broker_url, "-u", queue, "-C", "5", "--json")
    finally:
        asyncio.run(delete(broker_url, queues=[queue]))
    assert status == 1
    assert figures is not None and figures["published"] == 0  # the summary still comes
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("munggoggo bench: ")
    assert "406" in lines[0]


def test_refused_login_fails_with_one_line(capsys, broker_url):
    parts = urlsplit(broker_url)
    bad = urlunsplit(
        parts._replace(
            netloc=f"guest:wrong-{uuid.uuid4().hex[:4]}@{parts.hostname}:{parts.port or 5672}"
        )
    )
    status, figures, err = bench(capsys, "--url", bad, "-C", "5", "--json")
    assert status == 1
    assert figures["published"] == 0
    assert len(err.strip().splitlines()) == 1


def test_bad_url_is_an_option_error(capsys):
    status, figures, err = bench(capsys, "--url", "nothing://here", "-C", "5")
    assert status == 2
    assert figures is None
    assert len(err.strip().splitlines()) == 1 and err.startswith("munggoggo bench: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["--queue-pattern", "perf"],
        ["--queue-pattern", "perf-%d", "--queue-pattern-from", "3", "--queue-pattern-to", "2"],
        ["-u", "a", "--queue-pattern", "perf-%d", "--queue-pattern-to", "2"],
        ["-t", "topic"],
        ["-q", "5", "-A", "10"],
        ["-a", "-A", "10"],
        ["-x", "0", "-y", "0"],
        ["-k", "key"],
        ["--queue-pattern", "perf-%s", "--queue-pattern-to", "2"],
        ["-u", ","],
    ],
)
def test_options_that_do_not_go_together(capsys, argv):
    status, _, err = bench(capsys, *argv)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("munggoggo bench: ")


@pytest.mark.parametrize(
    "argv", [["--variable-rate", "100"], ["--variable-rate", "100:0"], ["-r", "-1"], ["-t", "x"]]
)
def test_malformed_option_values_are_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2


def test_a_rate_that_cannot_be_met_fails_after_the_summary(capsys, broker_url):
    # Ten million msgs/s from one producer is far beyond any broker: it cannot be met.
    status, figures, err = bench(
        capsys, "--url", broker_url, "-r", "10000000", "-C", "3000", "-c", "100", "--json"
    )
    assert status == 1
    assert figures["published"] == figures["consumed"] == 3000
    assert "rate not met" in err and len(err.strip().splitlines()) == 1


def test_variable_rate_steps_are_each_paced_to_their_rate(capsys, broker_url):
    """Two steps of one second, 150 then 450 msgs/s: about 600 messages in all (the pacing
    counts each step's messages from the step's start, so neither step borrows from the
    other); the tool refuses no rate it can meet easily."""
    status, figures, err = bench(
        capsys,
        "--url",
        broker_url,
        "-z",
        "2",
        "--variable-rate",
        "150:1",
        "--variable-rate",
        "450:1",
        "--json",
    )
    assert status == 0, err
    assert 450 <= figures["published"] <= 640, figures["published"]
    assert figures["consumed"] == figures["published"] and figures["lost"] == 0


# -- run ends, window, clean-up ---------------------------------------------------------------


async def queue_exists(url, queue):
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel()
        try:
            await ch.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True
    finally:
        await conn.close()


def run_config(broker_url, **options):
    from munggoggo.perf_run import BenchConfig, RunStats, run_bench
    from munggoggo.url import parse_urls

    config = BenchConfig(urls=parse_urls(broker_url), **options)
    stats = RunStats()
    return config, stats, run_bench


def test_a_timed_run_ends_while_the_broker_blocks_publishing(broker_url, monkeypatch):
    from munggoggo import perf_run

    opened = perf_run._open

    async def blocked_producers(url, name, confirms, window):
        conn, ch = await opened(url, name, confirms, window)
        if "producer" in name:
            # What a Connection.Blocked (or a socket that stops draining) does: no flow.
            asyncio.get_running_loop().call_later(0.2, conn.stream_writable, False)
        return conn, ch

    monkeypatch.setattr(perf_run, "_open", blocked_producers)
    config, stats, run_bench = run_config(
        broker_url, duration=0.6, confirm=10, confirm_timeout=0.5, rate=200
    )
    asyncio.run(asyncio.wait_for(run_bench(config, stats), 20))
    assert stats.published > 0
    assert stats.confirmed <= stats.published


def test_a_timed_run_ends_while_confirms_stall(broker_url, monkeypatch):
    from munggoggo.channel import Channel

    # The broker's confirms never reach the channel (a stalled queue, say).
    monkeypatch.setattr(Channel, "handle_confirms", lambda self, *args: None)
    config, stats, run_bench = run_config(broker_url, duration=0.5, confirm=10, confirm_timeout=0.5)
    asyncio.run(asyncio.wait_for(run_bench(config, stats), 20))
    assert stats.published > 0


def test_the_confirm_window_is_never_exceeded(broker_url, monkeypatch):
    from munggoggo.channel import Channel

    most = [0]
    publish = Channel.publish

    def counting(self, *args, **kwargs):
        seq = publish(self, *args, **kwargs)
        most[0] = max(most[0], self.unconfirmed)
        return seq

    monkeypatch.setattr(Channel, "publish", counting)
    config, stats, run_bench = run_config(broker_url, pmessages=3000, confirm=10)
    asyncio.run(run_bench(config, stats))
    assert stats.confirmed == 3000
    assert 0 < most[0] <= 10


@pytest.mark.parametrize("options", [{"consumers": 0, "pmessages": 50}, {"quorum": True}])
def test_generated_queues_are_deleted_at_the_end(broker_url, options):
    options = {"pmessages": 50, **options}
    config, stats, run_bench = run_config(broker_url, **options)
    asyncio.run(run_bench(config, stats))
    assert stats.published == 50
    assert not asyncio.run(queue_exists(broker_url, config.queues[0]))


def test_a_named_queue_is_kept(broker_url):
    queue = f"bench-test-named-{uuid.uuid4().hex[:8]}"
    config, stats, run_bench = run_config(broker_url, consumers=0, pmessages=5, queues=[queue])
    asyncio.run(run_bench(config, stats))
    assert asyncio.run(queue_exists(broker_url, queue))
    asyncio.run(delete(broker_url, queues=[queue]))


async def queue_depth(url, queue):
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel()
        ok = await ch.queue_declare(queue, passive=True)
        return ok.message_count
    finally:
        await conn.close()


def test_per_second_rows_add_up_to_the_summary(capsys, broker_url, tmp_path):
    csv_path = tmp_path / "rows.csv"
    status, figures, err = bench(
        capsys, "--url", broker_url, "-z", "1.5", "-r", "300", "--csv", str(csv_path), "--json"
    )
    assert status == 0, err
    rows = list(csv.DictReader(csv_path.open()))
    assert float(rows[-1]["time_s"]) > 1.5  # the last, partial second has its row
    assert sum(int(r["sent"]) for r in rows) == figures["published"]
    assert sum(int(r["received"]) for r in rows) == figures["consumed"]


def test_multi_ack_settles_the_last_messages(capsys, broker_url):
    queue = f"bench-test-ack-{uuid.uuid4().hex[:8]}"
    status, figures, err = bench(
        capsys, "--url", broker_url, "-u", queue, "--quorum-queue", "-C", "25", "-A", "10", "--json"
    )
    assert status == 0, err
    assert figures["consumed"] == 25
    assert asyncio.run(queue_depth(broker_url, queue)) == 0  # none came back to the queue
    asyncio.run(delete(broker_url, queues=[queue]))


@pytest.mark.parametrize("kind", [(), ("--quorum-queue",)], ids=["auto-deleted", "kept"])
def test_messages_left_in_the_queue_are_unconsumed_not_lost(capsys, broker_url, kind):
    queue = f"bench-test-left-{uuid.uuid4().hex[:8]}"
    argv = ("-u", queue, *kind, "-C", "100", "-D", "40", "-q", "10", "--json")
    status, figures, err = bench(capsys, "--url", broker_url, *argv)
    assert status == 0, err
    assert figures["consumed"] == 40
    assert (figures["lost"], figures["unconsumed"]) == (0, 60)
    if kind:
        assert asyncio.run(queue_depth(broker_url, queue)) == 60
        asyncio.run(delete(broker_url, queues=[queue]))


def test_messages_of_an_earlier_run_are_foreign(capsys, broker_url):
    queue = f"bench-test-foreign-{uuid.uuid4().hex[:8]}"
    kept = ("-u", queue, "--quorum-queue")  # kept between runs
    status, figures, err = bench(
        capsys, "--url", broker_url, *kept, "-y", "0", "-C", "30", "-c", "10"
    )
    assert status == 0, err
    status, figures, err = bench(
        capsys, "--url", broker_url, *kept, "-C", "20", "-D", "50", "-z", "20", "--json"
    )
    assert status == 0, err
    assert (figures["consumed"], figures["foreign"]) == (50, 30)
    assert (figures["lost"], figures["duplicates"], figures["out_of_order"]) == (0, 0, 0)
    asyncio.run(delete(broker_url, queues=[queue]))


def test_the_run_histogram_holds_every_delivery_without_per_second_lines(broker_url):
    config, stats, run_bench = run_config(broker_url, pmessages=500)
    asyncio.run(run_bench(config, stats))
    assert stats.consumed == 500
    assert stats.latency_us.count == 500 and stats.tick_latency_us.count == 0


def bench_config(*argv):
    from munggoggo.cli import build_parser
    from munggoggo.cli_bench import config_from_args

    return config_from_args(build_parser().parse_args(["bench", *argv]))


def test_queue_options_read_like_perftest():
    assert bench_config("-u", "a,b").queues == ["a", "b"]
    pattern = ("--queue-pattern", "perf-%03d", "--queue-pattern-from", "9")
    assert bench_config(*pattern, "--queue-pattern-to", "10").queues == ["perf-009", "perf-010"]


def test_a_fanout_exchange_takes_every_producer_to_every_queue(broker_url):
    tag = uuid.uuid4().hex[:8]
    config, stats, run_bench = run_config(
        broker_url,
        producers=2,
        consumers=2,
        pmessages=50,
        exchange=f"bench-test-fan-{tag}",
        exchange_type="fanout",
        queues=[f"bench-test-fan-{tag}-1", f"bench-test-fan-{tag}-2"],
        queue_pattern=True,
    )
    asyncio.run(run_bench(config, stats))
    assert all(sorted(r) == sorted(config.queues) for r in stats.routes.values())
    assert stats.consumed == 200 and stats.missing() == 0
    asyncio.run(delete(broker_url, exchanges=[config.exchange]))
