"""Differential fuzzing of the frame reader: compiled twin vs pure-Python twin.

    python -m bench.micro.fuzz_frames --minutes 3

Feeds both twins the same random, corrupted and truncated AMQP streams, cut at random
places, and fails on the first difference: both must return equal records or both must
raise FrameError with the same message. Never a crash, never another exception type.
Prints the number of streams tried; the issue note quotes it.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time

from munggoggo._speedups import _frames_py

try:
    from munggoggo._speedups import _frames
except ImportError:  # pragma: no cover
    sys.exit("the compiled _frames twin is not built")


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def sstr(text: bytes) -> bytes:
    return bytes((len(text),)) + text


def valid_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 8)):
        ch = rng.randint(1, 3)
        kind = rng.random()
        if kind < 0.6:
            body = rng.randbytes(rng.choice([0, 1, 10, 100, 5000]))
            method = b"\x00\x3c\x00\x3c" + sstr(b"ctag") + struct.pack(">QB", rng.randint(1, 9), 0)
            method += sstr(b"ex") + sstr(rng.choice([b"a.b", b"c", b""]))
            props = _frames_py.encode_properties(
                _frames_py.Properties(
                    content_type=rng.choice([None, "text/plain"]),
                    headers=rng.choice([None, {"a": 1, "b": [1, "x"], "c": {"d": None}}]),
                    timestamp=rng.choice([None, 1700000000]),
                    app_id=rng.choice([None, "agent"]),
                )
            )
            header = struct.pack(">HHQ", 60, 0, len(body)) + props
            parts.append(frame(1, ch, method) + frame(2, ch, header))
            for i in range(0, len(body), 4088):
                parts.append(frame(3, ch, body[i : i + 4088]))
        elif kind < 0.8:
            parts.append(
                frame(1, ch, b"\x00\x3c\x00\x50" + struct.pack(">QB", rng.randint(1, 99), 1))
            )
        elif kind < 0.9:
            parts.append(frame(8, 0, b""))
        else:
            parts.append(
                frame(1, ch, b"\x00\x32\x00\x0b" + sstr(b"q") + b"\x00\x00\x00\x01\x00\x00\x00\x00")
            )
    return b"".join(parts)


def corrupt(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(0, 4)):
        if not data:
            break
        action = rng.random()
        pos = rng.randrange(len(data))
        if action < 0.5:
            data[pos] = rng.randrange(256)
        elif action < 0.75:
            del data[pos : pos + rng.randint(1, 8)]
        else:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
    return bytes(data)


def run(impl, chunks: list[bytes]):
    reader = impl.FrameReader(8192)
    out = []
    try:
        for chunk in chunks:
            out.extend(normalize(r) for r in reader.feed(chunk))
    except impl.FrameError as exc:
        return out, ("FrameError", str(exc))
    return out, None


def normalize(record):
    if isinstance(record, tuple):
        return record
    props = record.properties
    return (
        record.channel,
        record.kind,
        record.consumer_tag,
        record.delivery_tag,
        record.redelivered,
        record.exchange,
        record.routing_key,
        record.reply_code,
        record.reply_text,
        record.message_count,
        record.body,
        tuple(getattr(props, n) for n in _frames_py.PROPERTY_NAMES) if props else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    deadline = time.monotonic() + args.minutes * 60
    tried = errors = 0
    while time.monotonic() < deadline:
        data = valid_stream(rng)
        if rng.random() < 0.7:
            data = corrupt(rng, data)
        if rng.random() < 0.05:
            data = rng.randbytes(rng.randint(0, 200))
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 4)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        py, compiled = run(_frames_py, chunks), run(_frames, chunks)
        if py != compiled:
            print(f"MISMATCH (seed {seed}, stream {tried}): {data!r}\npy={py}\nc={compiled}")
            sys.exit(1)
        tried += 1
        errors += py[1] is not None
    print(
        f"{tried} streams, {errors} rejected with FrameError by both twins, "
        f"0 differences (seed {seed})"
    )


if __name__ == "__main__":
    main()
