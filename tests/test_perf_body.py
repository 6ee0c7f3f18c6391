"""munggoggo.perf_body: PerfTest's body layout, timestamp units, omq's identity headers."""

from __future__ import annotations

import struct
import time

import pytest

from munggoggo._speedups import Properties, encode_properties
from munggoggo.perf_body import (
    HEADER_PUBLISHER_ID,
    HEADER_SEQUENCE,
    MIN_SIZE,
    PropertiesTemplate,
    make_body,
    read_body,
    read_identity,
    sent_at_ns,
)

NOW_NS = 1_780_000_000 * 1_000_000_000  # 2026, epoch nanoseconds


def test_body_layout_is_int32_sequence_int64_timestamp_then_zeros():
    body = make_body(0x01020304, 20, timestamp_ns=0x1112131415161718)
    assert body == bytes.fromhex("010203041112131415161718") + bytes(8)


@pytest.mark.parametrize("size", [0, 5, 12])
def test_body_is_twelve_bytes_at_least(size):
    assert len(make_body(1, size, timestamp_ns=NOW_NS)) == MIN_SIZE


def test_sequence_wraps_like_a_java_int():
    body = make_body(2**31, 12, timestamp_ns=NOW_NS)
    assert body[:4] == b"\x80\x00\x00\x00"
    assert read_body(body, NOW_NS).sequence == -(2**31)


def test_our_body_reads_back():
    info = read_body(make_body(42, 100, timestamp_ns=NOW_NS), NOW_NS + 5_000)
    assert (info.sequence, info.sent_ns) == (42, NOW_NS)


def test_perftest_use_millis_body_reads_as_epoch_milliseconds():
    # What TimeSequenceMessageBodySource writes with --use-millis: writeInt, writeLong(ms).
    millis = NOW_NS // 1_000_000
    body = struct.pack(">iq", 7, millis) + bytes(88)
    info = read_body(body, NOW_NS + 3_000_000)
    assert (info.sequence, info.sent_ns) == (7, millis * 1_000_000)


def test_omq_nanosecond_body_reads_as_epoch_nanoseconds():
    # omq writes 1234 where PerfTest has the sequence, then UnixNano.
    body = struct.pack(">iq", 1234, NOW_NS - 10_000)
    assert read_body(body, NOW_NS).sent_ns == NOW_NS - 10_000


def test_perftest_default_nanotime_is_not_taken_for_a_timestamp():
    # System.nanoTime(): nanoseconds since some boot, days of uptime, no epoch.
    uptime_ns = 12 * 86_400 * 1_000_000_000
    assert read_body(struct.pack(">iq", 1, uptime_ns), NOW_NS).sent_ns is None
    assert sent_at_ns(-5, NOW_NS) is None


def test_short_body_has_nothing_to_read():
    assert read_body(b"12345678901") is None


def test_read_body_defaults_to_the_clock_now():
    assert read_body(make_body(1, 12)).sent_ns <= time.time_ns()


def test_identity_headers_are_omqs():
    assert read_identity({HEADER_PUBLISHER_ID: 3, HEADER_SEQUENCE: 99}) == (3, 99)
    assert read_identity({"x-omq-publisher-id": 3}) is None
    assert read_identity({HEADER_PUBLISHER_ID: "3", HEADER_SEQUENCE: 1}) is None
    assert read_identity({HEADER_PUBLISHER_ID: True, HEADER_SEQUENCE: 1}) is None
    assert read_identity(None) is None


@pytest.mark.parametrize("persistent", [False, True])
def test_properties_template_patches_the_sequence_only(persistent):
    # Above int32, the encoder writes an int64 ('l') too: byte for byte the same table.
    template = PropertiesTemplate(5, persistent=persistent)
    for seq in (2**40, 2**63 - 1):
        props = Properties(
            content_type="application/octet-stream",
            delivery_mode=2 if persistent else None,
            headers={HEADER_PUBLISHER_ID: 5, HEADER_SEQUENCE: seq},
        )
        assert template.encode(seq) == encode_properties(props)
    zero, one = template.encode(0), template.encode(1)
    assert len(zero) == len(one)
    assert [i for i in range(len(zero)) if zero[i] != one[i]] == [len(zero) - 1 - tail(template)]


def tail(template):
    """Bytes after x-omq-seq's value in the encoded properties (0: it is the last field)."""
    encoded = template.encode(0x0102030405060708)
    return len(encoded) - encoded.index(bytes(range(1, 9))) - 8
