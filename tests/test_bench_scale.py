"""`munggoggo bench --processes` and `--workers-expected`: merged figures, exactly.

Unit part (no broker): histograms and sequence trackers survive their JSON form and merge
exactly (crafted sequences: consumers of one queue in different processes, duplicates
across them, gaps one filled for the other), figures merge, the split of producers and
consumers. Broker part: a run over 2 processes accounts for every message; two instances
started a second apart meet and one prints the merged summary; one alone times out.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid

import pytest

from munggoggo.cli import main
from munggoggo.perf_figures import figures_of, load_figures, merge_figures
from munggoggo.perf_run import BenchConfig, RunStats
from munggoggo.perf_scale import config_from_json, config_to_json, run_processes, split
from munggoggo.perf_stats import LatencyHistogram, SequenceTracker
from munggoggo.url import parse_urls

# -- unit: histograms ------------------------------------------------------------------------


def roundtrip_hist(h: LatencyHistogram) -> LatencyHistogram:
    return LatencyHistogram.from_dict(json.loads(json.dumps(h.to_dict())))


def test_histograms_merge_exactly_through_their_json_form():
    rng = random.Random(7)
    values = [rng.randrange(0, 5_000_000) for _ in range(3000)] + [0, 1, 255, 256, 10**9]
    whole, parts = LatencyHistogram(), [LatencyHistogram() for _ in range(3)]
    for i, v in enumerate(values):
        whole.record(v)
        parts[i % 3].record(v)
    merged = LatencyHistogram()
    for part in parts:
        merged.merge(roundtrip_hist(part))
    merged.merge(roundtrip_hist(LatencyHistogram()))  # an empty one changes nothing
    assert merged.counts == whole.counts
    assert (merged.count, merged.total, merged.min, merged.max) == (
        whole.count,
        whole.total,
        0,
        10**9,
    )
    assert merged.summary() == whole.summary()


@pytest.mark.parametrize(
    "data",
    [{}, {"count": 2, "total": 3, "min": 1, "max": 2, "buckets": [[1, 1]]}, {"buckets": 5}],
)
def test_a_histogram_form_that_does_not_add_up_is_refused(data):
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict(data)


# -- unit: sequence trackers -----------------------------------------------------------------


def tracker(*observed: tuple[int, int]) -> SequenceTracker:
    t = SequenceTracker()
    for producer, seq in observed:
        t.observe(producer, seq)
    return SequenceTracker.from_dict(json.loads(json.dumps(t.to_dict())))


def merged(*trackers: SequenceTracker) -> SequenceTracker:
    out = SequenceTracker()
    for t in trackers:
        out.merge(t)
    return out


def test_competing_consumers_in_two_processes_lose_nothing_when_merged():
    # Producer 0 sent 0..9; process A got the even numbers, process B the odd ones but 9.
    a = tracker(*[(0, s) for s in range(0, 10, 2)])
    b = tracker(*[(0, s) for s in range(1, 9, 2)])
    assert a.lost({0: 10}) == 5 and b.lost({0: 10}) == 6  # each alone sees the other's as gaps
    m = merged(a, b)
    assert m.lost({0: 10}) == 1  # only 9 never arrived
    assert m.duplicates() == 0
    assert m.producers[0].received == 9


def test_a_number_both_processes_received_is_a_duplicate():
    a = tracker((0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0))
    b = tracker((0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 6))  # 6 twice within b too
    m = merged(a, b)
    assert m.duplicates() == 3 + 1
    assert m.lost({0: 7, 1: 1}) == 0
    assert m.producers[0].next == 7 and m.producers[0].gaps == []


def test_a_gap_in_one_process_filled_by_the_other_is_no_loss_but_a_real_gap_stays():
    a = tracker((0, 0), (0, 5), (0, 9))  # gaps [1, 5), [6, 9)
    b = tracker((0, 1), (0, 2), (0, 7))  # gaps [0, 1), [3, 7)
    m = merged(a, b)
    assert m.producers[0].gaps == [[3, 5], [6, 7], [8, 9]]
    assert m.lost({0: 12}) == 4 + 2  # 3, 4, 6, 8 and the tail 10, 11


def test_merge_matches_the_sets_for_random_splits():
    rng = random.Random(11)
    for _ in range(200):
        sent = rng.randrange(1, 60)
        observed = [rng.randrange(0, sent) for _ in range(rng.randrange(0, 80))]
        parts: list[list[tuple[int, int]]] = [[], [], []]
        for seq in observed:
            parts[rng.randrange(3)].append((3, seq))
        m = merged(*(tracker(*p) for p in parts))
        assert m.lost({3: sent}) == sent - len(set(observed))
        assert m.duplicates() == len(observed) - len(set(observed))
        if observed:
            assert m.producers[3].received == len(observed)


def test_trackers_of_different_numbering_do_not_merge():
    with pytest.raises(ValueError):
        SequenceTracker(0).merge(SequenceTracker(1))
    with pytest.raises(ValueError):
        SequenceTracker.from_dict({"first": 0, "producers": {"0": {"next": 1}}})


# -- unit: figures and the split -------------------------------------------------------------


def test_figures_merge_into_one_summary():
    from munggoggo.cli_bench import summary

    parts = []
    for pid, seqs in ((0, range(0, 100, 2)), (1, range(1, 100, 2))):
        stats = RunStats()
        stats.started, stats.ended, stats.last_received = 10.0, 12.0, 12.5
        stats.published = 50
        stats.sent_by_producer = {pid: 50}
        stats.routes = {pid: ["q"]}
        stats.sequences = {"q": SequenceTracker()}
        for seq in seqs:  # each process consumed half of both producers' messages
            stats.sequences["q"].observe(seq % 2, seq // 2)
            stats.consumed += 1
            stats.latency_us.record(seq)
        stats.cpu_end = 0.5
        parts.append(json.loads(json.dumps(figures_of(stats))))
    out = RunStats()
    load_figures(merge_figures(parts), out)
    figures = summary(out)
    assert figures["published"] == figures["consumed"] == 100
    assert (figures["lost"], figures["duplicates"]) == (0, 0)
    assert out.latency_us.count == 100
    assert figures["seconds"] == 2.0 and figures["consume_rate"] == 40.0


def test_split_shares_out_contiguous_ids_and_drops_idle_processes():
    config = BenchConfig(urls=parse_urls("amqp://h/"), producers=3, consumers=1, queues=["q"])
    shares = split(config, 2)
    assert [(s.producers, s.producer_base, s.consumers, s.consumer_base) for s in shares] == [
        (2, 0, 1, 0),
        (1, 2, 0, 1),
    ]
    config = BenchConfig(urls=parse_urls("amqp://h/"), producers=1, consumers=1, queues=["q"])
    assert [(s.producers, s.consumers) for s in split(config, 4)] == [(1, 1)]
    back = config_from_json(config_to_json(shares[1]))
    assert list(back.urls) == list(shares[1].urls)
    assert vars(back) | {"urls": None} == vars(shares[1]) | {"urls": None}
    with pytest.raises(ValueError):
        split(config, 0)


# -- broker ----------------------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_two_processes_account_for_every_message(broker_url):
    config = BenchConfig(
        urls=parse_urls(broker_url), producers=2, consumers=2, size=100, pmessages=800
    )
    stats = RunStats()
    asyncio.run(run_processes(config, 2, stats))
    assert stats.published == stats.consumed == 1600
    assert stats.lost() == 0 and stats.duplicates() == 0
    assert stats.latency_us.count == stats.consumed
    assert set(stats.sent_by_producer) == {0, 1}  # ids unique over the processes


@pytest.mark.rabbitmq
def test_processes_from_the_cli_with_a_consumer_only_process(capsys, broker_url, tmp_path):
    rows = tmp_path / "rows.csv"
    argv = ["bench", "--url", broker_url, "--processes", "2", "-x", "1", "-y", "2"]
    status = main([*argv, "-C", "600", "-s", "100", "--json", "--csv", str(rows)])
    out, err = capsys.readouterr()
    assert status == 0, err
    figures = json.loads(out.splitlines()[-1])
    assert figures["published"] == figures["consumed"] == 600
    assert (figures["lost"], figures["duplicates"]) == (0, 0)
    assert rows.read_text().startswith("time_s,")


@pytest.mark.rabbitmq
def test_a_failing_process_is_one_line_and_a_failure(capsys, broker_url):
    bad = (
        broker_url.replace("://", "://nobody:wrong@", 1)
        if "@" not in broker_url
        else (broker_url.split("://")[0] + "://nobody:wrong@" + broker_url.split("@", 1)[1])
    )
    status = main(["bench", "--url", bad, "--processes", "2", "-x", "2", "-y", "2", "-C", "10"])
    out, err = capsys.readouterr()
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("munggoggo bench: process ")
    assert "summary:" in out


def ctrl_c_default() -> None:
    """In the child: SIGINT as a terminal gives it. A test run started in the background
    by a shell without job control inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: the Ctrl-C these tests send would do nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def instance(broker_url: str, run_id: str, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "munggoggo", "bench", "--url", broker_url]
    argv += ["--workers-expected", "2", "--run-id", run_id, "--json", *extra]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default
    )


