"""Broker URLs: parse `amqp://`, `amqps://` and `memory://` into connection parameters.

Query parameters follow the RabbitMQ URI spec names: heartbeat, frame_max, channel_max,
connection_timeout (seconds), name (connection name); for TLS also cafile, certfile,
keyfile, server_name_indication and verify (verify_peer / verify_none).
The password never appears in `str()` or `repr()`: errors and logs print the safe form.
`parse_urls` reads a failover list: several URLs, comma-separated or as a Python list.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from ._speedups import MunggoggoError

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
SCHEMES = ("amqp", "amqps", "memory")
_INT_PARAMS = ("heartbeat", "frame_max", "channel_max")
_KNOWN_PARAMS = {
    *_INT_PARAMS,
    "connection_timeout",
    "name",
    "cafile",
    "certfile",
    "keyfile",
    "server_name_indication",
    "verify",
}


# A comma starts the next URL of a list only when a scheme follows it, so a comma inside a
# password or a query value (RFC 3986 allows them unencoded) does not split a URL.
_LIST_SEPARATOR = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


class URLError(MunggoggoError, ValueError):
    """A broker URL that cannot be used; the message names the problem (never the password)."""


@dataclass(frozen=True)
class BrokerURL:
    """A parsed broker URL (`parse_url`): where and how to connect.

    `str()` gives the URL without credentials, safe for logs.

    Attributes:
        scheme: "amqp", "amqps" or "memory".
        host: the broker's host (for memory://, the in-process broker's name).
        port: the broker's port (default 5672, 5671 for amqps).
        username: the login (default "guest").
        password: the password (default "guest"; never shown by `repr`).
        vhost: the virtual host (default "/").
        heartbeat: the heartbeat interval proposed, in seconds (`?heartbeat=`).
        frame_max: the largest frame proposed, in bytes (`?frame_max=`).
        channel_max: the most channels proposed (`?channel_max=`).
        connection_timeout: seconds a connection attempt may take (`?connection_timeout=`,
            given in milliseconds as in RabbitMQ's URIs).
        name: the connection's name shown by the broker (`?name=`).
        cafile: CA certificates to verify the broker with (amqps; default the system's).
        certfile: the client certificate (amqps).
        keyfile: the client certificate's key (amqps; default in `certfile`).
        server_name_indication: the TLS server name, when it is not the host.
        verify: whether the broker's certificate is verified (`?verify=verify_none` turns
            it off).
    """

    scheme: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    vhost: str
    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    connection_timeout: float = 10.0
    name: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_name_indication: str | None = None
    verify: bool = True

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (amqps://)."""
        return self.scheme == "amqps"

    @property
    def is_memory(self) -> bool:
        """Whether it names an in-process broker (memory://)."""
        return self.scheme == "memory"

    def __str__(self) -> str:
        """The URL without credentials: safe for logs and error messages."""
        if self.is_memory:
            return f"memory://{self.host}"
        vhost = "" if self.vhost == "/" else self.vhost.replace("/", "%2F")
        return f"{self.scheme}://{self.host}:{self.port}/{vhost}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context.

        Returns:
            The context for amqps://, None for the other schemes.

        Raises:
            OSError: a certificate or key file that cannot be loaded; the message names
                the URL parameter and the path (OpenSSL's own message names neither).
        """
        if not self.tls:
            return None
        what = f"cafile {self.cafile!r}" if self.cafile else "the system CA certificates"
        try:
            ctx = ssl.create_default_context(cafile=self.cafile)
            if self.certfile:
                what = f"certfile {self.certfile!r} / keyfile {self.keyfile or self.certfile!r}"
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except OSError as exc:  # ssl.SSLError is an OSError too
            raise OSError(f"{what}: {exc.strerror or exc}") from None
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def parse_url(url: str | None = None) -> BrokerURL:
    """Parse a broker URL; None reads MUNGGOGGO_URL, then falls back to the local default.

    Args:
        url: `amqp://user:password@host:port/vhost?param=value`, `amqps://...` or
            `memory://name`; None: `MUNGGOGGO_URL`, else `DEFAULT_URL`.

    Returns:
        The parsed URL.

    Raises:
        URLError: an invalid URL (the message never shows the password): a list of URLs,
            an unsupported scheme, no host, an unencoded `/`, `?` or `#` in the password,
            an unknown or invalid query parameter.
    """
    if url is None:
        url = os.environ.get("MUNGGOGGO_URL") or DEFAULT_URL
    several = split_urls(url)
    if len(several) > 1:
        listed = ", ".join(repr(_redact(u)) for u in several)
        raise URLError(
            f"expected one broker URL, got a list of {len(several)}: {listed} "
            "(parse_urls reads lists)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        if "@" in url and not _authority_has_credentials(url):
            # The authority ended at a '/', '?' or '#' inside the password: urllib's message
            # would quote the part of the password it took for a port.
            raise URLError(f"invalid broker URL {_redact(url)!r}: {_UNENCODED}") from None
        raise URLError(f"invalid broker URL {_redact(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise URLError(
            f"unsupported broker URL scheme {scheme!r} in {_redact(url)!r}: "
            "use amqp://, amqps:// or memory://"
        )
    if scheme == "memory":
        return BrokerURL("memory", parts.netloc or "default", 0, "", "", "/")
    if not url[len(parts.scheme) + 1 :].startswith("//"):
        # "amqp:user:pw@host" parses as a URL without host whose path (the vhost, which
        # str() and the broker's refusal show) holds the password.
        raise URLError(
            f"broker URL {_redact(url)!r} has no host: write {scheme}://user:password@host:port/vhost"
        )
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # The authority ended early at a '/', '?' or '#' of the password; the rest of it would
        # become the vhost or a query parameter.
        raise URLError(f"invalid broker URL {_redact(url)!r}: {_UNENCODED}")
    path = parts.path
    if path in ("", "/"):
        vhost = "/"
    else:
        vhost = unquote(path[1:])
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(params) - _KNOWN_PARAMS
    if unknown:
        raise URLError(
            f"unknown query parameter(s) {', '.join(sorted(unknown))} "
            f"in broker URL {_redact(url)!r}"
        )
    options: dict[str, object] = {}
    for key in _INT_PARAMS:
        if key in params:
            options[key] = _int_param(key, params[key], url)
    if "connection_timeout" in params:
        # RabbitMQ URIs give this in milliseconds.
        options["connection_timeout"] = (
            _int_param("connection_timeout", params["connection_timeout"], url) / 1000
        )
    for key in ("name", "cafile", "certfile", "keyfile", "server_name_indication"):
        if key in params:
            options[key] = params[key]
    if "verify" in params:
        if params["verify"] not in ("verify_peer", "verify_none"):
            raise URLError("verify must be verify_peer or verify_none")
        options["verify"] = params["verify"] == "verify_peer"
    return BrokerURL(
        scheme=scheme,
        host=parts.hostname or "127.0.0.1",
        port=port or (5671 if scheme == "amqps" else 5672),
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
        **options,  # type: ignore[arg-type]
    )


def split_urls(text: str) -> list[str]:
    """The URLs of a comma-separated failover list (one URL gives a list of one).

    A comma splits only where a scheme follows it, so commas inside a password stay.

    Args:
        text: the list.

    Returns:
        The URLs, unparsed.
    """
    return [part for part in _LIST_SEPARATOR.split(text.strip()) if part]


def parse_urls(
    urls: str | BrokerURL | Iterable[str | BrokerURL] | None = None,
) -> tuple[BrokerURL, ...]:
    """Parse a failover list: a comma-separated string, a list, or one URL; None reads
    MUNGGOGGO_URL (which may be a list too), then falls back to the local default.
    Connections try the URLs in order. memory:// stands alone: it has nothing to fail over to.

    Args:
        urls: the URLs (strings or parsed), or None.

    Returns:
        The parsed URLs, in order.

    Raises:
        URLError: an invalid URL, an empty list, or memory:// in a list of several.
    """
    if urls is None:
        urls = os.environ.get("MUNGGOGGO_URL") or DEFAULT_URL
    if isinstance(urls, BrokerURL):
        return (urls,)
    items = split_urls(urls) if isinstance(urls, str) else list(urls)
    parsed = tuple(u if isinstance(u, BrokerURL) else parse_url(u) for u in items)
    if not parsed:
        raise URLError("no broker URL given")
    if len(parsed) > 1 and any(u.is_memory for u in parsed):
        raise URLError("a memory:// URL cannot be part of a failover list")
    return parsed


def _int_param(key: str, value: str, url: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise URLError(
            f"{key}={value!r} in broker URL {_redact(url)!r} is not an integer"
        ) from None
    if number < 0:
        raise URLError(f"{key} must not be negative in broker URL {_redact(url)!r}")
    return number


_UNENCODED = (
    "cannot tell the user name and password from the host "
    "(percent-encode '/', '?', '#' and '@' in them, e.g. '/' as %2F)"
)


def _authority_has_credentials(url: str) -> bool:
    """Whether the '@' ending the credentials lies inside the authority urllib will see."""
    rest = url.partition("://")[2]
    for stop in "/?#":
        rest = rest.split(stop, 1)[0]
    return "@" in rest


def _redact(url: str) -> str:
    """A URL we could not parse, fit for a message: everything between the scheme and the
    last '@' could be the password, so only a user name that is surely not part of it (the
    text before the first ':', without '/', '?' or '#') is kept.
    """
    head, at, host = url.rpartition("@")
    if not at:
        return url  # no credentials in it
    scheme, sep, creds = head.partition("://")
    if not sep:
        scheme, sep, creds = head.partition(":")
        return f"{scheme}:***@{host}" if sep and scheme.isalpha() else f"***@{host}"
    user, colon, _ = creds.partition(":")
    if any(c in user for c in "/?#"):
        return f"{scheme}://***@{host}"
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"
