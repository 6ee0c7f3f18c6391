"""W3C trace context (`traceparent`) carried through messages and RPC.

A trace crosses the mesh as the `traceparent` header of each message (gateway -> agent ->
agent). Inside an agent the current one lives in a context variable: receiving a message
(or serving an RPC request) that carries one makes it current for that step or call, and
everything published meanwhile carries a child: same trace id, a new parent (span) id.
No trace current means no header and no cost.

`hooks` is where an optional tracer plugs in (`munggoggo.otel.instrument()`): with it, each
hop is a real span (producer, consumer, server) and the traceparent a message carries names
the span that sent it, so a tracing backend can join the hops. Without it, nothing here
touches more than a context variable.
"""

from __future__ import annotations

import contextvars
import os
import re
from typing import Any

HEADER = "traceparent"
TRACEPARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "munggoggo_traceparent", default=None
)
_VALID = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def is_valid(traceparent: object) -> bool:
    """A well-formed version-00 traceparent with non-zero trace and parent ids."""
    if not isinstance(traceparent, str):
        return False
    match = _VALID.match(traceparent)
    if match is None or traceparent.startswith("ff"):
        return False
    return match.group(1) != "0" * 32 and match.group(2) != "0" * 16


def new_traceparent(sampled: bool = True) -> str:
    """Start a new trace."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-{'01' if sampled else '00'}"


def child_of(traceparent: str) -> str:
    """The same trace, a new parent id: what an outgoing message carries."""
    return f"00-{traceparent[3:35]}-{os.urandom(8).hex()}-{traceparent[-2:]}"


def trace_id(traceparent: str) -> str:
    return traceparent[3:35]


# The tracer's hooks (munggoggo/otel.py's `_Hooks`), or None: no tracer, no spans.
hooks: Any = None


def outgoing_headers(
    headers: dict[str, Any] | None,
    kind: str = "message",
    destination: str = "",
    operation: str = "",
) -> dict[str, Any] | None:
    """`headers` plus a child traceparent when a trace is current (else unchanged).
    `kind`, `destination` and `operation` only name the span a tracer records."""
    tracer = hooks
    if tracer is not None:
        child = tracer.producer(TRACEPARENT.get(), kind, destination, operation)
    else:
        current = TRACEPARENT.get()
        child = None if current is None else child_of(current)
    if child is None:
        return headers
    merged = dict(headers) if headers else {}
    merged.setdefault(HEADER, child)
    return merged


def adopt(headers: dict[str, Any] | None) -> None:
    """Make the traceparent of an incoming message current (or clear it)."""
    value = headers.get(HEADER) if headers else None
    TRACEPARENT.set(value if is_valid(value) else None)
