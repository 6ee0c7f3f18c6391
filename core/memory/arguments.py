"""Declare arguments as RabbitMQ checks them: their validation and redeclare equivalence.

RabbitMQ compares a redeclare's properties and checked arguments with the existing
queue's or exchange's as (type, value) pairs, where the type is the field-table type the
real client's encoder (pamqp) picks, and quotes both in its PRECONDITION_FAILED text.
`validate_queue_args` refuses the first invalid `x-` argument of a queue declare, in
RabbitMQ's order and with its text; anything else is stored and never compared.
"""

from __future__ import annotations

import datetime
import decimal
from typing import Any

from ..amqp.errors import BrokerError
from ..wire import MAX_TTL_MS
from .errors import QUEUE_DECLARE, error, rs, transient_nonexclusive

MAX_EXPIRY = MAX_TTL_MS  # RabbitMQ's ceiling for TTLs and x-expires
MAX_PRIORITY = 255

# --------------------------------------------------------------------------- field types


def amqp_type(value: Any) -> str:
    """The field-table type RabbitMQ names for a value the real client would encode.

    Declare arguments go through pamqp, which picks the smallest integer type; RabbitMQ
    compares (type, value) pairs and quotes the type in its errors.
    """
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if -128 <= value <= 127:
            return "byte"
        if -32768 <= value <= 32767:
            return "short"
        if 0 <= value <= 65535:
            return "unsignedshort"
        if -(2**31) <= value < 2**31:
            return "signedint"
        if 0 <= value < 2**32:
            return "unsignedint"
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "longstr"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, bytes | bytearray):
        return "binary"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, datetime.datetime):
        return "timestamp"
    return "void"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def equivalent(current: Any, received: Any) -> bool:
    return amqp_type(current) == amqp_type(received) and current == received


def inequivalent(kind: str, name: str, key: str, received: Any, current: Any) -> str:
    """The text of RabbitMQ's PRECONDITION_FAILED for a redeclare that differs."""
    where = f"inequivalent arg '{key}' for {rs(kind, name)}"
    if received is None:
        return (
            f"{where}: received none but current is the value '{_show(current)}' "
            f"of type '{amqp_type(current)}'"
        )
    if current is None:
        return (
            f"{where}: received the value '{_show(received)}' of type "
            f"'{amqp_type(received)}' but current is none"
        )
    return f"{where}: received '{_show(received)}' but current is '{_show(current)}'"


# --------------------------------------------------------------------------- queue arguments

# The arguments RabbitMQ validates on declare and compares on redeclare, in its order.
# Anything else (including application keys) is stored and never compared.
QUEUE_ARGS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-queue-version",
)
OVERFLOW = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")
_INT_ARGS = {
    # key: (lowest allowed, highest allowed)
    "x-expires": (1, MAX_EXPIRY),
    "x-message-ttl": (0, MAX_EXPIRY),
    "x-max-length": (0, None),
    "x-max-length-bytes": (0, None),
    "x-max-in-memory-length": (0, None),
    "x-max-in-memory-bytes": (0, None),
    "x-max-priority": (0, MAX_PRIORITY),
}
# What RabbitMQ calls a value above the ceiling.
_TOO_LARGE = {"x-max-priority": "max_value_exceeded"}
# Arguments a replicated queue type refuses whatever their value, checked first.
_UNSUPPORTED = {"quorum": ("x-max-priority",), "stream": ("x-max-priority",)}


def _int_arg_problem(key: str, value: Any, low: int, high: int | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f'"expected integer, got {amqp_type(value)}"'
    if value < 0:
        return f"{{value_negative,{value}}}"
    if value < low:
        return f"{{value_zero,{value}}}"
    if high is not None and value > high:
        return f"{{{_TOO_LARGE.get(key, 'value_too_large')},{value}}}"
    return None


def validate_queue_args(
    name: str,
    args: dict[str, Any],
    exclusive: bool,
    durable: bool = True,
    auto_delete: bool = False,
) -> None:
    """Raise RabbitMQ's PRECONDITION_FAILED for the first invalid declare argument (or
    queue property a replicated queue type cannot have)."""

    def invalid(key: str, problem: str) -> BrokerError:
        return error(
            "PRECONDITION_FAILED", f"invalid arg '{key}' for {rs('queue', name)}: {problem}",
            QUEUE_DECLARE,
        )  # fmt: skip

    queue_type = args.get("x-queue-type")
    for key in _UNSUPPORTED.get(queue_type, ()) if isinstance(queue_type, str) else ():
        if key in args:
            raise error(
                "PRECONDITION_FAILED",
                f"invalid arg '{key}' for {rs('queue', name)} of queue type "
                f"rabbit_{queue_type}_queue",
                QUEUE_DECLARE,
            )
    for key in QUEUE_ARGS:
        if key not in args:
            continue
        value = args[key]
        if key in _INT_ARGS:
            problem = _int_arg_problem(key, value, *_INT_ARGS[key])
            if problem:
                raise invalid(key, problem)
        elif key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
            if not isinstance(value, str):
                raise error(
                    "PRECONDITION_FAILED",
                    f"invalid type '{amqp_type(value)}' for arg '{key}' in {rs('queue', name)}",
                    QUEUE_DECLARE,
                )
            if key == "x-dead-letter-routing-key" and "x-dead-letter-exchange" not in args:
                raise invalid(key, "routing_key_but_no_dlx_defined")
        elif key == "x-overflow":
            if not isinstance(value, str):
                raise invalid(key, f"{{unacceptable_type,{amqp_type(value)}}}")
            if value not in OVERFLOW:
                raise invalid(key, "invalid_overflow")
        elif key == "x-queue-type":
            if value not in QUEUE_TYPES:
                raise invalid(key, f"\"unsupported queue type '{_show(value)}'\"")
            # Quorum and stream queues are replicated: never exclusive, transient or
            # auto-deleted (RabbitMQ checks in this order).
            replicated = value != "classic"
            for bad, prop in (
                (exclusive, "exclusive-owner"),
                (not durable, "non-durable"),
                (auto_delete, "auto-delete"),
            ):
                if replicated and bad:
                    if prop == "non-durable" and not exclusive:
                        raise transient_nonexclusive(name)  # RabbitMQ 4.3 says this first
                    raise error(
                        "PRECONDITION_FAILED",
                        f"invalid property '{prop}' for {rs('queue', name)}",
                        QUEUE_DECLARE,
                    )


def queue_args_difference(
    name: str, current: dict[str, Any], received: dict[str, Any]
) -> str | None:
    """The inequivalence text for the first checked argument that differs, else None."""
    for key in QUEUE_ARGS:
        have, want = current.get(key), received.get(key)
        if have is None and want is None:
            continue
        if have is None or want is None or not equivalent(have, want):
            return inequivalent("queue", name, key, want, have)
    return None
