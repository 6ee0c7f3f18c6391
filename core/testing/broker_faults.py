"""Faults made by the broker itself, through rabbitmqctl: for fault tests and the soak bench.

Owns the rabbitmqctl calls that hurt a running broker (close a connection by its name,
stop_app / start_app, a memory alarm through the high watermark) and the lock that keeps
two of them apart: anything that stops the broker or moves its watermark holds an
exclusive flock on LOCK_PATH meanwhile, so two such faults never overlap, even across
processes (pytest runs of different engineers); a soak holds it shared for its whole run,
so nobody else restarts the broker under it. Everything here blocks (subprocess,
sockets): async callers use asyncio.to_thread or the async lock.

The proxy-level faults (cut, freeze, slow) live in munggoggo.testing.fault_proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from ..url import DEFAULT_URL

LOCK_PATH = "/tmp/munggoggo-broker-fault.lock"
LOCK_TIMEOUT = 60.0  # seconds to wait for another holder before giving up
WATERMARK_QUERY = "vm_memory_monitor:get_vm_memory_high_watermark()."
ALARM_WATERMARK = "0.0000001"  # far below what any broker uses: the alarm goes off at once
DEFAULT_WATERMARK = ["0.4"]  # RabbitMQ's default


class BrokerFaultLock:
    """flock on LOCK_PATH: `with BrokerFaultLock():` or `async with BrokerFaultLock():`.

    Exclusive for a fault that hurts the broker (stop_app, a memory alarm); shared for a
    run that must not be hurt meanwhile (a soak holds it for its whole duration, and takes
    it exclusive with `exclusive()` for a restart of its own). Waiting is bounded: after
    `timeout` seconds a TimeoutError names the holder, so a test waiting behind a
    ten-minute soak fails with a reason instead of hanging into its time limit.

    Args:
        path: the lock file.
        shared: take it shared (a run that must not be hurt) instead of exclusive.
        timeout: seconds to wait for it at most.
        holder: who holds it, written into the lock file (default: the command line).

    Raises:
        TimeoutError: (on entering) the lock was not free within `timeout`; the message
            names the holder.
    """

    def __init__(
        self,
        path: str = LOCK_PATH,
        *,
        shared: bool = False,
        timeout: float = LOCK_TIMEOUT,
        holder: str = "",
    ) -> None:
        self.path = path
        self.shared = shared
        self.timeout = timeout
        self.holder = holder or " ".join(sys.argv)[:200]
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (blocking, at most `timeout` seconds: TimeoutError names the holder)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            self._flock(fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._sign()

    def _flock(self, fd: int, mode: int) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the broker fault lock {self.path} is still held after "
                        f"{self.timeout:g}s by: {self._holders(fd)}"
                    ) from None
                time.sleep(0.1)

    @staticmethod
    def _holders(fd: int) -> str:
        try:
            return os.pread(fd, 500, 0).decode(errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"

    def _sign(self) -> None:
        """Say in the lock file who holds it (the last holder, with shared holders)."""
        kind = "shared" if self.shared else "exclusive"
        text = f"pid {os.getpid()} ({kind}) since {time.strftime('%H:%M:%S')}: {self.holder}\n"
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # type: ignore[arg-type]
            os.pwrite(self._fd, text.encode(), 0)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[BrokerFaultLock]:
        """A shared holder's own broker fault: exclusive meanwhile, shared again after.

        Yields:
            The lock, held exclusively.
        """
        assert self._fd is not None and self.shared, "exclusive() is for a shared holder"
        await asyncio.to_thread(self._flock, self._fd, fcntl.LOCK_EX)
        try:
            yield self
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        """Give the lock up (a no-op when it is not held)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> BrokerFaultLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    async def __aenter__(self) -> BrokerFaultLock:
        # Waiting for another holder must not stall the event loop.
        await asyncio.to_thread(self.acquire)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


