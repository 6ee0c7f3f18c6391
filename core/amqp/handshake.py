"""The connection handshake's pure parts: what we tell the broker, and what we agree on.

`AMQPConnection` (connection.py) drives the handshake's state; this module computes its
values (client properties, the PLAIN response, the negotiated limits, the error for a
refused login) with no state of its own, so each is testable alone.
"""

from __future__ import annotations

import platform
from typing import Any

from .._version import __version__
from .errors import AccessRefused, AuthenticationError, BrokerError

__all__ = [
    "CLIENT_CAPABILITIES",
    "DEFAULT_FRAME_MAX",
    "FRAME_MIN_SIZE",
    "Tuned",
    "auth_error",
    "client_properties",
    "negotiate",
    "plain_response",
    "tune",
]

FRAME_MIN_SIZE = 4096
DEFAULT_FRAME_MAX = 131072

CLIENT_CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
}


def client_properties(connection_name: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The client properties sent in Connection.StartOk.

    Args:
        connection_name: the name the broker shows for the connection, or None.
        extra: more properties, added to ours (and replacing them by key), or None.

    Returns:
        product, platform, version and capabilities, then the name and `extra`.
    """
    props: dict[str, Any] = {
        "product": "munggoggo",
        "platform": f"Python {platform.python_version()}",
        "version": __version__,
        "capabilities": dict(CLIENT_CAPABILITIES),
    }
    if connection_name:
        props["connection_name"] = connection_name
    if extra:
        props.update(extra)
    return props


def plain_response(username: str, password: str) -> str:
    """The PLAIN mechanism's response (RFC 4616, without an authorization identity).

    Args:
        username: the login.
        password: the password.

    Returns:
        NUL, the username, NUL, the password.
    """
    return f"\0{username}\0{password}"


def negotiate(ours: int, theirs: int) -> int:
    """The smaller of two limits where 0 means "no limit".

    Args:
        ours: the limit we proposed.
        theirs: the limit the broker proposed.

    Returns:
        The agreed limit (0 only when both are 0).
    """
    if not ours:
        return theirs
    if not theirs:
        return ours
    return min(ours, theirs)


class Tuned:
    """The limits agreed in Connection.Tune.

    Args:
        channel_max: the most channels.
        frame_max: the largest frame, in bytes.
        heartbeat: the heartbeat interval in seconds (0: off).

    Attributes:
        channel_max: the most channels.
        frame_max: the largest frame, in bytes.
        heartbeat: the heartbeat interval in seconds (0: off).
    """

    __slots__ = ("channel_max", "frame_max", "heartbeat")

    def __init__(self, channel_max: int, frame_max: int, heartbeat: int) -> None:
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.heartbeat = heartbeat


def tune(
    requested_channel_max: int,
    requested_frame_max: int,
    requested_heartbeat: int,
    method: Any,
) -> Tuned:
    """The limits to answer the broker's Connection.Tune with.

    Args:
        requested_channel_max: the most channels we proposed (0: no limit).
        requested_frame_max: the largest frame we proposed (0: no limit).
        requested_heartbeat: our heartbeat (0: off, which wins over the broker's).
        method: the broker's Connection.Tune.

    Returns:
        The agreed limits: no limit on channels means 65535, a frame_max never below the
        protocol's minimum, the smaller non-zero heartbeat unless ours is 0.
    """
    channel_max = negotiate(requested_channel_max, method.channel_max) or 65535
    frame_max = negotiate(requested_frame_max, method.frame_max) or DEFAULT_FRAME_MAX
    frame_max = max(frame_max, FRAME_MIN_SIZE)
    # Heartbeat 0 from us means "off" and wins; otherwise the smaller non-zero value.
    heartbeat = 0 if requested_heartbeat == 0 else negotiate(requested_heartbeat, method.heartbeat)
    return Tuned(channel_max, frame_max, heartbeat)


def auth_error(error: BrokerError, username: str, vhost: str) -> AuthenticationError:
    """The error for a login the broker refused during the handshake.

    Args:
        error: the broker's Connection.Close, as an error (access refused or not allowed).
        username: the login that was refused.
        vhost: the virtual host asked for.

    Returns:
        An AuthenticationError naming the user (or the vhost), with the broker's reply code.
    """
    if isinstance(error, AccessRefused):
        what = f"broker refused the credentials of user {username!r}"
    else:
        what = f"user {username!r} may not open vhost {vhost!r}"
    exc = AuthenticationError(f"{what}: {error.reply_code} {error.reply_text}")
    exc.reply_code = error.reply_code  # type: ignore[attr-defined]
    return exc
