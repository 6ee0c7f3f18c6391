# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of `_confirms_py`: publisher-confirm and consumer-ack bookkeeping.

Same names and behaviour as the pure-Python twin; entries are C-level records instead of
lists, so `add()` (once per publish) and `settle()` (once per ack frame) cost less.
"""

from collections import deque


cdef class _Entry:
    cdef long long tag
    cdef long long seq
    cdef object data
    cdef bint settled


cdef class ConfirmTracker:
    """Unconfirmed publishes of one channel, in broker delivery-tag order."""

    cdef object _entries
    cdef long long _next_seq
    cdef long long _next_tag

    def __init__(self):
        self._entries = deque()
        self._next_seq = 1
        self._next_tag = 1

    cpdef long long add(self, data):
        """Record one publish; returns its logical sequence number."""
        cdef _Entry entry = _Entry.__new__(_Entry)
        entry.tag = self._next_tag
        entry.seq = self._next_seq
        entry.data = data
        entry.settled = False
        self._next_tag += 1
        self._next_seq += 1
        self._entries.append(entry)
        return entry.seq

    @property
    def last_seq(self):
        return self._next_seq - 1

    @property
    def confirmed_through(self):
        if self._entries:
            return (<_Entry>self._entries[0]).seq - 1
        return self._next_seq - 1

    def __len__(self):
        return len(self._entries)

    def settle(self, tag, multiple, nack):
        """Apply one Basic.Ack/Nack; returns the (seq, data) pairs the broker nacked."""
        cdef object entries = self._entries
        cdef list failed = []
        cdef _Entry entry
        cdef long long first, index
        cdef long long t = tag
        if not entries:
            return failed
        first = (<_Entry>entries[0]).tag
        if multiple:
            while entries and (<_Entry>entries[0]).tag <= t:
                entry = <_Entry>entries.popleft()
                if nack and not entry.settled:
                    failed.append((entry.seq, entry.data))
        else:
            index = t - first
            if index < 0 or index >= len(entries):
                return failed
            entry = <_Entry>entries[index]
            if entry.settled:
                return failed
            entry.settled = True
            if nack:
                failed.append((entry.seq, entry.data))
            entry.data = None
        while entries and (<_Entry>entries[0]).settled:
            entries.popleft()
        return failed

    def restart(self):
        """The channel was reopened: renumber unsettled publishes from tag 1."""
        cdef list pending = self._unsettled()
        self._entries.clear()
        cdef long long tag = 1
        cdef _Entry entry
        for seq, data in pending:
            entry = _Entry.__new__(_Entry)
            entry.tag = tag
            entry.seq = seq
            entry.data = data
            entry.settled = False
            self._entries.append(entry)
            tag += 1
        self._next_tag = tag
        return pending

    def fail_all(self):
        """Give up on every unsettled publish; returns their (seq, data) pairs."""
        cdef list pending = self._unsettled()
        self._entries.clear()
        self._next_tag = 1
        return pending

    cdef list _unsettled(self):
        """(seq, data) of every entry not settled yet, in tag order."""
        cdef list out = []
        cdef _Entry e
        for e in self._entries:
            if not e.settled:
                out.append((e.seq, e.data))
        return out


cdef class AckTracker:
    """Delivery tags handed to the application and not yet acked (see `_confirms_py`)."""

    cdef long long _acked_through
    cdef long long _highest
    cdef set _done_above
    cdef set _forgotten

    def __init__(self):
        self._acked_through = 0
        self._highest = 0
        self._done_above = set()
        self._forgotten = set()

    cpdef void received(self, long long tag):
        if tag > self._highest:
            self._highest = tag

    cpdef void done(self, long long tag):
        if tag > self._acked_through:
            self._done_above.add(tag)

    cpdef void forget(self, long long tag):
        if tag > self._acked_through:
            self._forgotten.add(tag)

    cpdef long long take(self):
        """Advance over the contiguous settled prefix; returns the tag to ack or 0."""
        cdef set done = self._done_above
        cdef set forgotten = self._forgotten
        if not done and not forgotten:
            return 0
        cdef long long mark = self._acked_through
        cdef long long ack = 0
        cdef long long nxt
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
        return self._highest - self._acked_through

    def reset(self):
        self._acked_through = 0
        self._highest = 0
        self._done_above.clear()
        self._forgotten.clear()
