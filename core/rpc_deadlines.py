"""RPC deadlines: a call's request carries when its caller stops waiting.

`call(..., timeout=t)` sends its request with two marks of the same deadline: the AMQP
`expiration` property (the remaining milliseconds: the broker drops the request if it is
still queued when they run out) and the `x-munggoggo-deadline` header (the absolute
deadline, integer milliseconds since the epoch: what the callee checks). The broker's
expiration only applies to a message still in the queue; a request already delivered
(held in the consumer's prefetch, or waiting for a free slot under
`AgentConfig.max_concurrent_calls`) is checked by the callee right before it would start
the method: past its deadline it is not started, and the caller, if it still waits (its
clock behind the callee's), gets -32002 at once.
"""

from __future__ import annotations

import math
import struct
import time
from typing import Any

from .wire import DEADLINE_HEADER, MAX_TTL_MS

__all__ = [
    "DEADLINE_HEADER",
    "deadline_marks",
    "deadline_passed",
    "deadline_table",
    "request_deadline",
]

# The encoded header table {DEADLINE_HEADER: <signed 64-bit>} up to its value: the table
# length (4 bytes), the key as a short string, the value's type `l`.
_KEY = DEADLINE_HEADER.encode()
_TABLE_PREFIX = struct.pack(">IB", 1 + len(_KEY) + 1 + 8, len(_KEY)) + _KEY + b"l"
_I64 = struct.Struct(">q")


def deadline_marks(timeout: float, now: float | None = None) -> tuple[str | None, int | None]:
    """The two marks of a call's deadline, `timeout` seconds from now.

    Args:
        timeout: seconds the caller waits for the reply (`math.inf`: no deadline).
        now: the current time in epoch seconds (default `time.time()`).

    Returns:
        The AMQP `expiration` (milliseconds as a decimal string, at least 1: 0 would make
        the broker drop a request nobody consumes at once; None past RabbitMQ's ceiling for
        a message TTL, which it would refuse by closing the channel) and the
        `x-munggoggo-deadline` header's value (epoch milliseconds); (None, None) for an
        infinite timeout.

    Raises:
        ValueError: a timeout that is NaN, zero or negative.
    """
    if not timeout > 0:
        raise ValueError(f"an RPC timeout is a number of seconds above 0, got {timeout!r}")
    if math.isinf(timeout):
        return None, None
    if now is None:
        now = time.time()
    remaining_ms = max(1, math.ceil(timeout * 1000))
    expiration = str(remaining_ms) if remaining_ms <= MAX_TTL_MS else None
    return expiration, int(now * 1000) + remaining_ms


def deadline_table(deadline: int) -> bytes | None:
    """The encoded header table `{DEADLINE_HEADER: deadline}`, as the general table
    encoder writes it (a request's properties are spliced from it: see
    core/rpc_client.py).

    Args:
        deadline: the deadline in epoch milliseconds (as `deadline_marks` gives it).

    Returns:
        The table, length prefix included; None for a value below 2**31 (never from a
        real clock), which the general encoder writes in another type.
    """
    if deadline < 1 << 31:
        return None
    return _TABLE_PREFIX + _I64.pack(deadline)


def request_deadline(headers: dict[str, Any] | None) -> float | None:
    """The deadline a request carries, in epoch seconds.

    Args:
        headers: the request's AMQP headers (None: none).

    Returns:
        The deadline, or None when there is none (or it is no number: a plain AMQP
        caller's header of another meaning is ignored, not refused).
    """
    if not headers:
        return None
    value = headers.get(DEADLINE_HEADER)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value / 1000


def deadline_passed(headers: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a request's deadline has passed: then its method must not start.

    Args:
        headers: the request's AMQP headers.
        now: the current time in epoch seconds (default `time.time()`).

    Returns:
        True when it carries a deadline that is over; False otherwise (none given too).
    """
    deadline = request_deadline(headers)
    if deadline is None:
        return False
    return (time.time() if now is None else now) >= deadline
