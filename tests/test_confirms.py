"""Tests for munggoggo._speedups confirms: ConfirmTracker (publisher confirms as a watermark)
and AckTracker (consumer acks coalesced over the processed prefix).

Each test runs against every available implementation through the `impl` fixture.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from twins import CONFIRM_TWINS, twin_id


@pytest.fixture(params=CONFIRM_TWINS, ids=twin_id, scope="module")
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


# --------------------------------------------------------------------------- AckTracker, gaps


def test_in_order_acks_go_out_as_one_multiple_ack(impl):
    acks = impl.AckTracker()
    for tag in range(1, 101):
        acks.received(tag)
        acks.done(tag)
    assert acks.take() == 100
    assert acks.take_singles() == []
    assert acks.outstanding == 0


def test_tags_done_above_a_gap_are_acked_singly_at_once(impl):
    acks = impl.AckTracker()
    for tag in range(1, 8):
        acks.received(tag)
    for tag in (2, 3, 5):
        acks.done(tag)
    assert acks.take() == 0  # 1 is still being processed
    assert acks.take_singles() == [2, 3, 5]
    assert acks.outstanding == 4  # 1, 4, 6, 7
    acks.done(6)
    assert acks.take() == 0
    assert acks.take_singles() == [6]
    acks.done(4)  # fills the hole between two runs of acked tags
    assert acks.take() == 0
    assert acks.take_singles() == [4]
    assert acks.outstanding == 2  # 1, 7
    acks.done(1)
    assert acks.take() == 1  # 2..6 were acked already: the multiple-ack names only 1
    assert acks.take_singles() == []
    assert acks.outstanding == 1
    acks.done(7)
    assert acks.take() == 7
    assert acks.take_singles() == []
    assert acks.outstanding == 0


def test_the_prefix_and_singles_in_the_same_tick(impl):
    acks = impl.AckTracker()
    for tag in (1, 2, 4, 5):
        acks.done(tag)
    assert acks.take() == 2
    assert acks.take_singles() == [4, 5]
    acks.done(3)
    acks.done(6)
    assert acks.take() == 6  # 3, then over the acked 4..5, then 6
    assert acks.take_singles() == []


def test_a_tag_is_never_acked_twice(impl):
    # RabbitMQ answers an ack of a tag that is no longer outstanding with 406.
    acks = impl.AckTracker()
    acks.done(2)
    assert acks.take() == 0
    assert acks.take_singles() == [2]
    acks.done(2)
    assert acks.take() == 0
    assert acks.take_singles() == []
    acks.done(1)
    acks.done(2)  # again, together with the tag that closes the gap
    assert acks.take() == 1
    assert acks.take_singles() == []
    acks.done(1)
    acks.done(2)
    assert acks.take() == 0
    assert acks.take_singles() == []


def test_forgotten_tags_are_never_acked(impl):
    acks = impl.AckTracker()
    acks.forget(2)
    acks.done(3)
    acks.forget(4)
    acks.done(5)
    assert acks.take() == 0
    assert acks.take_singles() == [3, 5]
    acks.done(1)
    assert acks.take() == 1  # over 2..5, settled one way or the other
    acks.done(6)
    acks.forget(7)
    assert acks.take() == 6  # never 7: its nack went out on its own
    assert acks.take_singles() == []


def test_a_tag_forgotten_after_it_was_done_is_not_acked(impl):
    # The nack goes out at once, the coalesced ack only at the end of the tick.
    acks = impl.AckTracker()
    acks.done(1)
    acks.forget(1)
    assert acks.take() == 0
    assert acks.take_singles() == []
    acks.done(3)
    acks.forget(3)
    acks.done(4)
    assert acks.take() == 0  # 2 is open
    assert acks.take_singles() == [4]
    acks.done(2)
    assert acks.take() == 2
    assert acks.take_singles() == []


def test_reset_forgets_the_acked_runs(impl):
    acks = impl.AckTracker()
    acks.received(3)
    acks.done(3)
    assert acks.take() == 0
    assert acks.take_singles() == [3]
    acks.reset()
    assert acks.outstanding == 0
    for tag in (1, 2, 3):
        acks.received(tag)
        acks.done(tag)
    assert acks.take() == 3  # tag 3 of the new generation is a new delivery
    assert acks.take_singles() == []


class AckWireModel(RuleBasedStateMachine):
    """The tracker against the broker's side of the wire: the frames it makes the channel
    send must never name a tag that is not outstanding (RabbitMQ's 406), never cover a
    delivery the application has not settled, and must ack everything settled by the end
    of the tick."""

    def __init__(self, impl):
        super().__init__()
        self.acks = impl.AckTracker()
        self.delivered = 0
        self.outstanding: set[int] = set()  # the broker's unacked deliveries
        self.unsettled: set[int] = set()  # delivered, not settled by the application
        self.done_this_tick: set[int] = set()

    @rule(count=st.integers(1, 6))
    def deliver(self, count):
        for _ in range(count):
            self.delivered += 1
            self.outstanding.add(self.delivered)
            self.unsettled.add(self.delivered)
            self.acks.received(self.delivered)

    @rule(data=st.data())
    def done(self, data):
        if self.unsettled:
            tag = data.draw(st.sampled_from(sorted(self.unsettled)), label="done")
            self.unsettled.discard(tag)
            self.done_this_tick.add(tag)
            self.acks.done(tag)

    @rule(data=st.data())
    def forget(self, data):
        if self.unsettled:
            tag = data.draw(st.sampled_from(sorted(self.unsettled)), label="forget")
            self.unsettled.discard(tag)
            self.outstanding.discard(tag)  # the nack/reject went out at once
            self.acks.forget(tag)

    @rule()
    def tick(self):
        frames = 0
        multiple = self.acks.take()
        if multiple:
            frames += 1
            assert multiple in self.outstanding
            covered = {t for t in self.outstanding if t <= multiple}
            assert not covered & self.unsettled
            self.outstanding -= covered
        singles = self.acks.take_singles()
        assert singles == sorted(singles)
        for tag in singles:
            frames += 1
            assert tag in self.outstanding
            assert tag not in self.unsettled
            self.outstanding.discard(tag)
        # Everything the application settled is acked now; nothing else is.
        assert self.outstanding == self.unsettled
        if self.done_this_tick and (
            not self.unsettled or max(self.done_this_tick) < min(self.unsettled)
        ):
            assert frames == 1  # in order: one multiple-ack, however many were done
        self.done_this_tick.clear()
        assert self.acks.outstanding == len(self.outstanding)


def test_ack_tracker_against_the_wire_model(impl):
    run_state_machine_as_test(
        lambda: AckWireModel(impl),
        settings=settings(max_examples=200, stateful_step_count=60, deadline=None),
    )