@pytest.mark.rabbitmq
def test_two_instances_meet_and_the_first_prints_the_merged_summary(broker_url):
    run_id = uuid.uuid4().hex[:10]
    extra = ("-x", "1", "-y", "1", "-C", "700", "-s", "100", "--workers-timeout", "20")
    first = instance(broker_url, run_id, *extra)
    import time

    time.sleep(1.0)
    second = instance(broker_url, run_id, *extra)
    results = [p.communicate(timeout=90) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [r[1] for r in results]
    merged = [
        out for out, _ in results if f"merged summary of 2 instances (run id {run_id})" in out
    ]
    others = [out for out, _ in results if "merged summary of 2 instances: printed by" in out]
    assert len(merged) == 1 and len(others) == 1
    total = json.loads(merged[0].splitlines()[-1])
    own = json.loads(others[0].splitlines()[-1])
    assert own["published"] == 700
    assert total["published"] == 1400 == own["published"] + 700
    assert total["consumed"] == 1400
    assert (total["lost"], total["duplicates"]) == (0, 0)


@pytest.mark.rabbitmq
def test_an_instance_alone_times_out_with_one_line(broker_url):
    run_id = uuid.uuid4().hex[:10]
    proc = instance(broker_url, run_id, "-C", "10", "--workers-timeout", "1.5")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert lines == [
        f"munggoggo bench: only 1 of 2 instances showed up within 1.5 s (run id {run_id})"
    ]
    assert "published 0" in out


@pytest.mark.rabbitmq
def test_an_interrupted_spread_run_still_prints_what_ran(broker_url):
    import signal
    import time

    argv = [sys.executable, "-m", "munggoggo", "bench", "--url", broker_url, "--processes", "2"]
    argv += ["-x", "2", "-y", "2", "-r", "300", "--json"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)  # the parent only: it stops the children
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines() == ["munggoggo bench: interrupted"]
    figures = json.loads(out.splitlines()[-1])
    assert figures["published"] > 0 and figures["consumed"] > 0
    assert len(figures["latency_us"]) == 6


# -- unit: fixes of the spread runs ----------------------------------------------------------


def _part(producers: dict[int, int], seconds: float, consumed: int = 0) -> dict:
    stats = RunStats()
    stats.started, stats.ended = 10.0, 10.0 + seconds
    stats.last_received = stats.ended
    stats.sent_by_producer = dict(producers)
    stats.published = sum(producers.values())
    stats.consumed = consumed
    return json.loads(json.dumps(figures_of(stats)))


def test_a_consumer_only_process_does_not_stretch_the_publish_time():
    from munggoggo.cli_bench import summary

    out = RunStats()
    # The producer's process published 1000 in 1 s; the consumer-only one ran 3 s.
    load_figures(merge_figures([_part({0: 1000}, 1.0, 400), _part({}, 3.0, 600)]), out)
    figures = summary(out)
    assert figures["seconds"] == 1.0
    assert figures["publish_rate"] == 1000.0
    assert out.last_received - out.started == 3.0  # consuming still lasted 3 s


def test_the_rate_check_divides_by_every_producer_of_the_merged_figures():
    from munggoggo.cli_bench import rate_error

    config = BenchConfig(urls=parse_urls("amqp://h/"), producers=1, rate=1000)
    # Two instances of one producer each sent 600 msgs/s together: 300 each, not met.
    assert rate_error(config, 600.0, 2) is not None
    assert rate_error(config, 2000.0, 2) is None
    assert rate_error(config, 950.0, 0) is None  # no producer counts: the options' one
    config.rate = 0
    assert rate_error(config, 1.0, 2) is None


def test_a_stray_line_that_is_not_an_object_does_not_hang_the_parent():
    from munggoggo.perf_scale import _Parent, _Proc

    async def run() -> _Proc:
        script = "print('[1]'); print('5'); print('\"x\"'); print('null')"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
        )
        config = BenchConfig(urls=parse_urls("amqp://h/"), queues=["q"])
        p = _Proc(0, config, proc)
        await asyncio.wait_for(_Parent(None).read(p, [p]), 20)
        return p

    p = asyncio.run(run())
    assert p.finished
    assert p.error == "exited with status 0 before reporting its figures"


