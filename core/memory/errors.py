"""RabbitMQ's replies to the methods memory:// refuses, and the client's own refusals.

The (class id, method id) of each method that can fail, `error()` building the
`BrokerError` RabbitMQ would close the channel with (its reply code, scope and text, cut to
a short string as on the wire), the texts of the common refusals (no such queue or
exchange, a locked exclusive queue, the default exchange), and the checks the real client
(pamqp) makes before anything is sent, so code that works on memory:// does not fail with
ValueError against RabbitMQ. Every text was checked against RabbitMQ 3.10 and 4.3.
"""

from __future__ import annotations

import re
from typing import Any

from pamqp import encode as pamqp_encode

from ..amqp.errors import BrokerError, broker_error

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
