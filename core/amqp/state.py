"""The connection and channel state machines, each as one transition table.

Every state change of the sans-IO connection goes through `advance()`, so the legal
sequences of the handshake and of channel life are readable here in one place.
"""

from __future__ import annotations

from enum import Enum

from .errors import LocalProtocolError, RemoteProtocolError


class ConnState(Enum):
    """The states of a connection, from the protocol header to the close."""

    IDLE = "idle"  # nothing sent yet
    AWAIT_START = "await-start"  # protocol header sent
    AWAIT_TUNE = "await-tune"  # StartOk sent (Secure may come first)
    AWAIT_OPEN_OK = "await-open-ok"  # TuneOk + Open sent
    OPEN = "open"
    CLOSING = "closing"  # we sent Connection.Close
    CLOSED = "closed"


class ChanState(Enum):
    """The states of a channel."""

    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# (state, what happened) -> next state. "what happened" is a method name we received
# ("<-Name"), one we sent ("->Name"), or a local event.
CONNECTION_TRANSITIONS: dict[tuple[ConnState, str], ConnState] = {
    (ConnState.IDLE, "initiate"): ConnState.AWAIT_START,
    (ConnState.AWAIT_START, "<-Connection.Start"): ConnState.AWAIT_TUNE,
    (ConnState.AWAIT_TUNE, "<-Connection.Secure"): ConnState.AWAIT_TUNE,
    (ConnState.AWAIT_TUNE, "<-Connection.Tune"): ConnState.AWAIT_OPEN_OK,
    (ConnState.AWAIT_OPEN_OK, "<-Connection.OpenOk"): ConnState.OPEN,
    (ConnState.OPEN, "->Connection.Close"): ConnState.CLOSING,
    (ConnState.CLOSING, "<-Connection.CloseOk"): ConnState.CLOSED,
    (ConnState.CLOSING, "<-Connection.Close"): ConnState.CLOSED,
    # The broker may close during the handshake (bad credentials, no vhost access) or later.
    (ConnState.AWAIT_START, "<-Connection.Close"): ConnState.CLOSED,
    (ConnState.AWAIT_TUNE, "<-Connection.Close"): ConnState.CLOSED,
    (ConnState.AWAIT_OPEN_OK, "<-Connection.Close"): ConnState.CLOSED,
    (ConnState.OPEN, "<-Connection.Close"): ConnState.CLOSED,
}

CHANNEL_TRANSITIONS: dict[tuple[ChanState, str], ChanState] = {
    (ChanState.CLOSED, "->Channel.Open"): ChanState.OPENING,
    (ChanState.OPENING, "<-Channel.OpenOk"): ChanState.OPEN,
    (ChanState.OPEN, "->Channel.Close"): ChanState.CLOSING,
    (ChanState.OPENING, "->Channel.Close"): ChanState.CLOSING,
    (ChanState.CLOSING, "<-Channel.CloseOk"): ChanState.CLOSED,
    (ChanState.CLOSING, "<-Channel.Close"): ChanState.CLOSED,  # both sides closed at once
    (ChanState.OPENING, "<-Channel.Close"): ChanState.CLOSED,
    (ChanState.OPEN, "<-Channel.Close"): ChanState.CLOSED,
}


def advance_connection(state: ConnState, event: str) -> ConnState:
    """The connection's next state, by CONNECTION_TRANSITIONS.

    Args:
        state: its state now.
        event: what happened: a method received ("<-Connection.Tune"), one sent
            ("->Connection.Close"), or "initiate".

    Returns:
        The next state.

    Raises:
        RemoteProtocolError: the broker sent a method the state does not allow.
        LocalProtocolError: we were about to send one the state does not allow.
    """
    try:
        return CONNECTION_TRANSITIONS[state, event]
    except KeyError:
        raise _error(event, f"connection in state {state.value}") from None


def advance_channel(channel: int, state: ChanState, event: str) -> ChanState:
    """A channel's next state, by CHANNEL_TRANSITIONS.

    Args:
        channel: the channel number (for the error message).
        state: its state now.
        event: what happened: a method received ("<-Channel.OpenOk") or sent
            ("->Channel.Close").

    Returns:
        The next state.

    Raises:
        RemoteProtocolError: the broker sent a method the state does not allow.
        LocalProtocolError: we were about to send one the state does not allow.
    """
    try:
        return CHANNEL_TRANSITIONS[state, event]
    except KeyError:
        raise _error(event, f"channel {channel} in state {state.value}") from None


def _error(event: str, where: str) -> Exception:
    if event.startswith("<-"):
        return RemoteProtocolError(f"broker sent {event[2:]} to a {where}")
    return LocalProtocolError(f"cannot {event.lstrip('->')} on a {where}")