def test_large_figures_travel_in_chunks_that_add_up():
    from munggoggo.perf_workers import Chunks, _decode, figures_messages

    rng = random.Random(3)
    stats = RunStats()
    stats.sequences = {"q": SequenceTracker()}
    for seq in sorted(rng.sample(range(400_000), 20_000)):  # gaps everywhere: a large form
        stats.sequences["q"].observe(0, seq)
    figures = json.loads(json.dumps(figures_of(stats)))
    limit = 16 << 10
    bodies = figures_messages(1, figures, "boom", limit)
    assert len(bodies) > 1 and all(len(b) <= limit for b in bodies)
    chunks, whole = Chunks(), None
    for body in reversed(bodies):  # any order
        message = _decode(body)
        assert message is not None and message["t"] == "chunk"
        whole = chunks.add(message) or whole
    assert whole is not None
    assert (whole["index"], whole["error"], whole["figures"]) == (1, "boom", figures)
    small = figures_messages(2, figures_of(RunStats()), None)
    assert len(small) == 1 and _decode(small[0])["t"] == "figures"


@pytest.mark.rabbitmq
def test_a_follower_failing_before_the_start_is_reported_by_the_leader_at_once(broker_url):
    run_id = uuid.uuid4().hex[:10]
    extra = ("-x", "1", "-y", "1", "-C", "100", "--workers-timeout", "8")
    first = instance(broker_url, run_id, *extra)
    import time

    time.sleep(1.0)
    # The broker refuses a queue named amq.*: this instance fails before it is ready.
    second = instance(broker_url, run_id, *extra, "-u", f"amq.refused-{run_id}")
    (_, err1), (out2, err2) = [p.communicate(timeout=90) for p in (first, second)]
    assert first.returncode == 1, err1
    line = err1.strip().splitlines()[-1]
    assert line.startswith("munggoggo bench: instance 2: "), err1
    assert "not ready" not in line and "sent no figures" not in line
    # Its figures are with the leader, which fails the run: the follower's share is done.
    assert second.returncode == 0, err2
    assert "this instance failed" in out2


