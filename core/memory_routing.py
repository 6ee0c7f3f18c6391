"""The rules of the memory:// broker that need no event loop: routing and declarations.

Owns exchange records and binding matching (direct, fanout, topic; headers through
`memory_headers`), RabbitMQ's checks and error texts for declare arguments and redeclare
equivalence, and the x-death bookkeeping of dead-lettering. `core/memory.py` holds the
state and the asyncio side. Every text and rule here was checked against RabbitMQ (3.10
and 4.3) with the real client, so a test that passes on memory:// passes on the real
broker; where the two versions differ, memory:// does what 4.x does.
"""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Callable
from typing import Any

from pamqp import encode as pamqp_encode

from .amqp.errors import BrokerError, broker_error
from .memory_headers import Pattern
from .topics import compile_topic, split_words, words_match

# (class id, method id) of the methods that can fail: errors name the method like the
# real broker's Channel.Close does.
EXCHANGE_DECLARE = (40, 10)
EXCHANGE_DELETE = (40, 20)
EXCHANGE_BIND = (40, 30)
EXCHANGE_UNBIND = (40, 40)
QUEUE_DECLARE = (50, 10)
QUEUE_BIND = (50, 20)
QUEUE_PURGE = (50, 30)
QUEUE_DELETE = (50, 40)
QUEUE_UNBIND = (50, 50)
BASIC_QOS = (60, 10)
BASIC_CONSUME = (60, 20)
BASIC_PUBLISH = (60, 40)
BASIC_GET = (60, 70)
BASIC_ACK = (60, 80)
BASIC_REJECT = (60, 90)
BASIC_NACK = (60, 120)

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."
# RabbitMQ's ceiling for per-message and queue TTLs and x-expires: ten years in ms.
MAX_EXPIRY = 315_360_000_000
MAX_PRIORITY = 255

# pamqp refuses other names before anything reaches the wire; the memory broker must too,
# or code that works here would fail with ValueError against RabbitMQ.
_NAME = re.compile(r"^[a-zA-Z0-9-_.:@#,/+ ]*$")

_CODES = {
    "NOT_FOUND": 404,
    "ACCESS_REFUSED": 403,
    "RESOURCE_LOCKED": 405,
    "PRECONDITION_FAILED": 406,
    "COMMAND_INVALID": 503,
    "NOT_ALLOWED": 530,
    "NOT_IMPLEMENTED": 540,
    "INTERNAL_ERROR": 541,
}
# Errors RabbitMQ raises as connection errors. The memory broker closes only the channel
# (there is no reconnect to replay topology), but the error says what RabbitMQ would do.
_CONNECTION_SCOPE = frozenset(
    ("COMMAND_INVALID", "NOT_ALLOWED", "NOT_IMPLEMENTED", "INTERNAL_ERROR")
)


def transient_nonexclusive(name: str) -> BrokerError:
    """RabbitMQ 4.3's refusal (upstream defaults) of a queue that is neither durable nor
    exclusive: deprecated feature `transient_nonexcl_queues`. memory:// refuses it always,
    so code that runs here runs on every broker we support."""
    return error(
        "INTERNAL_ERROR",
        f"Feature `transient_nonexcl_queues` is deprecated: {rs('queue', name)} must be "
        "durable or exclusive",
        QUEUE_DECLARE,
    )


def error(name: str, text: str, method: tuple[int, int]) -> BrokerError:
    """The BrokerError RabbitMQ sends for reply `name` ("NOT_FOUND", ...) on `method`."""
    scope = "connection" if name in _CONNECTION_SCOPE else "channel"
    reply = f"{name} - {text}"
    raw = reply.encode("utf-8", "surrogateescape")
    if len(raw) > 255:  # a short string on the wire: RabbitMQ cuts it with "..."
        reply = (raw[:252] + b"...").decode("utf-8", "surrogateescape")
    return broker_error(_CODES[name], reply, method[0], method[1], scope)


def rs(kind: str, name: str) -> str:
    """RabbitMQ's resource naming in error texts: queue 'x' in vhost '/'."""
    return f"{kind} '{name}' in vhost '/'"


def no_queue(name: str, method: tuple[int, int]) -> BrokerError:
    return error("NOT_FOUND", f"no {rs('queue', name)}", method)


def no_exchange(name: str, method: tuple[int, int]) -> BrokerError:
    return error("NOT_FOUND", f"no {rs('exchange', name)}", method)


def locked(name: str, method: tuple[int, int]) -> BrokerError:
    return error(
        "RESOURCE_LOCKED",
        f"cannot obtain exclusive access to locked {rs('queue', name)}. It could be "
        "originally declared on another connection or the exclusive property value does "
        "not match that of the original declaration.",
        method,
    )


def default_exchange_refused(method: tuple[int, int]) -> BrokerError:
    return error("ACCESS_REFUSED", "operation not permitted on the default exchange", method)


def check_arguments(arguments: dict[str, Any] | None) -> None:
    """Raise the TypeError pamqp raises for method arguments it cannot encode (bytes, for
    one: it takes bytearray), as the real client does before anything is sent."""
    pamqp_encode.field_table(arguments or {})


def check_name(kind: str, value: str) -> None:
    """Raise the ValueError pamqp raises for a name it will not put on the wire."""
    if len(value) > 256:
        raise ValueError(f"Max length exceeded for {kind}")
    if not _NAME.fullmatch(value):
        raise ValueError(f"Invalid value for {kind}")


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


