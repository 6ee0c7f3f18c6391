"""Which host names a browser may use to reach the gateway: the `Host` allow-list.

A page's `Origin` and the request's `Host` are both chosen by whoever controls the DNS name
the browser used. With DNS rebinding, `https://evil.example` first resolves to the
attacker's server, then to the gateway's address: the attacker's page then talks to the
gateway "same-origin" (`Origin: http://evil.example:8000`, `Host: evil.example:8000`), and
reads or calls whatever a gateway without tokens serves. The `Host` is what gives it away:
no name of the gateway's is in it. So a request a browser sends (it carries `Origin`, or
the `Sec-Fetch-Site` header modern browsers add to every request) must name an allowed
host; any other is answered 421 before anything runs, WebSocket handshakes included.

Allowed, compared without the port and case-insensitively:
* the loopback names `localhost`, `127.0.0.1` and `[::1]`;
* the address the gateway listens on (`munggoggo gateway --host`);
* the hosts of the CORS origins (`settings.cors_origins`);
* `settings.allowed_hosts` (`--allowed-host`, `MUNGGOGGO_GATEWAY_ALLOWED_HOSTS`): the
  names the gateway is reached by, such as its public name behind a proxy; `*` turns the
  check off (for a proxy that checks `Host` itself).

Requests without `Origin` and `Sec-Fetch-Site` (curl, agents, other servers) are not
browsers' and not affected; neither is a request without `Host` (browsers always send it).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def normalize_host(host: str) -> str:
    """A host name or IP address as the allow-list compares it.

    Args:
        host: `name`, `1.2.3.4`, `::1` or `[::1]` (no port, no scheme), or `*`.

    Returns:
        Lower case, without a trailing dot, IPv6 in brackets.

    Raises:
        ValueError: for a URL, a port or anything else that is no host.
    """
    text = host.strip().lower().rstrip(".")
    if text == "*":
        return text
    if text.count(":") >= 2 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    bracketed = text.startswith("[") and text.endswith("]")
    if (
        not text
        or any(c in text for c in "/@?# ")
        or (":" in text and not bracketed)
        or ("[" in text and not bracketed)
    ):
        raise ValueError(
            f"an allowed host is a host name or IP address without scheme or port, got {host!r}"
        )
    return text


def host_name(header: bytes) -> str:
    """The host part of a `Host` header value: without the port, lower case.

    Args:
        header: the raw header value (`name:8000`, `[::1]:8000`, `name`).

    Returns:
        The name as `normalize_host` writes it (an invalid value gives an unlisted name).
    """
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit():
        text = name
    return text.rstrip(".")


class HostPolicy:
    """The allow-list of `Host` names for browser requests."""

    def __init__(
        self,
        allowed: Iterable[str],
        cors_origins: Iterable[str] = (),
        bind_address: str | None = None,
    ) -> None:
        """Args:
            allowed: the configured names (`settings.allowed_hosts`); `*` allows any.
            cors_origins: the CORS allow-list; each origin's host is allowed (`*` is not a
                host and adds nothing).
            bind_address: the address the server listens on, if known.

        Raises:
            ValueError: an entry that is no host name or address.
        """
        names = {normalize_host(h) for h in allowed}
        self.any = "*" in names
        names.discard("*")
        names.update(LOOPBACK_HOSTS)
        if bind_address:
            names.add(normalize_host(bind_address))
        for origin in cors_origins:
            if origin.strip() != "*":
                hostname = urlsplit(origin.strip()).hostname
                if hostname:
                    names.add(normalize_host(hostname))
        self.names = frozenset(names)

    def permits(self, host: bytes | None) -> bool:
        """Whether a browser request with this `Host` header may go on.

        Args:
            host: the header's value, or None when the request has none.

        Returns:
            True for an allowed name (or no `Host` at all, which no browser sends).
        """
        if host is None or self.any:
            return True
        return host_name(host) in self.names

    def refusal(self, host: bytes | None) -> str:
        """The sentence a refused client gets: what was refused and how to allow it.

        Args:
            host: the refused `Host` header value.

        Returns:
            The message.
        """
        shown = (host or b"").decode("latin-1")
        shown = shown if len(shown) <= 100 else shown[:100] + "..."
        return (
            f"host {shown!r} is not one of the gateway's names: browser requests must use an "
            "allowed host (DNS rebinding protection); add it with --allowed-host or "
            "MUNGGOGGO_GATEWAY_ALLOWED_HOSTS"
        )


def is_browser_request(headers: dict[bytes, bytes]) -> bool:
    """Whether a browser sent the request: it carries `Origin` or `Sec-Fetch-Site`.

    Args:
        headers: the request headers, names in lower case.

    Returns:
        True for a browser's request.
    """
    return b"origin" in headers or b"sec-fetch-site" in headers