@pytest.mark.rabbitmq
def test_a_rerun_under_the_same_run_id_counts_the_last_runs_leftovers_as_foreign(broker_url):
    import time

    from munggoggo.client import Connection
    from munggoggo.url import parse_url

    run_id = uuid.uuid4().hex[:10]
    queue = f"bench-rerun-{run_id}"

    def meet(*extra: str) -> list[tuple[str, str]]:
        base = ("-u", queue, "-s", "100", "--workers-timeout", "20", *extra)
        first = instance(broker_url, run_id, *base)
        time.sleep(1.0)
        second = instance(broker_url, run_id, *base)
        results = [p.communicate(timeout=90) for p in (first, second)]
        assert [p.returncode for p in (first, second)] == [0, 0], [r[1] for r in results]
        return results

    try:
        meet("-x", "1", "-y", "0", "-C", "50")  # 100 left in the queue
        results = meet("-x", "1", "-y", "1", "-C", "50")
        (merged,) = [out for out, _ in results if "merged summary of 2 instances (" in out]
        total = json.loads(merged.splitlines()[-1])
        assert total["published"] == 100
        assert total["foreign"] == 100  # the last run's, not this run's duplicates
        assert (total["lost"], total["duplicates"]) == (0, 0)
    finally:

        async def delete() -> None:
            conn = Connection(parse_url(broker_url), reconnect=False)
            await conn.connect()
            ch = await conn.channel()
            await ch.queue_delete(queue)
            await conn.close()

        asyncio.run(delete())


def test_what_is_due_counts_distinct_messages_per_queue():
    from munggoggo.perf_scale import all_arrived, due_by_queue

    config = BenchConfig(urls=parse_urls("amqp://h/"), producers=2, consumers=2, queues=["a", "b"])
    due = due_by_queue(config, {0: 10, 1: 5})
    assert due == {"a": 10, "b": 5}
    assert all_arrived(due, [{"a": 6, "b": 5}, {"a": 4}])
    # 20 on a (old messages or duplicates do not count) but none of b's yet: not over.
    assert not all_arrived(due, [{"a": 20}, {"b": 4}])
    assert all_arrived({}, [])


@pytest.mark.rabbitmq
def test_old_messages_in_the_queue_do_not_end_a_spread_run_early(capsys, broker_url):
    from munggoggo.client import Connection
    from munggoggo.url import parse_url

    queue = f"bench-old-{uuid.uuid4().hex[:8]}"
    try:
        base = ["bench", "--url", broker_url, "-u", queue, "-s", "100"]
        assert main([*base, "-x", "1", "-y", "0", "-C", "3000"]) == 0  # leftovers
        capsys.readouterr()
        argv = [*base, "--processes", "2", "-x", "1", "-y", "2", "-C", "3000", "-L", "300"]
        argv.append("--json")  # slow consumers: the old messages come first, for a while
        status = main(argv)
        out, err = capsys.readouterr()
        assert status == 0, err
        figures = json.loads(out.splitlines()[-1])
        assert figures["foreign"] == 3000
        assert (figures["lost"], figures["unconsumed"]) == (0, 0)
        assert figures["consumed"] == 6000
    finally:

        async def delete() -> None:
            conn = Connection(parse_url(broker_url), reconnect=False)
            await conn.connect()
            ch = await conn.channel()
            await ch.queue_delete(queue)
            await conn.close()

        asyncio.run(delete())


