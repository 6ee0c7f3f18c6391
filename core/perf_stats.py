"""Statistics of `munggoggo bench`: loss and duplicate accounting, latency histograms.

Pure (no IO, no clock): the runner feeds them and reads the figures.

`SequenceTracker` follows each producer's sequence numbers as they arrive: a number above
the next expected one opens a gap, a number that fills a gap later is out of order, a
number seen before is a duplicate (a redelivery, say), and what is still missing at the
end (gaps never filled, plus the tail the producer sent and nobody received) is lost.
Gaps are kept as intervals, so a burst of loss costs one entry, not one per message.
Competing consumers of one queue share its tracker (loss is a property of the queue), but
order is only defined per consumer: `OrderCheck` counts, for one consumer, messages that
came after a higher number of the same producer (omq's out-of-order check).

`LatencyHistogram` is an HDR-style log-linear histogram of non-negative integers
(microseconds here): exact below 256, above that 128 buckets per power of two, so any
percentile is within 0.8% of the true value, in a few thousand counters whatever the run
length. Minimum and maximum are exact.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

__all__ = ["PERCENTILES", "LatencyHistogram", "OrderCheck", "ProducerSequence", "SequenceTracker"]

PERCENTILES = (("p50", 0.50), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99))

_SUB_BITS = 8  # 256 exact values, then 128 buckets per power of two
_HALF = 1 << (_SUB_BITS - 1)


class LatencyHistogram:
    """Bounded-memory histogram of non-negative integers with percentile queries.

    Attributes:
        count: values recorded.
        total: their sum.
        min: the smallest value (0 while empty).
        max: the largest value (0 while empty).
    """

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    @staticmethod
    def index_of(value: int) -> int:
        """The bucket a value falls in.

        Args:
            value: a non-negative integer.

        Returns:
            The bucket index.
        """
        shift = value.bit_length() - _SUB_BITS
        if shift <= 0:
            return value
        return shift * _HALF + (value >> shift)

    @staticmethod
    def value_of(index: int) -> int:
        """The middle of a bucket's range (the value reported for it).

        Args:
            index: a bucket index.

        Returns:
            The integer in the middle of the values that fall in that bucket.
        """
        if index < 2 * _HALF:
            return index
        shift, sub = divmod(index - _HALF, _HALF)
        low = (sub + _HALF) << shift
        return low + ((1 << shift) - 1) // 2

    def record(self, value: int) -> None:
        """Count one value (negative values, from clocks that disagree, count as 0).

        Args:
            value: the observation.
        """
        if value < 0:
            value = 0
        index = self.index_of(value)
        counts = self.counts
        if index >= len(counts):
            counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1
        if self.count == 0:
            self.min = self.max = value
        elif value < self.min:
            self.min = value
        elif value > self.max:
            self.max = value
        self.count += 1
        self.total += value

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's counts to this one.

        Args:
            other: the histogram to add (left unchanged).
        """
        if other.count == 0:
            return
        if len(other.counts) > len(self.counts):
            self.counts.extend([0] * (len(other.counts) - len(self.counts)))
        for i, n in enumerate(other.counts):
            if n:
                self.counts[i] += n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def percentile(self, q: float) -> int:
        """The value below or at which a fraction `q` of the recorded values lie.

        Args:
            q: between 0 and 1.

        Returns:
            The value (within 0.8%), clamped to the exact min and max; 0 when empty.

        Raises:
            ValueError: q is outside [0, 1].
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"percentile fraction must be within [0, 1]: {q}")
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(max(self.value_of(index), self.min), self.max)
        return self.max

    def summary(self) -> dict[str, int]:
        """min, p50, p75, p95, p99 and max.

        Returns:
            A dict with those keys (all 0 when empty).
        """
        out = {"min": self.min}
        for name, q in PERCENTILES:
            out[name] = self.percentile(q)
        out["max"] = self.max
        return out

    def to_dict(self) -> dict[str, object]:
        """The histogram in a JSON-able form that `from_dict` reads back exactly.

        Returns:
            count, total, min, max and the non-zero buckets as [index, count] pairs.
        """
        return {
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "buckets": [[i, n] for i, n in enumerate(self.counts) if n],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LatencyHistogram:
        """Rebuild a histogram from `to_dict`'s form.

        Args:
            data: what `to_dict` returned (after a JSON round trip, say).

        Returns:
            An equal histogram.

        Raises:
            ValueError: the data is not a histogram's form.
        """
        try:
            hist = cls()
            buckets = [(int(i), int(n)) for i, n in data["buckets"]]  # type: ignore[attr-defined]
            if buckets:
                hist.counts = [0] * (max(i for i, _ in buckets) + 1)
            for i, n in buckets:
                if i < 0 or n < 0:
                    raise ValueError(f"negative bucket or count: {i}, {n}")
                hist.counts[i] += n
            hist.count = int(data["count"])  # type: ignore[call-overload]
            hist.total = int(data["total"])  # type: ignore[call-overload]
            hist.min = int(data["min"])  # type: ignore[call-overload]
            hist.max = int(data["max"])  # type: ignore[call-overload]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a latency histogram: {exc}") from None
        if hist.count != sum(hist.counts):
            raise ValueError("latency histogram: count differs from its buckets' sum")
        return hist


@dataclass(slots=True)
class ProducerSequence:
    """One producer's sequence as received.

    Attributes:
        next: the sequence number after the highest received.
        gaps: missing ranges below `next`, as sorted [start, end) pairs.
        received: messages received (duplicates included).
        duplicates: messages whose number was received before.
        out_of_order: messages that filled a gap (arrived after a higher number).
    """

    next: int = 0
    gaps: list[list[int]] = field(default_factory=list)
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0

    def missing(self) -> int:
        """Numbers below `next` not received (so far).

        Returns:
            The count.
        """
        return sum(end - start for start, end in self.gaps)


def _delta_gaps(gaps: list[list[int]]) -> list[int]:
    out: list[int] = []
    end = 0
    for start, stop in gaps:
        out += (start - end, stop - start)
        end = stop
    return out


def _undelta_gaps(data: object) -> list[list[int]]:
    """`_delta_gaps`'s flat list back into sorted [start, end) pairs."""
    if not isinstance(data, list) or len(data) % 2:
        raise ValueError("gaps: not a list of (offset, length) pairs")
    gaps: list[list[int]] = []
    end = 0
    for i in range(0, len(data), 2):
        offset, length = int(data[i]), int(data[i + 1])
        if offset < 0 or length <= 0 or (gaps and offset == 0):
            raise ValueError("gaps: ranges that overlap, touch or are empty")
        start = end + offset
        end = start + length
        gaps.append([start, end])
    return gaps


