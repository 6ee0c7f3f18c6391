"""Tests for munggoggo._speedups confirms: ConfirmTracker (publisher confirms as a watermark)
and AckTracker (consumer acks coalesced over the processed prefix).

Each test runs against every available implementation through the `impl` fixture.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from munggoggo._speedups import _confirms_py

IMPLEMENTATIONS = [_confirms_py]
try:
    from munggoggo._speedups import _confirms  # type: ignore[attr-defined]
except ImportError:
    pass
else:
    IMPLEMENTATIONS.append(_confirms)


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda m: m.__name__.rsplit(".", 1)[-1], scope="module")
def impl(request):
    return request.param


# --------------------------------------------------------------------------- ConfirmTracker


def test_new_tracker_is_empty(impl):
    tracker = impl.ConfirmTracker()
    assert len(tracker) == 0
    assert tracker.last_seq == 0
    assert tracker.confirmed_through == 0
    assert tracker.settle(1, True, False) == []


def test_multiple_ack_settles_the_prefix(impl):
    tracker = impl.ConfirmTracker()
    seqs = [tracker.add(f"m{i}") for i in range(1, 6)]
    assert seqs == [1, 2, 3, 4, 5]
    assert tracker.last_seq == 5
    assert tracker.settle(3, True, False) == []
    assert tracker.confirmed_through == 3
    assert len(tracker) == 2
    assert tracker.settle(5, True, False) == []
    assert tracker.confirmed_through == 5
    assert len(tracker) == 0


def test_single_acks_out_of_order_advance_only_a_contiguous_prefix(impl):
    tracker = impl.ConfirmTracker()
    for i in range(4):
        tracker.add(i)
    tracker.settle(2, False, False)
    tracker.settle(4, False, False)
    assert tracker.confirmed_through == 0  # tag 1 still open
    tracker.settle(1, False, False)
    assert tracker.confirmed_through == 2
    tracker.settle(3, False, False)
    assert tracker.confirmed_through == 4
    assert len(tracker) == 0


def test_nacks_report_seq_and_frames(impl):
    tracker = impl.ConfirmTracker()
    for name in ("a", "b", "c", "d"):
        tracker.add(name)
    assert tracker.settle(2, False, True) == [(2, "b")]
    # a multiple nack fails only what is still open below it
    assert tracker.settle(3, True, True) == [(1, "a"), (3, "c")]
    assert tracker.confirmed_through == 3
    assert tracker.settle(4, False, False) == []


def test_duplicate_and_stale_tags_are_ignored(impl):
    tracker = impl.ConfirmTracker()
    for i in range(3):
        tracker.add(i)
    tracker.settle(2, False, True)
    assert tracker.settle(2, False, True) == []  # again: already settled
    assert tracker.settle(2, False, False) == []
    tracker.settle(1, True, False)
    assert tracker.settle(1, False, True) == []  # below the watermark
    assert tracker.settle(99, False, True) == []  # never published
    assert tracker.confirmed_through == 2
    assert len(tracker) == 1


def test_restart_renumbers_unsettled_from_one_in_order(impl):
    tracker = impl.ConfirmTracker()
    for name in "abcdef":
        tracker.add(name)
    tracker.settle(2, True, False)  # a, b
    tracker.settle(4, False, False)  # d
    assert tracker.restart() == [(3, "c"), (5, "e"), (6, "f")]
    assert len(tracker) == 3
    assert tracker.confirmed_through == 2
    # the broker numbers the new channel's publishes 1, 2, 3, then the new one 4
    assert tracker.add("g") == 7
    assert tracker.settle(2, False, True) == [(5, "e")]
    assert tracker.settle(1, False, False) == []
    assert tracker.confirmed_through == 5
    assert tracker.settle(4, True, True) == [(6, "f"), (7, "g")]
    assert tracker.confirmed_through == 7


def test_fail_all_gives_up_on_every_open_publish(impl):
    tracker = impl.ConfirmTracker()
    for name in "abc":
        tracker.add(name)
    tracker.settle(2, False, False)
    assert tracker.fail_all() == [(1, "a"), (3, "c")]
    assert len(tracker) == 0
    assert tracker.confirmed_through == 3
    assert tracker.add("d") == 4
    assert tracker.settle(1, False, True) == [(4, "d")]  # tags start again from 1


class ConfirmModel(RuleBasedStateMachine):
    """ConfirmTracker against a plain reference: seq -> state, plus tag -> seq for the
    current channel generation."""

    def __init__(self, impl):
        super().__init__()
        self.tracker = impl.ConfirmTracker()
        self.state: dict[int, str] = {}  # seq -> "open" | "acked" | "nacked" | "failed"
        self.tags: list[int] = []  # tags[tag - 1] = seq, for this channel generation
        self.last_through = 0

    @rule(count=st.integers(1, 5))
    def publish(self, count):
        for _ in range(count):
            seq = len(self.state) + 1
            assert self.tracker.add(f"frames-{seq}") == seq
            self.state[seq] = "open"
            self.tags.append(seq)

    @rule(data=st.data(), multiple=st.booleans(), nack=st.booleans())
    def broker_settles(self, data, multiple, nack):
        tag = data.draw(st.integers(0, len(self.tags) + 2), label="tag")
        covered = range(1, min(tag, len(self.tags)) + 1) if multiple else [tag]
        expected_failed = []
        for t in covered:
            if not 1 <= t <= len(self.tags):
                continue
            seq = self.tags[t - 1]
            if self.state[seq] == "open":
                self.state[seq] = "nacked" if nack else "acked"
                if nack:
                    expected_failed.append((seq, f"frames-{seq}"))
        assert self.tracker.settle(tag, multiple, nack) == expected_failed

    @rule()
    def channel_reopened(self):
        pending = [seq for seq in self.tags if self.state[seq] == "open"]
        assert self.tracker.restart() == [(seq, f"frames-{seq}") for seq in pending]
        self.tags = pending

    @rule()
    def give_up(self):
        pending = [seq for seq in self.tags if self.state[seq] == "open"]
        assert self.tracker.fail_all() == [(seq, f"frames-{seq}") for seq in pending]
        for seq in pending:
            self.state[seq] = "failed"
        self.tags = []

    @invariant()
    def watermark_matches_reference(self):
        through = 0
        while through + 1 in self.state and self.state[through + 1] != "open":
            through += 1
        assert self.tracker.confirmed_through == through
        assert through >= self.last_through  # monotonic
        self.last_through = through
        assert self.tracker.last_seq == len(self.state)
        # entries from the oldest open publish of this generation onward stay tracked
        first_open = next(
            (i for i, seq in enumerate(self.tags) if self.state[seq] == "open"), len(self.tags)
        )
        assert len(self.tracker) == len(self.tags) - first_open


def test_confirm_tracker_against_reference_model(impl):
    run_state_machine_as_test(
        lambda: ConfirmModel(impl),
        settings=settings(max_examples=150, stateful_step_count=40, deadline=None),
    )


# --------------------------------------------------------------------------- AckTracker


def test_take_returns_the_contiguous_prefix(impl):
    acks = impl.AckTracker()
    for tag in range(1, 6):
        acks.received(tag)
    assert acks.outstanding == 5
    assert acks.take() == 0
    acks.done(2)
    acks.done(3)
    assert acks.take() == 0  # 1 is still being processed
    acks.done(1)
    assert acks.take() == 3
    assert acks.take() == 0  # nothing new since
    assert acks.outstanding == 2
    acks.done(5)
    assert acks.take() == 0
    acks.forget(4)  # nacked or rejected on its own: no longer blocks the prefix
    assert acks.take() == 5
    assert acks.outstanding == 0


def test_take_never_returns_a_forgotten_tag(impl):
    # A multiple-ack must name a tag that is still outstanding, or RabbitMQ answers 406.
    acks = impl.AckTracker()
    acks.done(1)
    acks.forget(2)
    assert acks.take() == 1
    assert acks.outstanding == 0 or acks.take() == 0
    acks.forget(3)
    assert acks.take() == 0  # nothing to ack, but the prefix moved past 3
    acks.done(4)
    assert acks.take() == 4


def test_done_at_or_below_the_watermark_is_ignored(impl):
    acks = impl.AckTracker()
    acks.received(2)
    acks.done(1)
    acks.done(2)
    assert acks.take() == 2
    acks.done(2)
    acks.done(1)
    assert acks.take() == 0


def test_reset_starts_a_new_channel_generation(impl):
    acks = impl.AckTracker()
    acks.received(3)
    acks.done(1)
    acks.done(3)
    assert acks.take() == 1
    acks.reset()
    assert acks.outstanding == 0
    assert acks.take() == 0
    acks.received(1)
    acks.done(1)
    assert acks.take() == 1


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(1, 30), st.booleans()), max_size=60),
)
def test_ack_tracker_against_reference(impl, steps):
    acks = impl.AckTracker()
    done: set[int] = set()
    received = 0
    acked_through = 0
    for tag, take in steps:
        received = max(received, tag)
        acks.received(tag)
        acks.done(tag)
        done.add(tag)
        if take:
            mark = acked_through
            while mark + 1 in done:
                mark += 1
            assert acks.take() == (mark if mark > acked_through else 0)
            acked_through = mark
        assert acks.outstanding == received - acked_through