@pytest.mark.rabbitmq
def test_the_merged_depths_are_measured_again_once_every_part_ended(broker_url):
    from munggoggo.client import Connection
    from munggoggo.perf_figures import remeasure_depths
    from munggoggo.url import parse_url

    queue = f"bench-depth-{uuid.uuid4().hex[:8]}"
    assert main(["bench", "--url", broker_url, "-u", queue, "-x", "1", "-y", "0", "-C", "7"]) == 0

    async def run() -> dict[str, int]:
        config = BenchConfig(urls=parse_urls(broker_url), queues=[queue])
        stats = RunStats()
        # A part's stale view, taken while another part still had 7 on their way.
        stats.queue_depths = {queue: 0}
        stats.sequences = {queue: SequenceTracker()}
        await remeasure_depths(config, stats)
        conn = Connection(parse_url(broker_url), reconnect=False)
        await conn.connect()
        ch = await conn.channel()
        await ch.queue_delete(queue)
        await conn.close()
        return stats.queue_depths

    assert asyncio.run(run()) == {queue: 7}


@pytest.mark.rabbitmq
def test_an_interrupted_leader_stops_its_followers(broker_url):
    import signal
    import time

    run_id = uuid.uuid4().hex[:10]
    extra = ("-x", "1", "-y", "1", "-r", "200", "-s", "100", "--workers-timeout", "10")
    first = instance(broker_url, run_id, *extra)  # no end of its own: runs until stopped
    time.sleep(1.0)
    second = instance(broker_url, run_id, *extra)
    time.sleep(3.0)
    first.send_signal(signal.SIGINT)
    try:
        (_, err1), (out2, err2) = [p.communicate(timeout=40) for p in (first, second)]
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
    assert first.returncode == 1
    assert err1.strip().splitlines()[-1] == "munggoggo bench: interrupted"
    # The follower's run ended with the leader's: it printed what it ran.
    assert "summary:" in out2
    # The leader is gone before it took the follower's figures: the follower says so and
    # fails, rather than pointing at a merged summary nobody printed.
    assert second.returncode == 1
    (line,) = err2.strip().splitlines()
    assert "stopped run" in line and line.endswith("this instance's figures are lost"), line
    assert "printed by" not in out2


def test_sequence_gaps_travel_delta_encoded_and_come_back_exactly():
    t = SequenceTracker()
    base = 10**9
    for seq in (0, 2, 3, base, base + 5, base + 6):
        t.observe(7, seq)
    t.observe(7, base + 2)  # fills inside a gap: splits it
    data = json.loads(json.dumps(t.to_dict()))
    gaps = data["producers"]["7"]["gaps"]
    # (start - previous end, length): small numbers, whatever the sequence numbers.
    assert gaps == [1, 1, 2, base - 4, 1, 1, 1, 2]
    back = SequenceTracker.from_dict(data)
    assert (
        back.producers[7].gaps
        == t.producers[7].gaps
        == [
            [1, 2],
            [4, base],
            [base + 1, base + 2],
            [base + 3, base + 5],
        ]
    )
    data["producers"]["7"]["gaps"] = [1, 1, 0, 2]  # touching ranges: not a tracker's form
    with pytest.raises(ValueError):
        SequenceTracker.from_dict(data)


@pytest.mark.rabbitmq
def test_a_late_instance_is_refused_while_the_run_goes(broker_url):
    import time

    run_id = uuid.uuid4().hex[:10]
    extra = ("-x", "1", "-y", "1", "-r", "200", "-C", "800", "--workers-timeout", "15")
    first = instance(broker_url, run_id, *extra)
    time.sleep(1.0)
    second = instance(broker_url, run_id, *extra)
    time.sleep(1.5)
    late = instance(broker_url, run_id, *extra)
    results = [p.communicate(timeout=90) for p in (first, second, late)]
    assert [p.returncode for p in (first, second)] == [0, 0], [r[1] for r in results]
    assert late.returncode == 1
    assert results[2][1].strip().splitlines() == [
        "munggoggo bench: the run already started without this instance"
    ]
