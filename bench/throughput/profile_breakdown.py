"""Where the client's CPU goes per message: a py-spy profile sorted into the pipe's stages.

Record the `agent` scenario with native frames (`pip install py-spy` into the venv), then
sort its samples (docs/performance.md, "Client CPU per message"):

    .venv/bin/py-spy record --native -r 500 --format raw -o agent.txt -- \\
        .venv/bin/python -m bench throughput --scenario agent --messages 300000
    .venv/bin/python -m bench.throughput.profile_breakdown agent.txt --cpu-us 13.16

Each sample is walked from its innermost frame outwards; the first frame that names a stage
decides it (so msgspec called from `decode_body` is decoding, from `encode_body`
publishing; a send() syscall under the loop is the transport's write). Samples of imports
and of connection setup are left out. `--cpu-us` (the scenario's `cpu_us_per_msg` measured
without the profiler) turns the shares into microseconds per message; samples waiting in
epoll_pwait count as idle and get no share.

The rules know the code of this repository by function and file names: when one moves, a
stage's share moves to `other` and this script needs its rule updated.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

# (stage, alternatives): a frame is "function (file:line)" or "symbol (library)". Per frame
# the stages are tried in this order; the innermost frame that matches any stage wins.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("kernel: socket writes (send syscall)", (r"^write \(libc", r"^UVStream__try_write")),
    ("kernel: socket reads (recv syscall)", (r"^read \(libc", r"^uv__read ")),
    ("epoll_pwait (waiting, mostly idle)", (r"^epoll_pwait",)),
    ("tracing (trace ring)", (r"TraceStore\.record_", r"^adopt ", r"outgoing_headers")),
    ("metrics (counters, step timer)", (r"FastHistogram\.observe", r"^Stats\.count")),
    ("msgspec decode into the Struct", (r"decode_body", r"Message\.decode", r"Struct_dealloc")),
    (
        "publish: encode body + properties",
        (r"encode_body", r"Publisher\._encode", r"Publisher\._properties", r"_classify "),
    ),
    (
        "publish: confirms bookkeeping",
        (r"^settle ", r"ConfirmTracker", r"handle_confirms", r"_flush_settled", r"_wake_confirm"),
    ),
    (
        "publish: frames + channel",
        (r"pack_publish", r"AMQPConnection\.publish", r"Channel\.publish", r"Channel\.writable"),
    ),
    (
        "publish: emit_message + Reading() + loop",
        (r"Publish\.run", r"Publisher\.emit_message", r"PublishSurface\.publish"),
    ),
    (
        "acking (coalesced acks)",
        (r"ack_later", r"emit_acks", r"_settle_inflight", r"pack_ack", r"AckTracker", r"\.ack "),
    ),
    ("Message construction (consumer callback)", (r"on_batch", r"Message\.__init__")),
    (
        "routing to the behaviour (dispatch)",
        (r"ConnectionDispatch\._d", r"handle_deliveries", r"reject_undecodable"),
    ),
    (
        "frame parsing + Delivery records (_frames)",
        (
            r"^feed ",
            r"FrameReader",
            r"_PropsDecoder",
            r"_new_delivery",
            r"receive_data",
            r"stream_data",
        ),
    ),
    (
        "mailbox hand-off, step loop, task switches",
        (
            r"Behaviour\.(receive|deliver_batch|_loop|_step|_main|_pace_idle)",
            r"Receive\.run",
            r"Message\.delivery",
            r"task_step|task_wakeup|TaskStep|future_|FutureObj|^sleep ",
        ),
    ),
    ("garbage collector", (r"gc_collect",)),
    (
        "event loop: flush + transport.write",
        (r"Connection\._flush", r"schedule_flush", r"data_to_send", r"AMQPStream\.write"),
    ),
    ("event loop: uvloop itself", (r"uvloop|UVStream|Handle|Loop__|^uv_|^uv__|loop\.c",)),
]
COMPILED = [(stage, re.compile("|".join(alts))) for stage, alts in RULES]
IDLE = "epoll_pwait"
SKIP = re.compile(r"_find_and_load|_call_with_frames_removed|Agent\.start|create_connection")


def classify(frames: list[str]) -> str | None:
    """The stage of one sample (frames outermost first); None for setup samples."""
    for frame in frames:
        if SKIP.search(frame):
            return None
    for frame in reversed(frames):
        for stage, pattern in COMPILED:
            if pattern.search(frame):
                return stage
    return "other (interpreter, GC, unmatched)"


def breakdown(path: str) -> tuple[Counter[str], int]:
    """Samples per stage in a py-spy `--format raw` file, and the samples left out."""
    stages: Counter[str] = Counter()
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            stage = classify(stack.split(";"))
            if stage is None:
                skipped += int(count)
            else:
                stages[stage] += int(count)
    return stages, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="py-spy record --native --format raw output")
    parser.add_argument("--cpu-us", type=float, default=None, help="measured cpu_us_per_msg")
    args = parser.parse_args(argv)
    stages, skipped = breakdown(args.profile)
    total = sum(stages.values())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    # A sample in epoll_pwait is mostly the thread blocked, not CPU: it gets no share.
    busy = total - sum(n for stage, n in stages.items() if stage.startswith(IDLE))
    print(f"{total} samples, {busy} busy ({skipped} of setup left out)")
    for stage, n in stages.most_common():
        if stage.startswith(IDLE):
            print(f"   --  {'':9}  {stage}: {n} samples")
            continue
        share = n / busy
        us = f"{share * args.cpu_us:6.2f} us" if args.cpu_us else ""
        print(f"{share * 100:5.1f}%  {us}  {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
