"""`--health-port`: /livez and /readyz of agents on the real RabbitMQ.

Ready once started; 503 naming the connection while the broker cannot be reached (through
munggoggo.testing.fault_proxy: new connections refused, the current one cut); ready again after the
recovery; 503 naming the behaviour when the broker cancels its consumer; /livez 200 all
along. Then the CLI: `munggoggo run --health-port` in a subprocess (with a failover list
whose first URL is dead), and the start-up errors for a port in use or out of range.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from munggoggo import Agent, Behaviour
from munggoggo.client import Connection
from munggoggo.health import HealthServer
from munggoggo.testing import FaultProxy, free_port
from munggoggo.url import parse_url

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

TESTS_DIR = Path(__file__).resolve().parent


class Listener(Agent):
    class Listen(Behaviour):
        async def run(self) -> None:
            await self.receive(timeout=0.2)

    async def setup(self) -> None:
        await self.add_behaviour(self.Listen(self, binding_keys=[f"health.{self.identity}"]))


async def probe(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


async def wait_status(port: int, path: str, status: int, timeout: float = 20) -> httpx.Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            response = await probe(port, path)
            if response.status_code == status or loop.time() > deadline:
                return response
        except httpx.TransportError:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def test_ready_after_start_not_ready_while_the_broker_is_away(broker_url):
    upstream = parse_url(broker_url)
    health = HealthServer(0, addr="127.0.0.1")
    async with FaultProxy(upstream=(upstream.host, upstream.port)) as proxy:
        agent = Listener(
            f"health-{uuid.uuid4().hex[:6]}", url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        )
        await health.start([agent])
        try:
            before = await probe(health.port, "/readyz")
            assert before.status_code == 503
            assert before.json() == {"ready": False, "agents": {agent.identity: [
                f"agent {agent.identity} is created"]}}  # fmt: skip
            await agent.start()
            ready = await probe(health.port, "/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"ready": True, "agents": {agent.identity: []}}
            assert ready.headers["content-type"] == "application/json"

            proxy.refuse()  # the recovery cannot get back in until accept()
            assert proxy.cut() == 1
            down = await wait_status(health.port, "/readyz", 503)
            assert down.status_code == 503
            assert down.json()["agents"][agent.identity] == [
                f"agent {agent.identity}: connection to {agent.url} is recovering"
            ]
            assert (await probe(health.port, "/livez")).status_code == 200
            assert (await probe(health.port, "/livez")).json() == {"alive": True}

            await proxy.accept()
            again = await wait_status(health.port, "/readyz", 200)
            assert again.status_code == 200, again.text
            assert agent.connection.reconnects == 1
        finally:
            await agent.stop()
        stopped = await probe(health.port, "/readyz")
        assert stopped.status_code == 503
        assert stopped.json()["agents"][agent.identity] == [f"agent {agent.identity} is stopped"]
        assert (await probe(health.port, "/livez")).status_code == 200
    health.close()


async def test_a_consumer_cancelled_by_the_broker_is_restored_and_ready_again(broker_url):
    """Deleting a behaviour's queue makes the broker cancel its consumer: the agent consumes
    again (not ready meanwhile: tests/test_consumer_restore.py catches that window) and
    /readyz says 200 once it does."""
    health = HealthServer(0, addr="127.0.0.1")
    async with Listener(f"health-{uuid.uuid4().hex[:6]}", url=broker_url) as agent:
        await health.start([agent])
        assert (await probe(health.port, "/readyz")).status_code == 200
        before = dict(agent.consumers())["Listen"]
        async with Connection(broker_url) as other:
            ch = await other.channel()
            await ch.queue_delete(f"{agent.identity}.Listen")
        for _ in range(400):
            if agent.consumers().get("Listen", before) != before:
                break
            await asyncio.sleep(0.05)
        assert agent.consumers()["Listen"] != before, "never consumed again"
        up = await wait_status(health.port, "/readyz", 200)
        assert up.status_code == 200
    health.close()


async def test_other_requests_get_clear_answers():
    health = HealthServer(0, addr="127.0.0.1")
    await health.start([])
    try:
        assert (await probe(health.port, "/nope")).status_code == 404
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"http://127.0.0.1:{health.port}/livez")).status_code == 405
            head = await http.head(f"http://127.0.0.1:{health.port}/readyz?verbose=1")
            assert head.status_code == 200 and head.content == b""
        reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
        writer.write(b"GET /livez HTTP/1.1\r\nX-Junk: " + b"a" * 20000 + b"\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        writer.close()
    finally:
        health.close()


# -- the command line ---------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH")) if p)
    return env


async def test_munggoggo_run_serves_probes_with_a_failover_list(broker_url, tmp_path):
    """`munggoggo run --health-port` behind a failover list whose first URL is dead: one
    log line for that URL (without its password), ready on the second, drains on SIGTERM."""
    port, secret = free_port(), "Pr0be-s3cret"
    urls = f"amqp://guest:{secret}@127.0.0.1:{free_port()}/,{broker_url}"
    identity = f"health-cli-{uuid.uuid4().hex[:6]}"
    err = tmp_path / "stderr"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "munggoggo", "--url", urls, "run", "process_agents:Worker",
             "--identity", identity, "--health-port", str(port)],
            cwd=TESTS_DIR, env=cli_env(), stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        ready = await wait_status(port, "/readyz", 200)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "agents": {identity: []}}
        assert (await probe(port, "/livez")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = err.read_text()
    failed = [line for line in log.splitlines() if "failed" in line]
    assert len(failed) == 1 and "broker URL 1 of 2 failed: cannot connect to" in failed[0], log
    assert secret not in log
    assert f"agent {identity} running on {parse_url(broker_url)}" in log


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "munggoggo", "--url", "memory://health", *args],
        capture_output=True, text=True, timeout=30, check=False, cwd=TESTS_DIR, env=cli_env(),
    )  # fmt: skip


COMMANDS = [["run", "process_agents:Idle"], ["demo", "--seconds", "5"]]


@pytest.mark.parametrize("command", COMMANDS, ids=["run", "demo"])
def test_a_health_port_in_use_stops_the_command_with_one_line(command):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(*command, "--health-port", str(port))
    assert result.returncode == 1
    # One line: our sentence naming the address, then the operating system's own reason.
    assert result.stderr.splitlines() == [
        f"munggoggo {command[0]}: cannot serve health checks on 0.0.0.0:{port}: "
        + os.strerror(errno.EADDRINUSE)
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=["run", "demo"])
@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_health_port_out_of_range_stops_the_command_with_one_line(command, port):
    result = run_cli(*command, "--health-port", port)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"munggoggo {command[0]}: cannot serve health checks on port {port}: ports are 0-65535"
    ]
