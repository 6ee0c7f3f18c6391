"""The byte pipe: an asyncio Protocol that moves bytes between a socket and its owner.

Only this module (and the gateway's server glue) touches sockets. It knows nothing of AMQP:
it hands received buffers to the owner whole (one buffer, one parse, one dispatch batch),
writes what the owner queued once per loop tick, reports pause/resume of writing, and turns
OS errors into one-line messages that name the broker (never the password).
Reconnect pacing (`Backoff`) lives here too; what to restore after a reconnect is the
client's business.
"""

from __future__ import annotations

import asyncio
import errno
import random
import ssl
from collections.abc import Callable
from typing import Protocol

from .amqp.errors import AMQPConnectError
from .url import BrokerURL


class StreamOwner(Protocol):
    def stream_data(self, data: bytes) -> None: ...
    def stream_lost(self, exc: Exception | None) -> None: ...
    def stream_writable(self, writable: bool) -> None: ...


class AMQPStream(asyncio.Protocol):
    """Socket <-> owner. Writes are gathered by the owner and flushed once per tick."""

    def __init__(self, owner: StreamOwner) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.owner.stream_data(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.owner.stream_lost(exc)

    def pause_writing(self) -> None:
        self.owner.stream_writable(False)

    def resume_writing(self) -> None:
        self.owner.stream_writable(True)

    def write(self, data: bytes | bytearray) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_stream(url: BrokerURL, owner: StreamOwner) -> AMQPStream:
    """Connect a socket to the broker; raises AMQPConnectError with a readable reason."""
    loop = asyncio.get_running_loop()
    ssl_context: ssl.SSLContext | None = None
    if url.tls:
        try:
            ssl_context = url.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise AMQPConnectError(f"cannot set up TLS for {url}: {exc}") from None
    try:
        _, stream = await asyncio.wait_for(
            loop.create_connection(
                lambda: AMQPStream(owner),
                url.host,
                url.port,
                ssl=ssl_context,
                server_hostname=(url.server_name_indication or url.host) if ssl_context else None,
            ),
            timeout=url.connection_timeout,
        )
    except TimeoutError:
        raise AMQPConnectError(
            f"cannot connect to {url}: timed out after {url.connection_timeout:g}s"
        ) from None
    except ssl.SSLError as exc:
        raise AMQPConnectError(f"cannot connect to {url}: TLS handshake failed: {exc}") from None
    except OSError as exc:
        raise AMQPConnectError(f"cannot connect to {url}: {describe_os_error(exc)}") from None
    return stream


def describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host unreachable"
    if isinstance(exc, OSError) and "Name or service not known" in str(exc):
        return "unknown host"
    # Multi-address failures wrap the real errors in a generic message.
    if "Multiple exceptions" in str(exc) and "Connect call failed" in str(exc):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


def describe_handshake_loss(url: BrokerURL, exc: BaseException | None) -> str:
    """Why a connection ended before the AMQP handshake finished, in words that point at the
    fix. Over TLS a broker that requires client certificates ends the session right after
    the TLS handshake when none (or an untrusted one) was sent: TLS 1.3 reports that with an
    alert, but the TCP reset can overtake it, so a reset over TLS gets the same hint."""
    if not url.tls:
        return f"the broker closed the connection during the handshake ({exc or 'no reason'})"
    if isinstance(exc, ssl.SSLError):
        what = f"the broker ended the TLS session during the handshake: {exc}"
    else:
        what = (
            "the broker closed the TLS connection during the handshake "
            f"({describe_os_error(exc) if isinstance(exc, OSError) else exc or 'no reason'})"
        )
    if url.certfile is None:
        return f"{what}; if it requires client certificates, set certfile and keyfile"
    return f"{what}; if it requires client certificates, check that it trusts certfile's issuer"


class Backoff:
    """Exponential reconnect delays with full jitter, capped; reset after a success."""

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 5.0,
        factor: float = 2.0,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0
        self._jitter = jitter or (lambda d: random.uniform(d / 2, d))

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return self._jitter(delay)

    def reset(self) -> None:
        self.attempts = 0
