# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of `_confirms_py`: publisher-confirm and consumer-ack bookkeeping.

Same names and behaviour as the pure-Python twin; entries are C-level records instead of
lists, so `add()` (once per publish) and `settle()` (once per ack frame) cost less.
"""

cimport cython

from bisect import bisect_right
from collections import deque


# One per unconfirmed publish, alive until its confirm: never tracked by the garbage
# collector (it holds only the publish's bytes, no cycle can go through it) and reused from
# a free list, so publishing does not trigger collections that walk the whole window.
@cython.no_gc
@cython.freelist(1024)
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
    """Delivery tags handed to the application and not yet acked (see `_confirms_py`):
    one multiple-ack over the contiguous settled prefix (`take`), single acks for what
    finished above a gap (`take_singles`), runs of settled tags above the gap."""

    cdef long long _acked_through
    cdef long long _highest
    cdef set _done_above
    cdef set _forgotten
    cdef list _run_starts
    cdef list _run_ends

    def __init__(self):
        self._acked_through = 0
        self._highest = 0
        self._done_above = set()
        self._forgotten = set()
        self._run_starts = []
        self._run_ends = []

    cpdef void received(self, long long tag):
        """Note a delivered tag (only `outstanding` uses it)."""
        if tag > self._highest:
            self._highest = tag

    cpdef void done(self, long long tag):
        """Mark one delivery processed (ignored at or below the acked prefix)."""
        if tag > self._acked_through:
            self._done_above.add(tag)

    cpdef void forget(self, long long tag):
        """Mark one delivery settled another way: never acked, no longer blocking."""
        if tag > self._acked_through:
            self._forgotten.add(tag)

    cpdef long long take(self):
        """Advance over the contiguous settled prefix; returns the tag to ack with
        multiple=true, or 0."""
        cdef set done = self._done_above
        cdef set forgotten = self._forgotten
        if not done and not forgotten:
            return 0
        cdef list starts = self._run_starts
        cdef long long mark = self._acked_through
        cdef long long ack = 0
        cdef long long nxt = mark + 1
        if not forgotten and not starts:
            # In order, nothing settled another way: the done tags from the prefix on.
            while nxt in done:
                done.discard(nxt)
                nxt += 1
            if nxt == mark + 1:
                return 0
            self._acked_through = nxt - 1
            return nxt - 1
        # 0: no run (tags start at 1)
        cdef long long run_start = <long long>starts[0] if starts else 0
        while True:
            nxt = mark + 1
            if nxt == run_start:
                # The gap below a run closed: its tags are settled already, skip them.
                mark = <long long>self._run_ends[0]
                del starts[0]
                del self._run_ends[0]
                run_start = <long long>starts[0] if starts else 0
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

    cpdef list take_singles(self):
        """The tags done above a gap, ascending, to ack with multiple=false; they and the
        forgotten tags above the gap join the settled runs."""
        cdef set done = self._done_above
        cdef set forgotten = self._forgotten
        if not done and not forgotten:
            return []
        cdef long long mark = self._acked_through
        cdef list singles = []
        cdef list settled
        cdef long long tag
        for tag in sorted(done):
            if tag > mark and tag not in forgotten and not self._in_run(tag):
                singles.append(tag)
        done.clear()
        if forgotten:
            settled = [t for t in forgotten if t > mark]
            settled.extend(singles)
            settled.sort()
            forgotten.clear()
        else:
            settled = singles
        for tag in settled:
            self._add_to_runs(tag)
        return singles

    cdef bint _in_run(self, long long tag):
        cdef list starts = self._run_starts
        if not starts or tag < <long long>starts[0]:
            return False
        cdef Py_ssize_t i = bisect_right(starts, tag) - 1
        return tag <= <long long>self._run_ends[i]

    cdef void _add_to_runs(self, long long tag):
        """Record `tag` as settled above the gap (tags come in ascending order)."""
        cdef list starts = self._run_starts
        cdef list ends = self._run_ends
        cdef Py_ssize_t i, n = len(starts)
        if n and <long long>ends[n - 1] + 1 == tag:  # the usual case: after the newest run
            ends[n - 1] = tag
            return
        if not n or tag > <long long>ends[n - 1]:
            starts.append(tag)
            ends.append(tag)
            return
        i = bisect_right(starts, tag) - 1  # the run starting at or below tag, or -1
        if i >= 0 and tag <= <long long>ends[i]:
            return  # already settled
        if i >= 0 and <long long>ends[i] + 1 == tag:
            ends[i] = tag
            if i + 1 < n and <long long>starts[i + 1] == tag + 1:  # closes the gap between two
                ends[i] = ends[i + 1]
                del starts[i + 1]
                del ends[i + 1]
        elif i + 1 < n and <long long>starts[i + 1] == tag + 1:
            starts[i + 1] = tag
        else:
            starts.insert(i + 1, tag)
            ends.insert(i + 1, tag)

    @property
    def outstanding(self):
        """Deliveries received but not yet settled."""
        cdef long long settled_above = 0
        cdef Py_ssize_t i
        for i in range(len(self._run_starts)):
            settled_above += <long long>self._run_ends[i] - <long long>self._run_starts[i] + 1
        return self._highest - self._acked_through - settled_above

    def reset(self):
        """A new channel generation: tags start again from 1."""
        self._acked_through = 0
        self._highest = 0
        self._done_above.clear()
        self._forgotten.clear()
        self._run_starts.clear()
        self._run_ends.clear()
