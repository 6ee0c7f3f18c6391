"""Message bodies and headers of `munggoggo bench`, compatible with PerfTest and omq.

The body layout is PerfTest's (TimeSequenceMessageBodySource): a big-endian int32
sequence number, then a big-endian int64 timestamp, zero-padded to the requested size
(12 bytes at least). We write the timestamp as epoch nanoseconds; reading accepts epoch
nanoseconds (ours, omq's default) and epoch milliseconds (PerfTest `--use-millis`, omq
`--use-millis`), told apart by magnitude as omq does. PerfTest's default timestamp is
`System.nanoTime()`, which has no epoch: such a value is not plausible as either unit and
reads as "no timestamp" rather than as a nonsense latency (see docs/decisions.md).

The producer's identity travels in omq's headers, `x-omq-publisher-id` (int) and
`x-omq-seq` (int64), so omq consumers can check our order and gaps and we can check
theirs. Our own runs also carry `x-munggoggo-bench-run`, the run's id, so a consumer tells
the messages of its run from those an earlier run left in the same queue (`read_run`).
The encoded properties are built once per producer (`PropertiesTemplate`): only
the 8 bytes of the sequence number change per message.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

from ._speedups import Properties, encode_properties

__all__ = [
    "HEADER_PUBLISHER_ID",
    "HEADER_RUN",
    "HEADER_SEQUENCE",
    "MIN_SIZE",
    "BodyInfo",
    "PropertiesTemplate",
    "make_body",
    "read_body",
    "read_identity",
    "read_run",
    "sent_at_ns",
]

MIN_SIZE = 12  # int32 sequence + int64 timestamp
HEADER_PUBLISHER_ID = "x-omq-publisher-id"
HEADER_SEQUENCE = "x-omq-seq"
HEADER_RUN = "x-munggoggo-bench-run"

_HEAD = struct.Struct(">iq")
_SEQ = struct.Struct(">q")
# omq's cut-off between milliseconds and nanoseconds (2100-01-01 in epoch milliseconds).
_MILLIS_BELOW = 4_102_441_200_000
# A timestamp further than this from our clock is not an epoch timestamp (PerfTest's
# default System.nanoTime(), a clock of another machine gone wild): no latency from it.
_PLAUSIBLE_NS = 86_400 * 1_000_000_000
# int64 placeholder for x-omq-seq: its 8 bytes are found in the encoded properties once.
_SENTINEL = 0x5EC0_1D5E_C01D_5EC0


def make_body(sequence: int, size: int, timestamp_ns: int | None = None) -> bytes:
    """One PerfTest-layout body.

    Args:
        sequence: the producer's sequence number; written as int32, wrapping like
            PerfTest's Java int.
        size: the body size in bytes; below 12 the body is 12 bytes anyway.
        timestamp_ns: epoch nanoseconds to write (default: now).

    Returns:
        int32 sequence, int64 epoch nanoseconds, zeros up to `size`.
    """
    if timestamp_ns is None:
        timestamp_ns = time.time_ns()
    seq32 = ((sequence + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000
    head = _HEAD.pack(seq32, timestamp_ns)
    return head + bytes(size - MIN_SIZE) if size > MIN_SIZE else head


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What a received body says.

    Attributes:
        sequence: the int32 sequence number in its first 4 bytes (omq writes a constant
            there: prefer the `x-omq-seq` header when present).
        sent_ns: when it was sent, epoch nanoseconds, or None (body too short, or the
            timestamp is not an epoch timestamp in ns or ms).
    """

    sequence: int
    sent_ns: int | None


def sent_at_ns(raw: int, now_ns: int) -> int | None:
    """Interpret a body's int64 timestamp as epoch nanoseconds.

    Args:
        raw: the int64 read from the body.
        now_ns: our clock, epoch nanoseconds (plausibility check).

    Returns:
        Epoch nanoseconds, or None when the value is neither epoch milliseconds nor epoch
        nanoseconds within a day of `now_ns` (PerfTest's default nanoTime, say).
    """
    ns = raw * 1_000_000 if 0 < raw < _MILLIS_BELOW else raw
    if abs(now_ns - ns) > _PLAUSIBLE_NS:
        return None
    return ns


def read_body(body: bytes, now_ns: int | None = None) -> BodyInfo | None:
    """Read the sequence and timestamp of a PerfTest-layout body.

    Args:
        body: the message body.
        now_ns: our clock in epoch nanoseconds (default: now).

    Returns:
        The body's sequence and send time, or None when it is shorter than 12 bytes.
    """
    if len(body) < MIN_SIZE:
        return None
    sequence, raw = _HEAD.unpack_from(body)
    return BodyInfo(sequence, sent_at_ns(raw, time.time_ns() if now_ns is None else now_ns))


def read_identity(headers: dict[str, Any] | None) -> tuple[int, int] | None:
    """The (publisher id, sequence) omq's headers carry, if both are there and integers.

    Args:
        headers: the message's header table (or None).

    Returns:
        (publisher id, sequence), or None.
    """
    if not headers:
        return None
    pid = headers.get(HEADER_PUBLISHER_ID)
    seq = headers.get(HEADER_SEQUENCE)
    # bool is an int to Python, not to a header table: refuse it.
    if type(pid) is int and type(seq) is int:
        return pid, seq
    return None


def read_run(headers: dict[str, Any] | None) -> str | None:
    """The bench run id a message carries (`x-munggoggo-bench-run`), if any.

    Args:
        headers: the message's header table (or None).

    Returns:
        The run id, or None (a PerfTest or omq publisher, say).
    """
    if not headers:
        return None
    run = headers.get(HEADER_RUN)
    if isinstance(run, bytes):
        return run.decode("utf-8", "replace")
    return run if isinstance(run, str) else None


class PropertiesTemplate:
    """A producer's encoded properties with the `x-omq-seq` slot patched per message.

    Args:
        publisher_id: the producer's id (`x-omq-publisher-id`).
        persistent: delivery_mode 2 when True.
        run: the run's id (`x-munggoggo-bench-run`), or None for no such header.

    Attributes:
        publisher_id: the producer's id.
    """

    __slots__ = ("_prefix", "_suffix", "publisher_id")

    def __init__(
        self, publisher_id: int, *, persistent: bool = False, run: str | None = None
    ) -> None:
        self.publisher_id = publisher_id
        headers: dict[str, Any] = {HEADER_PUBLISHER_ID: publisher_id, HEADER_SEQUENCE: _SENTINEL}
        if run:
            headers[HEADER_RUN] = run
        props = Properties(
            content_type="application/octet-stream",
            delivery_mode=2 if persistent else None,
            headers=headers,
        )
        encoded = encode_properties(props)
        marker = b"l" + _SEQ.pack(_SENTINEL)
        at = encoded.find(marker)
        if at < 0 or encoded.find(marker, at + 1) >= 0:
            raise RuntimeError("x-omq-seq is not encoded as one int64 field")
        self._prefix = encoded[: at + 1]
        self._suffix = encoded[at + 1 + _SEQ.size :]

    def encode(self, sequence: int) -> bytes:
        """The encoded properties for message `sequence` of this producer.

        Args:
            sequence: the producer's sequence number (int64).

        Returns:
            Encoded properties, ready for `Channel.publish`.
        """
        return self._prefix + _SEQ.pack(sequence) + self._suffix
