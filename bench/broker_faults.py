"""Faults made by the broker itself, through rabbitmqctl: for the fault tests and the soak.

Owns the rabbitmqctl calls that hurt a running broker (close a connection by its name,
stop_app / start_app, a memory alarm through the high watermark) and the lock that keeps
two of them apart: anything that stops the broker or moves its watermark holds an
exclusive flock on LOCK_PATH meanwhile, so two such faults never overlap, even across
processes (pytest runs of different engineers, a soak). Everything here blocks (subprocess,
sockets): async callers use asyncio.to_thread or the async lock.

The proxy-level faults (cut, freeze, slow) live in bench/fault_proxy.py.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import subprocess
import time

LOCK_PATH = "/tmp/munggoggo-broker-fault.lock"
WATERMARK_QUERY = "vm_memory_monitor:get_vm_memory_high_watermark()."
ALARM_WATERMARK = "0.0000001"  # far below what any broker uses: the alarm goes off at once
DEFAULT_WATERMARK = ["0.4"]  # RabbitMQ's default


class BrokerFaultLock:
    """Exclusive flock on LOCK_PATH: `with BrokerFaultLock():` or `async with ...`."""

    def __init__(self, path: str = LOCK_PATH) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
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


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run rabbitmqctl (root on the test machines) and return its stdout; raises
    RuntimeError with rabbitmqctl's own message when it fails."""
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def close_named_connection(name: str, reason: str = "fault injection") -> int:
    """Force-close the broker side of every connection whose client-given name (the
    `connection_name` client property; agents use their identity) is `name`; returns how
    many were closed. rabbitmqctl's `name` column is the peer address, not this."""
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


def broker_answers(host: str = "127.0.0.1", port: int = 5672, timeout: float = 2.0) -> bool:
    """True when something on host:port answers the AMQP 0-9-1 header with a method frame
    (Connection.Start): the broker's listener is up, not merely the Erlang node."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def wait_for_broker(host: str = "127.0.0.1", port: int = 5672, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not broker_answers(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"RabbitMQ at {host}:{port} did not answer within {timeout:g}s")
        time.sleep(0.2)


def stop_app() -> None:
    rabbitmqctl("stop_app", timeout=120)


def start_app(host: str = "127.0.0.1", port: int = 5672) -> None:
    """start_app, then wait until the listener answers again."""
    rabbitmqctl("start_app", timeout=120)
    wait_for_broker(host, port)


def memory_watermark() -> list[str]:
    """The current vm_memory_high_watermark as set_vm_memory_high_watermark arguments
    (`["0.4"]` or `["absolute", "1073741824"]`), so it can be put back exactly."""
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
    rabbitmqctl("set_vm_memory_high_watermark", *args)


def memory_alarm_on() -> list[str]:
    """Raise the memory alarm (a watermark far below what the broker uses); returns the
    watermark to restore with set_memory_watermark()."""
    original = memory_watermark()
    if original == [ALARM_WATERMARK]:
        # Left behind by a run that was killed before it could restore: the real value
        # is unknown, RabbitMQ's default is the best guess (and ends the alarm).
        original = DEFAULT_WATERMARK
    set_memory_watermark([ALARM_WATERMARK])
    return original
