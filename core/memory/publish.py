"""What the memory:// broker checks and derives from a publish's properties.

RabbitMQ 4.x looks at a publish's properties in this order, after the exchange checks:
the direct reply-to rewrite (replyto.py), the expiration (an integer of milliseconds, at
most ten years), the CC and BCC headers (arrays of extra routing keys: a CC or BCC of
another type refuses the message), then user_id (it must name the connection's user).
Each refusal is a 406 PRECONDITION_FAILED with RabbitMQ's text. The message then goes to
the queues of its routing key and of every CC and BCC key, and BCC is taken out of its
headers before any queue (or a mandatory return) sees it; the other headers keep their
bytes. RabbitMQ 3.10 checks user_id before the expiration; memory:// follows 4.x.

memory:// has no users: every connection is RabbitMQ's default user, `USER`.
"""

from __future__ import annotations

import re
from typing import Any

from .._speedups import Properties
from . import errors, fields
from .arguments import MAX_EXPIRY

USER = "guest"

_HEADERS, _REPLY_TO, _EXPIRATION, _USER_ID = 0x2000, 0x0200, 0x0100, 0x0010
# Erlang's string:to_integer: an optional sign, digits, and whatever follows them.
_INTEGER = re.compile(r"([+-]?[0-9]+)(.*)", re.DOTALL)


def needs_look(raw: bytes) -> bool:
    """Whether encoded properties have anything `inspect` would act on: reply-to,
    expiration, user_id, or headers that may hold CC or BCC (a byte search, so a key
    that merely contains those bytes only costs a closer look)."""
    flags = raw[0] << 8 | raw[1]
    if flags & (_REPLY_TO | _EXPIRATION | _USER_ID):
        return True
    return bool(flags & _HEADERS) and _may_have_cc(raw)


def _may_have_cc(raw: bytes) -> bool:
    # A CC or BCC key is its length octet and name; other bytes may look alike (then the
    # table is read for nothing).
    return b"\x02CC" in raw or b"\x03BCC" in raw


def parse_expiration(value: str) -> int:
    """The per-message TTL in milliseconds, or RabbitMQ's PRECONDITION_FAILED."""
    found = _INTEGER.fullmatch(value)
    if found is None:
        problem = "no_integer"
    elif found.group(2):
        leftover = found.group(2).encode("utf-8", "surrogateescape")
        problem = f"{{leftover_string,{fields.erl_string(leftover)}}}"
    else:
        ttl = int(found.group(1))
        if ttl < 0:
            name = "value_negative"
        elif ttl > MAX_EXPIRY:
            name = "value_too_large"
        else:
            return ttl
        prefix = f"invalid expiration '{value}': "
        problem = fields.erl_error_tuple(len(prefix), name, str(ttl))
    raise errors.error(
        "PRECONDITION_FAILED", f"invalid expiration '{value}': {problem}", errors.BASIC_PUBLISH
    )


def header_routes(table: bytes | None, *, strict: bool = True) -> tuple[list[str], bool]:
    """The extra routing keys of the CC then the BCC header (their long-string items; other
    items are ignored) and whether there is a BCC header to strip.

    Raises:
        BrokerError: (strict) CC or BCC is not an array: RabbitMQ refuses the message.
    """
    routes: list[str] = []
    has_bcc = False
    for key in ("CC", "BCC"):
        field = fields.lookup(table, key)
        if field is None:
            continue
        if field.tag != "A":
            if not strict:
                continue
            problem = f'{{unacceptable_type_in_header,"{key}",{fields.TYPE_NAMES[field.tag]}}}'
            raise errors.error(
                "PRECONDITION_FAILED", f"invalid message: {problem}", errors.BASIC_PUBLISH
            )
        has_bcc = has_bcc or key == "BCC"
        assert table is not None
        routes.extend(
            value.decode("utf-8", "surrogateescape")
            for tag, value in fields.array_items(table, field)
            if tag == "S"
        )
    return routes, has_bcc


def check_user_id(user_id: str | None, user: str) -> None:
    """Raise RabbitMQ's PRECONDITION_FAILED when user_id is set and is not `user`."""
    if user_id is not None and user_id != user:
        raise errors.error(
            "PRECONDITION_FAILED",
            f"user_id property set to '{user_id}' but authenticated user was '{user}'",
            errors.BASIC_PUBLISH,
        )


def inspect(raw: bytes, props: Properties) -> tuple[int | None, tuple[str, ...], bytes]:
    """Check a publish's expiration, CC/BCC and user_id (RabbitMQ 4.x's order) and return
    its TTL (None without expiration), its CC and BCC routing keys, and its encoded
    properties without BCC (`raw` itself when there was none; `props`, the decoded `raw`,
    still has BCC then).

    Raises:
        BrokerError: the refusal RabbitMQ would close the channel with.
    """
    ttl = parse_expiration(props.expiration) if props.expiration is not None else None
    routes: tuple[str, ...] = ()
    if props.headers and _may_have_cc(raw):
        table = fields.headers_table(raw)
        extra, has_bcc = header_routes(table)
        routes = tuple(extra)
        if has_bcc:
            raw = fields.with_headers_table(props, fields.edit(table, drop=("BCC",)))
    check_user_id(props.user_id, USER)
    return ttl, routes, raw


def death_routing_keys(routing_key: str, raw: bytes) -> list[str]:
    """x-death's routing-keys: the publish's routing key, then the message's CC (and
    BCC, though it was stripped on the way in) routes."""
    return [routing_key, *header_routes(fields.headers_table(raw), strict=False)[0]]


def dead_letter_properties(props: Properties, raw: bytes, updates: dict[str, Any]) -> bytes:
    """Encoded properties of a dead-lettered copy: `updates` (x-death and friends) set in
    the original headers table, every other header kept byte for byte, no expiration.
    `props` is a private decoded copy of `raw`."""
    props.expiration = None  # kept as original-expiration in x-death
    return fields.with_headers_table(props, fields.edit(fields.headers_table(raw), store=updates))