# --------------------------------------------------------------------------- exchanges


def split_key(key: str) -> list[str]:
    """Topic words as RabbitMQ splits them: "" has no words, "a." has two."""
    return split_words(key)


def topic_matches(pattern: list[str], words: list[str]) -> bool:
    """`*` matches exactly one word, `#` zero or more (core/topics.py's matcher)."""
    return words_match(pattern, words)


class Binding:
    """One binding of an exchange to a queue or another exchange."""

    __slots__ = ("arguments", "destination", "pattern", "routing_key", "words")

    def __init__(
        self, destination: Any, routing_key: str, arguments: dict[str, Any], headers: bool
    ) -> None:
        self.destination = destination
        self.routing_key = routing_key
        self.arguments = arguments
        self.words = split_key(routing_key)
        # What a binding of a headers exchange matches, compiled once.
        self.pattern = Pattern(arguments) if headers else None

    def same(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> bool:
        return (
            self.destination is destination
            and self.routing_key == routing_key
            and self.arguments == arguments
        )


class Exchange:
    """An exchange and its bindings. Destinations are queues or other Exchanges."""

    __slots__ = (
        "_cache",
        "arguments",
        "auto_delete",
        "bindings",
        "durable",
        "internal",
        "name",
        "type",
    )

    def __init__(
        self,
        name: str,
        type: str,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = dict(arguments or {})
        self.bindings: list[Binding] = []
        # routing key -> destinations; agents publish on few keys, so routing is a lookup
        self._cache: dict[str, list[Any]] = {}

    @property
    def alternate(self) -> str | None:
        value = self.arguments.get("alternate-exchange")
        return value if isinstance(value, str) else None

    def equivalence_problem(
        self,
        type: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> str | None:
        for key, have, want in (
            ("type", self.type, type),
            ("durable", self.durable, durable),
            ("auto_delete", self.auto_delete, auto_delete),
            ("internal", self.internal, internal),
        ):
            if have != want:
                return inequivalent("exchange", self.name, key, want, have)
        key = "alternate-exchange"
        have_ae, want_ae = self.arguments.get(key), arguments.get(key)
        if (have_ae is not None or want_ae is not None) and (
            have_ae is None or want_ae is None or not equivalent(have_ae, want_ae)
        ):
            return inequivalent("exchange", self.name, key, want_ae, have_ae)
        return None

    def bind(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        for b in self.bindings:
            if b.same(destination, routing_key, arguments):
                return
        self.bindings.append(
            Binding(destination, routing_key, arguments, headers=self.type == "headers")
        )
        self._cache.clear()

    def unbind(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> bool:
        for i, b in enumerate(self.bindings):
            if b.same(destination, routing_key, arguments):
                del self.bindings[i]
                self._cache.clear()
                return True
        return False

    def unbind_all(self, destination: Any) -> bool:
        kept = [b for b in self.bindings if b.destination is not destination]
        if len(kept) == len(self.bindings):
            return False
        self.bindings = kept
        self._cache.clear()
        return True

    def match(self, routing_key: str, headers: Callable[[], dict[str, Any]]) -> list[Any]:
        """Destinations of the bindings this routing key (or these headers, as
        memory_headers.routing_headers gives them) match."""
        if self.type == "headers":
            found = headers()
            return _unique(
                b.destination
                for b in self.bindings
                if b.pattern is not None and b.pattern.matches(found)
            )
        cached = self._cache.get(routing_key)
        if cached is not None:
            return cached
        if self.type == "fanout":
            result = _unique(b.destination for b in self.bindings)
        elif self.type == "direct":
            result = _unique(b.destination for b in self.bindings if b.routing_key == routing_key)
        else:
            words = split_key(routing_key)
            result = _unique(
                b.destination
                for b in self.bindings
                if compile_topic(b.routing_key).match_words(words)
            )
        if len(self._cache) >= 4096:  # routing keys may be unbounded
            self._cache.clear()
        self._cache[routing_key] = result
        return result

    def match_keys(
        self, routing_keys: tuple[str, ...], headers: Callable[[], dict[str, Any]]
    ) -> list[Any]:
        """Destinations for a message with several routing keys (its CC and BCC keys after
        the publish's own): each destination once, in order of the keys."""
        if len(routing_keys) == 1 or self.type in ("fanout", "headers"):
            return self.match(routing_keys[0], headers)
        return _unique(d for key in routing_keys for d in self.match(key, headers))


def _unique(items: Any) -> list[Any]:
    return list(dict.fromkeys(items))


def predeclared() -> dict[str, Exchange]:
    """The exchanges every RabbitMQ vhost starts with."""
    return {
        "": Exchange("", "direct", durable=True),
        "amq.direct": Exchange("amq.direct", "direct", durable=True),
        "amq.fanout": Exchange("amq.fanout", "fanout", durable=True),
        "amq.topic": Exchange("amq.topic", "topic", durable=True),
        "amq.headers": Exchange("amq.headers", "headers", durable=True),
        "amq.match": Exchange("amq.match", "headers", durable=True),
        "amq.rabbitmq.trace": Exchange("amq.rabbitmq.trace", "topic", durable=True, internal=True),
    }


# --------------------------------------------------------------------------- dead-lettering


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
