"""munggoggo.perf_stats: loss/duplicate/order accounting and the latency histogram."""

from __future__ import annotations

import random

import pytest

from munggoggo.perf_stats import LatencyHistogram, OrderCheck, SequenceTracker


def feed(tracker, producer, seqs):
    for seq in seqs:
        tracker.observe(producer, seq)


def test_in_order_run_loses_nothing():
    t = SequenceTracker()
    feed(t, 1, range(1000))
    assert (t.lost({1: 1000}), t.duplicates(), t.out_of_order()) == (0, 0, 0)


def test_gap_never_filled_is_lost():
    t = SequenceTracker()
    feed(t, 1, [0, 1, 2, 6, 7])
    assert t.lost() == 3
    assert t.lost({1: 8}) == 3


def test_gap_filled_later_is_out_of_order_not_lost():
    t = SequenceTracker()
    feed(t, 1, [0, 3, 1, 2, 4])
    assert (t.lost({1: 5}), t.out_of_order(), t.duplicates()) == (0, 2, 0)


def test_gap_filled_from_the_middle_splits_it():
    t = SequenceTracker()
    feed(t, 1, [0, 10, 5])
    assert t.producers[1].gaps == [[1, 5], [6, 10]]
    feed(t, 1, [1, 9])
    assert t.producers[1].gaps == [[2, 5], [6, 9]]
    assert t.lost() == 6


def test_repeats_are_duplicates():
    t = SequenceTracker()
    feed(t, 1, [0, 1, 1, 2, 0, 2])
    assert (t.duplicates(), t.lost({1: 3}), t.out_of_order()) == (3, 0, 0)


def test_refilling_a_filled_gap_is_a_duplicate():
    t = SequenceTracker()
    feed(t, 1, [0, 2, 1, 1])
    assert (t.out_of_order(), t.duplicates(), t.lost()) == (1, 1, 0)


def test_unreceived_tail_and_silent_producer_are_lost():
    t = SequenceTracker()
    feed(t, 1, range(5))
    assert t.lost({1: 8, 2: 4}) == 3 + 4


def test_producers_are_counted_apart():
    t = SequenceTracker()
    feed(t, 1, [0, 1, 2])
    feed(t, 2, [0, 2])
    feed(t, 1, [1])
    assert (t.lost({1: 3, 2: 3}), t.duplicates()) == (1, 1)


def test_a_huge_gap_is_one_interval():
    t = SequenceTracker()
    feed(t, 1, [0, 10**12])
    assert t.lost() == 10**12 - 1
    assert len(t.producers[1].gaps) == 1


def test_shuffled_stream_with_known_loss_and_repeats():
    rng = random.Random(7)
    sent = list(range(5000))
    dropped = set(rng.sample(sent, 40))
    stream = [s for s in sent if s not in dropped]
    repeats = rng.sample(stream, 25)
    stream += repeats
    rng.shuffle(stream)
    t = SequenceTracker()
    feed(t, 0, stream)
    assert t.lost({0: 5000}) == 40
    assert t.duplicates() == 25


def test_order_check_counts_what_comes_after_a_higher_number():
    check = OrderCheck()
    for producer, seq in [(1, 0), (1, 2), (1, 1), (2, 0), (1, 3), (1, 3)]:
        check.observe(producer, seq)
    assert check.out_of_order == 2


def test_histogram_is_exact_below_256():
    h = LatencyHistogram()
    for v in range(1, 101):
        h.record(v)
    assert h.summary() == {"min": 1, "p50": 50, "p75": 75, "p95": 95, "p99": 99, "max": 100}


def test_histogram_percentiles_within_one_percent():
    rng = random.Random(3)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(20_000)]
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    ordered = sorted(values)
    for q in (0.5, 0.75, 0.95, 0.99):
        exact = ordered[max(0, int(q * len(values) + 0.999999) - 1)]
        assert abs(h.percentile(q) - exact) <= max(1, exact * 0.01)
    assert (h.min, h.max) == (ordered[0], ordered[-1])
    assert h.percentile(1.0) == ordered[-1]


def test_histogram_memory_is_bounded_by_the_value_range():
    h = LatencyHistogram()
    for _ in range(10_000):
        h.record(3_600_000_000)  # an hour in microseconds
    assert len(h.counts) < 4_000
    assert h.percentile(0.5) == 3_600_000_000


def test_histogram_merge_and_empty():
    a, b = LatencyHistogram(), LatencyHistogram()
    assert a.summary() == dict.fromkeys(("min", "p50", "p75", "p95", "p99", "max"), 0)
    for v in (5, 10):
        a.record(v)
    for v in (1, 1000, 20):
        b.record(v)
    a.merge(b)
    a.merge(LatencyHistogram())
    assert (a.count, a.min, a.max, a.total) == (5, 1, 1000, 1036)
    assert a.percentile(0.5) == 10


def test_histogram_negative_is_zero_and_bad_fraction_raises():
    h = LatencyHistogram()
    h.record(-40)
    assert (h.min, h.max) == (0, 0)
    with pytest.raises(ValueError):
        h.percentile(1.5)


def test_bucket_value_round_trip():
    for v in (0, 255, 256, 257, 1000, 123_456, 2**40):
        mid = LatencyHistogram.value_of(LatencyHistogram.index_of(v))
        assert LatencyHistogram.index_of(mid) == LatencyHistogram.index_of(v)
        assert abs(mid - v) <= v / 128
