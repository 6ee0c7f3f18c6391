"""Dead-lettering's bookkeeping: the x-death headers and RabbitMQ's cycle rule.

When a queue dead-letters a message (rejected without requeue, expired, or dropped by
x-max-length), RabbitMQ records it in the message's `x-death` array and sets the
`x-first-death-*` headers once; a copy that would die again in a queue it already died in
is dropped unless a client rejection is part of the loop. The broker (broker.py) routes
the copy; this module only computes its headers.
"""

from __future__ import annotations

from typing import Any


def add_death(
    headers: dict[str, Any] | None,
    *,
    reason: str,
    queue: str,
    exchange: str,
    routing_keys: list[str],
    expiration: str | None,
    now: int,
) -> dict[str, Any]:
    """Headers of a dead-lettered message, x-death updated the way RabbitMQ 3.10 does.

    A death in the same queue for the same reason bumps that entry's count and moves it
    to the front; otherwise a new entry goes first. x-first-death-* are set once.
    """
    out = dict(headers) if headers else {}
    old = out.get("x-death")
    deaths = [dict(d) if isinstance(d, dict) else d for d in old] if isinstance(old, list) else []
    for i, death in enumerate(deaths):
        if (
            isinstance(death, dict)
            and death.get("queue") == queue
            and death.get("reason") == reason
        ):
            death["count"] = (death.get("count") or 0) + 1
            deaths.insert(0, deaths.pop(i))
            break
    else:
        entry: dict[str, Any] = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": now,
            "exchange": exchange,
            "routing-keys": list(routing_keys),
        }
        if expiration is not None:
            entry["original-expiration"] = expiration
        deaths.insert(0, entry)
    out["x-death"] = deaths
    out.setdefault("x-first-death-exchange", exchange)
    out.setdefault("x-first-death-queue", queue)
    out.setdefault("x-first-death-reason", reason)
    return out


def is_cycle(queue: str, deaths: list[Any]) -> bool:
    """RabbitMQ's cycle rule: dead-lettering back into a queue the message already died in
    is dropped, unless a client rejection is part of the loop (then it is deliberate)."""
    for i, death in enumerate(deaths):
        if isinstance(death, dict) and death.get("queue") == queue:
            return all(
                isinstance(d, dict) and d.get("reason") != "rejected" for d in deaths[: i + 1]
            )
    return False