class SequenceTracker:
    """Loss, duplicate and order accounting per producer.

    Args:
        first: the sequence number every producer starts with.
    """

    __slots__ = ("first", "producers")

    def __init__(self, first: int = 0) -> None:
        self.first = first
        self.producers: dict[int, ProducerSequence] = {}

    def observe(self, producer: int, sequence: int) -> None:
        """Account for one received message.

        Args:
            producer: the producer's id.
            sequence: the message's sequence number.
        """
        state = self.producers.get(producer)
        if state is None:
            state = self.producers[producer] = ProducerSequence(next=self.first)
        state.received += 1
        if sequence == state.next:
            state.next += 1
        elif sequence > state.next:
            state.gaps.append([state.next, sequence])
            state.next = sequence + 1
        else:
            self._fill(state, sequence)

    @staticmethod
    def _fill(state: ProducerSequence, sequence: int) -> None:
        gaps = state.gaps
        # The last gap starting at or below `sequence`: the only one that can hold it.
        i = bisect.bisect_right(gaps, sequence, key=lambda gap: gap[0]) - 1
        if i < 0 or sequence >= gaps[i][1]:
            state.duplicates += 1
            return
        state.out_of_order += 1
        start, end = gaps[i]
        if start == sequence and end == sequence + 1:
            del gaps[i]
        elif start == sequence:
            gaps[i][0] = sequence + 1
        elif end == sequence + 1:
            gaps[i][1] = sequence
        else:
            gaps[i][1] = sequence
            gaps.insert(i + 1, [sequence + 1, end])

    def duplicates(self) -> int:
        """Messages received more than once, over all producers.

        Returns:
            The count.
        """
        return sum(p.duplicates for p in self.producers.values())

    def out_of_order(self) -> int:
        """Messages that arrived after a higher number of their producer.

        Returns:
            The count.
        """
        return sum(p.out_of_order for p in self.producers.values())

    def lost(self, sent: dict[int, int] | None = None) -> int:
        """Messages never received: open gaps, plus each producer's unreceived tail.

        Args:
            sent: how many messages each producer sent, numbered from `first` (a producer
                not received from at all loses them all); None counts the gaps only.

        Returns:
            The count.
        """
        total = sum(p.missing() for p in self.producers.values())
        for producer, count in (sent or {}).items():
            state = self.producers.get(producer)
            highest = state.next if state is not None else self.first
            total += max(0, self.first + count - highest)
        return total

    def to_dict(self) -> dict[str, object]:
        """The tracker in a JSON-able form that `from_dict` reads back exactly.

        Returns:
            first, and per producer (keyed by its id as a string) next, gaps, received,
            duplicates and out_of_order. The gaps are delta-encoded, one flat list of
            (start - previous end, length) pairs: with competing consumers there is a gap
            per prefetch batch, and small numbers keep the figures messages small.
        """
        return {
            "first": self.first,
            "producers": {
                str(pid): {
                    "next": p.next,
                    "gaps": _delta_gaps(p.gaps),
                    "received": p.received,
                    "duplicates": p.duplicates,
                    "out_of_order": p.out_of_order,
                }
                for pid, p in self.producers.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SequenceTracker:
        """Rebuild a tracker from `to_dict`'s form.

        Args:
            data: what `to_dict` returned.

        Returns:
            An equal tracker.

        Raises:
            ValueError: the data is not a tracker's form.
        """
        try:
            tracker = cls(int(data["first"]))  # type: ignore[call-overload]
            producers: dict[str, dict[str, object]] = data["producers"]  # type: ignore[assignment]
            for pid, p in producers.items():
                tracker.producers[int(pid)] = ProducerSequence(
                    next=int(p["next"]),  # type: ignore[call-overload]
                    gaps=_undelta_gaps(p["gaps"]),
                    received=int(p["received"]),  # type: ignore[call-overload]
                    duplicates=int(p["duplicates"]),  # type: ignore[call-overload]
                    out_of_order=int(p["out_of_order"]),  # type: ignore[call-overload]
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a sequence tracker: {exc}") from None
        return tracker

    def merge(self, other: SequenceTracker) -> None:
        """Add what another tracker of the same queue saw (other consumers of it, elsewhere).

        The received numbers are united, not added: a number both saw is a duplicate
        (the queue delivered it twice), a gap of one the other filled is no loss.
        Counters of received, duplicates and out of order add up.

        Args:
            other: a tracker of the same queue with the same `first` (left unchanged).

        Raises:
            ValueError: the trackers number from different `first` values.
        """
        if other.first != self.first:
            raise ValueError(f"trackers start at {self.first} and {other.first}: not one run")
        for pid, theirs in other.producers.items():
            mine = self.producers.get(pid)
            if mine is None:
                self.producers[pid] = ProducerSequence(
                    theirs.next,
                    [list(g) for g in theirs.gaps],
                    theirs.received,
                    theirs.duplicates,
                    theirs.out_of_order,
                )
                continue
            a = _received_ranges(self.first, mine)
            b = _received_ranges(self.first, theirs)
            both = _overlap(a, b)
            top = max(mine.next, theirs.next)
            mine.gaps = _complement(self.first, top, _union(a, b))
            mine.next = top
            mine.received += theirs.received
            mine.duplicates += theirs.duplicates + both
            mine.out_of_order += theirs.out_of_order


def _received_ranges(first: int, state: ProducerSequence) -> list[tuple[int, int]]:
    """The [start, end) ranges of numbers received: [first, next) without the gaps."""
    out = []
    at = first
    for start, end in state.gaps:
        if start > at:
            out.append((at, start))
        at = end
    if state.next > at:
        out.append((at, state.next))
    return out


def _union(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(a + b):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """How many numbers both sorted, disjoint range lists hold."""
    total, i, j = 0, 0, 0
    while i < len(a) and j < len(b):
        low, high = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if high > low:
            total += high - low
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def _complement(first: int, top: int, ranges: list[tuple[int, int]]) -> list[list[int]]:
    """The gaps: [first, top) without the (sorted, disjoint) received ranges."""
    gaps = []
    at = first
    for start, end in ranges:
        if start > at:
            gaps.append([at, start])
        at = max(at, end)
    if top > at:
        gaps.append([at, top])
    return gaps


class OrderCheck:
    """One consumer's order check: messages arriving after a higher number of their producer.

    Attributes:
        out_of_order: such messages so far.
    """

    __slots__ = ("last", "out_of_order")

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.out_of_order = 0

    def observe(self, producer: int, sequence: int) -> None:
        """Check one received message.

        Args:
            producer: the producer's id.
            sequence: the message's sequence number.
        """
        last = self.last.get(producer)
        if last is not None and sequence <= last:
            self.out_of_order += 1
        else:
            self.last[producer] = sequence