def rabbitmqctl_command() -> list[str]:
    """The rabbitmqctl of the broker under test: the command line in MUNGGOGGO_RABBITMQCTL
    (`bash .ci/rabbitmq43 ctl` for the RabbitMQ 4.3 node), else the machine's own.

    Returns:
        The command line, split.
    """
    return shlex.split(os.environ.get("MUNGGOGGO_RABBITMQCTL") or "rabbitmqctl")


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run the broker under test's rabbitmqctl (root on the test machines).

    Args:
        *args: rabbitmqctl's arguments (`-q` is added).
        timeout: seconds it may take.

    Returns:
        Its stdout.

    Raises:
        RuntimeError: it failed; the message is rabbitmqctl's own.
        subprocess.TimeoutExpired: it took longer than `timeout`.
    """
    result = subprocess.run(
        [*rabbitmqctl_command(), "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def close_named_connection(name: str, reason: str = "fault injection") -> int:
    """Force-close the broker side of every connection whose client-given name (the
    `connection_name` client property; agents use their identity) is `name`.
    rabbitmqctl's `name` column is the peer address, not this.

    Args:
        name: the connection name.
        reason: the close reason the clients receive.

    Returns:
        How many connections were closed.
    """
    wanted = f'{{"connection_name","{name}"}}'
    closed = 0
    for line in rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        pid, _, properties = line.partition("\t")
        if wanted in properties:
            try:
                rabbitmqctl("close_connection", pid.strip(), reason)
            except RuntimeError:
                continue  # it went away meanwhile
            closed += 1
    return closed


def broker_address() -> tuple[str, int]:
    """Where the broker under test listens.

    Returns:
        (host, port): MUNGGOGGO_URL's, else 127.0.0.1:5672.
    """
    parts = urlsplit(os.environ.get("MUNGGOGGO_URL") or DEFAULT_URL)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def broker_answers(host: str | None = None, port: int | None = None, timeout: float = 2.0) -> bool:
    """True when something on host:port (default: the broker under test) answers the AMQP
    0-9-1 header with a method frame (Connection.Start): the broker's listener is up, not
    merely the Erlang node.

    Args:
        host: the host (default: the broker under test's).
        port: the port (default: the broker under test's).
        timeout: seconds to wait for the answer.

    Returns:
        Whether the listener answered.
    """
    default_host, default_port = broker_address()
    host = default_host if host is None else host  # a port alone is a port of that host
    port = default_port if port is None else port
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def wait_for_broker(
    host: str | None = None, port: int | None = None, timeout: float = 60.0
) -> None:
    """Block until the broker (default: the one under test) answers.

    Args:
        host: the host (default: the broker under test's).
        port: the port (default: the broker under test's).
        timeout: seconds to wait at most.

    Raises:
        TimeoutError: it did not answer within `timeout`.
    """
    default_host, default_port = broker_address()
    host = default_host if host is None else host  # a port alone is a port of that host
    port = default_port if port is None else port
    deadline = time.monotonic() + timeout
    while not broker_answers(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"RabbitMQ at {host}:{port} did not answer within {timeout:g}s")
        time.sleep(0.2)


def stop_app() -> None:
    """Stop the RabbitMQ application of the broker under test (its clients are cut)."""
    rabbitmqctl("stop_app", timeout=120)


def start_app(host: str | None = None, port: int | None = None) -> None:
    """start_app, then wait until the listener answers again.

    Args:
        host: the listener's host (default: the broker under test's).
        port: the listener's port (default: the broker under test's).
    """
    rabbitmqctl("start_app", timeout=120)
    wait_for_broker(host, port)


def memory_watermark() -> list[str]:
    """The current vm_memory_high_watermark as set_vm_memory_high_watermark arguments
    (`["0.4"]` or `["absolute", "1073741824"]`), so it can be put back exactly.

    Returns:
        The arguments.
    """
    raw = rabbitmqctl("eval", WATERMARK_QUERY).strip()
    if raw.startswith("{"):
        kind, _, value = raw.strip("{}").partition(",")
        value = value.strip().strip('"')
        if kind.strip() == "absolute":
            return ["absolute", value]
        return [value]  # {relative, F}
    float(raw)  # a plain fraction; anything else is a surprise worth failing on
    return [raw]


def set_memory_watermark(args: list[str]) -> None:
    """Set vm_memory_high_watermark.

    Args:
        args: its arguments, as memory_watermark() returns them.
    """
    rabbitmqctl("set_vm_memory_high_watermark", *args)


def memory_alarm_on() -> list[str]:
    """Raise the memory alarm (a watermark far below what the broker uses); returns the
    watermark to restore with set_memory_watermark().

    Returns:
        The watermark before (RabbitMQ's default if a killed run left the alarm on).
    """
    original = memory_watermark()
    if original == [ALARM_WATERMARK]:
        # Left behind by a run that was killed before it could restore: the real value
        # is unknown, RabbitMQ's default is the best guess (and ends the alarm).
        original = DEFAULT_WATERMARK
    set_memory_watermark([ALARM_WATERMARK])
    return original
