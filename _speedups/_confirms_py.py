"""Pure-Python twin of publisher-confirm and consumer-ack bookkeeping.

ConfirmTracker keeps a watermark instead of a Future per message: publishes get a logical
sequence number that survives reconnects, broker delivery tags map onto them, and one ack
frame with multiple=true settles a whole prefix at once.

AckTracker coalesces consumer acks: deliveries may finish out of order, but acks go out as
one multiple=true ack over the contiguous processed prefix.

Standard library only; the compiled twin (`_confirms.pyx`) keeps the same names.
"""

from collections import deque


class ConfirmTracker:
    """Unconfirmed publishes of one channel, in broker delivery-tag order.

    Each entry is [tag, seq, data, settled]: `data` is the publish's frames, kept so the
    message can be republished after a reconnect. Tags are consecutive within the deque;
    entries settled out of order stay in place, marked, until the prefix before them goes.
    """

    __slots__ = ("_entries", "_next_seq", "_next_tag")

    def __init__(self):
        self._entries = deque()
        self._next_seq = 1
        self._next_tag = 1

    def add(self, data):
        """Record one publish; returns its logical sequence number."""
        seq = self._next_seq
        self._next_seq = seq + 1
        self._entries.append([self._next_tag, seq, data, False])
        self._next_tag += 1
        return seq

    @property
    def last_seq(self):
        """The sequence number of the newest publish (0 before the first)."""
        return self._next_seq - 1

    @property
    def confirmed_through(self):
        """Every publish with seq <= this is settled (acked or nacked)."""
        if self._entries:
            return self._entries[0][1] - 1
        return self._next_seq - 1

    def __len__(self):
        return len(self._entries)

    def settle(self, tag, multiple, nack):
        """Apply one Basic.Ack/Nack from the broker.

        Returns the (seq, data) pairs that the broker nacked; empty for an ack.
        """
        entries = self._entries
        failed = []
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

    def restart(self):
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

    def fail_all(self):
        """Give up on every unsettled publish; returns their (seq, data) pairs."""
        pending = [(e[1], e[2]) for e in self._entries if not e[3]]
        self._entries.clear()
        self._next_tag = 1
        return pending


class AckTracker:
    """Delivery tags handed to the application and not yet acked, per channel generation.

    `done(tag)` marks one processed; `forget(tag)` marks one settled another way (nacked or
    rejected on its own). `take()` advances over the contiguous settled prefix and returns
    the highest *done* tag in it (ack it with multiple=true), or 0 when there is nothing to
    ack. It never returns a forgotten tag: RabbitMQ answers a multiple-ack whose own tag is
    no longer outstanding with 406 PRECONDITION_FAILED.
    """

    __slots__ = ("_acked_through", "_done_above", "_forgotten", "_highest")

    def __init__(self):
        self._acked_through = 0  # every tag <= this is settled
        self._highest = 0  # highest tag received
        self._done_above = set()  # processed tags > _acked_through, not yet contiguous
        self._forgotten = set()  # settled-elsewhere tags > _acked_through

    def received(self, tag):
        if tag > self._highest:
            self._highest = tag

    def done(self, tag):
        if tag > self._acked_through:
            self._done_above.add(tag)

    def forget(self, tag):
        if tag > self._acked_through:
            self._forgotten.add(tag)

    def take(self):
        """Advance over the contiguous settled prefix; returns the tag to ack or 0."""
        done = self._done_above
        forgotten = self._forgotten
        if not done and not forgotten:
            return 0
        mark = self._acked_through
        ack = 0
        while True:
            nxt = mark + 1
            if nxt in done:
                done.discard(nxt)
                ack = nxt
            elif nxt in forgotten:
                forgotten.discard(nxt)
            else:
                break
            mark = nxt
        self._acked_through = mark
        return ack

    @property
    def outstanding(self):
        """Deliveries received but not yet settled."""
        return self._highest - self._acked_through

    def reset(self):
        self._acked_through = 0
        self._highest = 0
        self._done_above.clear()
        self._forgotten.clear()
