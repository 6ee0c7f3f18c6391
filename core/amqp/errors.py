"""Exceptions of the AMQP layer: broker replies mapped to classes, and protocol errors.

A broker close (Connection.Close / Channel.Close) becomes a `BrokerError` subclass chosen by
reply code, carrying code, text, the method that failed and whether it closed the channel or
the whole connection. Bytes we cannot parse raise `RemoteProtocolError`; misuse of the API
raises `LocalProtocolError` (the split h11 uses).
"""

from __future__ import annotations

from typing import Any

from .._speedups import MunggoggoError


class AMQPError(MunggoggoError):
    """Base class of every error raised by munggoggo's AMQP layer."""


class LocalProtocolError(AMQPError):
    """We were asked to do something the protocol does not allow in the current state."""


class RemoteProtocolError(AMQPError):
    """The peer sent bytes that violate AMQP 0-9-1; the connection cannot continue."""


class ConnectionLost(AMQPError):
    """The connection went away (socket closed, heartbeat missed) before the operation ended."""


class AMQPConnectError(AMQPError, OSError):
    """Could not establish a connection: refused, unreachable, timed out or TLS failure."""


class AuthenticationError(AMQPConnectError):
    """The broker refused our credentials (or the vhost) during the handshake."""


class BrokerError(AMQPError):
    """The broker closed a channel or the connection with a reply code.

    Args:
        reply_code: the AMQP reply code (a subclass per known code: `broker_error`).
        reply_text: the broker's explanation.
        class_id: the AMQP class of the method that failed (0: none).
        method_id: the AMQP method that failed (0: none).
        scope: "channel" or "connection": what the broker closed.

    Attributes:
        reply_code: the AMQP reply code.
        reply_text: the broker's explanation.
        class_id: the AMQP class of the method that failed.
        method_id: the AMQP method that failed.
        scope: "channel" or "connection".
    """

    reply_code: int = 0

    def __init__(
        self,
        reply_code: int,
        reply_text: str,
        class_id: int = 0,
        method_id: int = 0,
        scope: str = "channel",
    ) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id
        self.scope = scope
        method = METHOD_NAMES.get((class_id, method_id))
        where = f" (in reply to {method})" if method else ""
        super().__init__(f"{scope} closed by broker: {reply_code} {reply_text}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles its message alone; rebuild from the fields instead.
        args = (self.reply_code, self.reply_text, self.class_id, self.method_id, self.scope)
        return (type(self), args)


class ContentTooLarge(BrokerError):
    """311: the message is larger than the broker accepts."""

    reply_code = 311


class NoRoute(BrokerError):
    """312: a mandatory publish reached no queue."""

    reply_code = 312


class NoConsumers(BrokerError):
    """313: an immediate publish found no consumer (not used by RabbitMQ)."""

    reply_code = 313


class ConnectionForced(BrokerError):
    """320: an operator or the broker closed the connection (shutdown, rabbitmqctl)."""

    reply_code = 320


class InvalidPath(BrokerError):
    """402: an invalid virtual host path."""

    reply_code = 402


class AccessRefused(BrokerError):
    """403: no permission for the resource, or an exclusive consumer or queue holds it."""

    reply_code = 403


class NotFound(BrokerError):
    """404: the exchange or queue does not exist."""

    reply_code = 404


class ResourceLocked(BrokerError):
    """405: the queue is exclusive to another connection."""

    reply_code = 405


class PreconditionFailed(BrokerError):
    """406: a redeclare with other properties, an unknown delivery tag, a failed condition."""

    reply_code = 406


class FrameErrorReply(BrokerError):
    """501: the broker received a malformed frame."""

    reply_code = 501


class SyntaxErrorReply(BrokerError):
    """502: the broker received a frame with invalid field values."""

    reply_code = 502


class CommandInvalid(BrokerError):
    """503: a method the broker cannot accept in the channel's state."""

    reply_code = 503


class ChannelErrorReply(BrokerError):
    """504: a method on a channel that is not open."""

    reply_code = 504


class UnexpectedFrame(BrokerError):
    """505: a frame the broker did not expect (e.g. content without a method)."""

    reply_code = 505


class ResourceError(BrokerError):
    """506: the broker lacks the resources (too many channels, ...)."""

    reply_code = 506


class NotAllowed(BrokerError):
    """530: not allowed, e.g. a virtual host missing or not permitted at Connection.Open."""

    reply_code = 530


class NotImplementedReply(BrokerError):
    """540: functionality the broker does not implement."""

    reply_code = 540


class InternalError(BrokerError):
    """541: an internal error of the broker; retrying may work."""

    reply_code = 541


_BY_CODE = {
    cls.reply_code: cls
    for cls in (
        ContentTooLarge,
        NoRoute,
        NoConsumers,
        ConnectionForced,
        InvalidPath,
        AccessRefused,
        NotFound,
        ResourceLocked,
        PreconditionFailed,
        FrameErrorReply,
        SyntaxErrorReply,
        CommandInvalid,
        ChannelErrorReply,
        UnexpectedFrame,
        ResourceError,
        NotAllowed,
        NotImplementedReply,
        InternalError,
    )
}

METHOD_NAMES = {
    (10, 10): "Connection.Start",
    (10, 11): "Connection.StartOk",
    (10, 40): "Connection.Open",
    (20, 10): "Channel.Open",
    (20, 40): "Channel.Close",
    (40, 10): "Exchange.Declare",
    (40, 20): "Exchange.Delete",
    (40, 30): "Exchange.Bind",
    (40, 40): "Exchange.Unbind",
    (50, 10): "Queue.Declare",
    (50, 20): "Queue.Bind",
    (50, 30): "Queue.Purge",
    (50, 40): "Queue.Delete",
    (50, 50): "Queue.Unbind",
    (60, 10): "Basic.Qos",
    (60, 20): "Basic.Consume",
    (60, 30): "Basic.Cancel",
    (60, 40): "Basic.Publish",
    (60, 70): "Basic.Get",
    (60, 80): "Basic.Ack",
    (60, 90): "Basic.Reject",
    (60, 120): "Basic.Nack",
    (85, 10): "Confirm.Select",
}


def broker_error(
    reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0, scope: str = "channel"
) -> BrokerError:
    """The BrokerError subclass for a reply code (BrokerError itself for unknown codes).

    Args:
        reply_code: the AMQP reply code.
        reply_text: the broker's explanation.
        class_id: the AMQP class of the method that failed.
        method_id: the AMQP method that failed.
        scope: "channel" or "connection".

    Returns:
        The error, to raise.
    """
    cls = _BY_CODE.get(reply_code, BrokerError)
    return cls(reply_code, reply_text, class_id, method_id, scope)
