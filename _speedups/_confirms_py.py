"""Pure-Python twin of publisher-confirm and consumer-ack bookkeeping.

ConfirmTracker keeps a watermark instead of a Future per message: publishes get a logical
sequence number that survives reconnects, broker delivery tags map onto them, and one ack
frame with multiple=true settles a whole prefix at once.

AckTracker coalesces consumer acks: one multiple=true ack over the contiguous processed
prefix, and single acks for what finished above a gap, so one slow delivery never holds
back the acks of the others.

Standard library only; the compiled twin (`_confirms.pyx`) keeps the same names.
"""

from bisect import bisect_right
from collections import deque
from typing import Any


class ConfirmTracker:
    """Unconfirmed publishes of one channel, in broker delivery-tag order.

    Each entry is [tag, seq, data, settled]: `data` is the publish's frames, kept so the
    message can be republished after a reconnect. Tags are consecutive within the deque;
    entries settled out of order stay in place, marked, until the prefix before them goes.
    """

    __slots__ = ("_entries", "_next_seq", "_next_tag")

    def __init__(self) -> None:
        self._entries: deque[list[Any]] = deque()  # [tag, seq, data, settled]
        self._next_seq = 1
        self._next_tag = 1

    def add(self, data: bytes) -> int:
        """Record one publish; returns its logical sequence number."""
        seq = self._next_seq
        self._next_seq = seq + 1
        self._entries.append([self._next_tag, seq, data, False])
        self._next_tag += 1
        return seq

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest publish (0 before the first)."""
        return self._next_seq - 1

    @property
    def confirmed_through(self) -> int:
        """Every publish with seq <= this is settled (acked or nacked)."""
        if self._entries:
            oldest_seq: int = self._entries[0][1]
            return oldest_seq - 1
        return self._next_seq - 1

    def __len__(self) -> int:
        return len(self._entries)

    def settle(self, tag: int, multiple: bool, nack: bool) -> list[tuple[int, bytes]]:
        """Apply one Basic.Ack/Nack from the broker.

        Returns the (seq, data) pairs that the broker nacked; empty for an ack.
        """
        entries = self._entries
        failed: list[tuple[int, bytes]] = []
        if not entries:
            return failed
        first = entries[0][0]
        if multiple:
            while entries and entries[0][0] <= tag:
                entry = entries.popleft()
                if nack and not entry[3]:
                    failed.append((entry[1], entry[2]))
        else:
            index = tag - first
            if index < 0 or index >= len(entries):
                return failed  # already settled: a duplicate or stale tag
            entry = entries[index]
            if entry[3]:
                return failed
            entry[3] = True
            if nack:
                failed.append((entry[1], entry[2]))
            entry[2] = None
        while entries and entries[0][3]:
            entries.popleft()
        return failed

    def restart(self) -> list[tuple[int, bytes]]:
        """The channel was reopened: renumber unsettled publishes from tag 1.

        Returns their (seq, data) pairs in order, for republishing.
        """
        pending = [(e[1], e[2]) for e in self._entries if not e[3]]
        self._entries.clear()
        tag = 1
        for seq, data in pending:
            self._entries.append([tag, seq, data, False])
            tag += 1
        self._next_tag = tag
        return pending

    def fail_all(self) -> list[tuple[int, bytes]]:
        """Give up on every unsettled publish; returns their (seq, data) pairs."""
        pending = [(e[1], e[2]) for e in self._entries if not e[3]]
        self._entries.clear()
        self._next_tag = 1
        return pending


class AckTracker:
    """Delivery tags handed to the application and not yet acked, per channel generation.

    `done(tag)` marks one processed; `forget(tag)` marks one settled another way (nacked or
    rejected on its own). Once per loop tick the channel calls `take()`, then
    `take_singles()`:

    - `take()` advances over the contiguous settled prefix and returns the highest *done*
      tag in it (ack it with multiple=true), or 0 when there is nothing to ack. In order,
      that one frame acks everything.
    - `take_singles()` returns the tags done above a gap (an earlier tag still unsettled),
      in ascending order, to ack one by one (multiple=false): a multiple-ack would cover the
      unsettled tag, so one slow delivery would hold back all later ones.

    Tags acked singly or forgotten above a gap are kept as runs of settled tags; the prefix
    jumps over a run once the gap below it closes. Memory is thus bounded by the number of
    gaps (at most the unsettled deliveries, i.e. the prefetch), not by the traffic behind a
    slow one. Neither method ever returns a tag that was acked or forgotten already:
    RabbitMQ answers an ack of a tag that is not outstanding (twice acked, or a
    multiple-ack whose own tag was nacked) with 406 PRECONDITION_FAILED.
    """

    __slots__ = (
        "_acked_through",
        "_done_above",
        "_forgotten",
        "_highest",
        "_run_ends",
        "_run_starts",
    )

    def __init__(self) -> None:
        self._acked_through = 0  # every tag <= this is settled
        self._highest = 0  # highest tag received
        self._done_above: set[int] = set()  # processed tags > _acked_through, not yet acked
        self._forgotten: set[int] = (
            set()
        )  # settled-elsewhere tags > _acked_through, not yet in runs
        # Runs of settled tags above a gap, sorted, disjoint and not adjacent:
        # tags _run_starts[i] .. _run_ends[i] are acked or forgotten. The first run starts
        # above _acked_through + 1 (that tag is the gap).
        self._run_starts: list[int] = []
        self._run_ends: list[int] = []

    def received(self, tag: int) -> None:
        """Note a delivered tag (only `outstanding` uses it).

        Args:
            tag: the delivery tag.
        """
        if tag > self._highest:
            self._highest = tag

    def done(self, tag: int) -> None:
        """Mark one delivery processed: it is acked by the next `take()`/`take_singles()`.

        Args:
            tag: the delivery tag; one at or below the acked prefix is ignored.
        """
        if tag > self._acked_through:
            self._done_above.add(tag)

    def forget(self, tag: int) -> None:
        """Mark one delivery settled another way (nacked or rejected on its own): it no
        longer blocks the prefix and is never acked.

        Args:
            tag: the delivery tag; one at or below the acked prefix is ignored.
        """
        if tag > self._acked_through:
            self._forgotten.add(tag)

    def take(self) -> int:
        """Advance over the contiguous settled prefix.

        Returns:
            The tag to ack with multiple=true (the highest done tag of the prefix, never a
            forgotten or already acked one), or 0 when there is none.
        """
        done = self._done_above
        forgotten = self._forgotten
        if not done and not forgotten:
            return 0
        starts = self._run_starts
        mark = self._acked_through
        if not forgotten and not starts:
            # In order, nothing settled another way: the done tags from the prefix on.
            nxt = mark + 1
            while nxt in done:
                done.discard(nxt)
                nxt += 1
            if nxt == mark + 1:
                return 0
            self._acked_through = nxt - 1
            return nxt - 1
        run_start = starts[0] if starts else 0  # 0: no run (tags start at 1)
        ack = 0
        while True:
            nxt = mark + 1
            if nxt == run_start:
                # The gap below a run closed: its tags are settled already, skip them.
                mark = self._run_ends[0]
                del starts[0]
                del self._run_ends[0]
                run_start = starts[0] if starts else 0
                continue
            if nxt in done:
                done.discard(nxt)
                if forgotten and nxt in forgotten:
                    forgotten.discard(nxt)  # its nack went out already: acking it is a 406
                else:
                    ack = nxt
            elif nxt in forgotten:
                forgotten.discard(nxt)
            else:
                break
            mark = nxt
        self._acked_through = mark
        return ack

    def take_singles(self) -> list[int]:
        """The tags done above a gap, to ack one by one; call it after `take()`.

        They (and the forgotten tags above the gap) join the settled runs, so no later
        call returns them again.

        Returns:
            The tags to ack with multiple=false, ascending; empty when there are none.
        """
        done = self._done_above
        forgotten = self._forgotten
        if not done and not forgotten:
            return []
        mark = self._acked_through
        singles = []
        for tag in sorted(done):
            if tag > mark and tag not in forgotten and not self._in_run(tag):
                singles.append(tag)
        done.clear()
        if forgotten:
            settled = [tag for tag in forgotten if tag > mark]
            settled.extend(singles)
            settled.sort()
            forgotten.clear()
        else:
            settled = singles
        for tag in settled:
            self._add_to_runs(tag)
        return singles

    def _in_run(self, tag: int) -> bool:
        """Whether `tag` lies in a run of settled tags."""
        starts = self._run_starts
        if not starts or tag < starts[0]:
            return False
        i = bisect_right(starts, tag) - 1
        return tag <= self._run_ends[i]

    def _add_to_runs(self, tag: int) -> None:
        """Record `tag` as settled above the gap (tags come in ascending order)."""
        starts = self._run_starts
        ends = self._run_ends
        if ends and ends[-1] + 1 == tag:  # the usual case: right after the newest run
            ends[-1] = tag
            return
        if not starts or tag > ends[-1]:
            starts.append(tag)
            ends.append(tag)
            return
        i = bisect_right(starts, tag) - 1  # the run starting at or below tag, or -1
        if i >= 0 and tag <= ends[i]:
            return  # already settled
        if i >= 0 and ends[i] + 1 == tag:
            ends[i] = tag
            if i + 1 < len(starts) and starts[i + 1] == tag + 1:  # closes the gap between two
                ends[i] = ends[i + 1]
                del starts[i + 1]
                del ends[i + 1]
        elif i + 1 < len(starts) and starts[i + 1] == tag + 1:
            starts[i + 1] = tag
        else:
            starts.insert(i + 1, tag)
            ends.insert(i + 1, tag)

    @property
    def outstanding(self) -> int:
        """Deliveries received but not yet settled."""
        settled_above = 0
        for start, end in zip(self._run_starts, self._run_ends, strict=True):
            settled_above += end - start + 1
        return self._highest - self._acked_through - settled_above

    def reset(self) -> None:
        """A new channel generation: tags start again from 1."""
        self._acked_through = 0
        self._highest = 0
        self._done_above.clear()
        self._forgotten.clear()
        self._run_starts.clear()
        self._run_ends.clear()
