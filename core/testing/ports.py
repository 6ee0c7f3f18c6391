"""A free TCP port on loopback, for servers a test or bench starts (gateway, probes, metrics)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now.

    The port is only free when this returns: whoever binds it next wins, which is good
    enough for a test's own servers on a machine that does not hand out ports in a race.

    Args:
        host: the address the port is for.

    Returns:
        The port.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]  # (host, port) for IPv4, typed as Any
        return port
