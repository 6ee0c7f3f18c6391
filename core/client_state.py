"""The states of a `client.Connection` (its `state` property) and how it moves between them.

    new --connect()--> connecting --handshake done--> open
    open --lost, reconnect on--> recovering --reconnected and restored--> open
    open --lost, reconnect off (or refused credentials)--> closed
    connecting --every broker URL failed--> closed
    connecting / open / recovering --close()--> closing --socket closed--> closed
    new --close()--> closed

Publishing may go on only while the connection is open (and the socket writable, and the
broker not blocking us): see `Connection.flow`.
"""

from __future__ import annotations

__all__ = ["CLOSED", "CLOSING", "CONNECTING", "NEW", "OPEN", "RECOVERING"]

NEW = "new"
CONNECTING = "connecting"
OPEN = "open"
RECOVERING = "recovering"
CLOSING = "closing"
CLOSED = "closed"
