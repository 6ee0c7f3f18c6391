"""`python -m bench dashboards`: the Grafana dashboards drawn from real data.

Runs a small loaded mesh for `--minutes`: a producer agent, a worker agent with two
behaviours (one meets a poison message now and then: retries, dead letters), an RPC caller
and a calculator, all serving `/metrics` from this process; `munggoggo gateway --workers 2`
in a subprocess, driven with REST and JSON-RPC calls, and two WebSocket clients (one reads
too slowly and loses messages). A throwaway Prometheus (Debian's `prometheus`) scrapes
everything each second; then every panel of grafana/dashboards/*.json is drawn from its own
PromQL (bench/dashboards/render.py) into docs/grafana-*.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from munggoggo.testing import free_port

from ..common import broker_url, progress

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="broker URL (default: local RabbitMQ)")
    p.add_argument("--minutes", type=float, default=3.0, help="how long the mesh runs")
    p.add_argument("--rate", type=int, default=2000, help="work messages per second")
    p.add_argument("--out", default=str(ROOT / "docs"), help="directory for the PNGs")
    p.add_argument("--prometheus", default="prometheus", help="the prometheus binary")


def main(args: argparse.Namespace) -> int:
    binary = shutil.which(args.prometheus)
    if binary is None:
        progress(f"no {args.prometheus!r} on PATH: `apt-get install prometheus` (Debian)")
        return 2
    import logging

    from munggoggo.client import install_uvloop

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The poison messages are on purpose: their tracebacks would bury the bench's output.
    logging.getLogger("munggoggo.behaviour").setLevel(logging.CRITICAL)
    install_uvloop()
    return asyncio.run(_main(args, binary))


async def _main(args: argparse.Namespace, binary: str) -> int:
    from munggoggo.metrics import serve_metrics

    from .render import Prometheus, render

    url = broker_url(args.url)
    agent_port, gateway_port, prom_port = free_port(), free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="munggoggo-dashboards-"))
    metrics_server = serve_metrics(agent_port, addr="127.0.0.1")
    (workdir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
        f"  - job_name: agents\n    static_configs:\n"
        f'      - targets: ["127.0.0.1:{agent_port}"]\n'
        f"  - job_name: gateway\n    static_configs:\n"
        f'      - targets: ["127.0.0.1:{gateway_port}"]\n'
    )
    log = (workdir / "processes.log").open("wb")
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # A small WebSocket buffer so the slow client's losses show within minutes.
    env = dict(os.environ, PYTHONUNBUFFERED="1", MUNGGOGGO_GATEWAY_WS_BUFFER="50")
    gateway = subprocess.Popen(
        [
            *(sys.executable, "-m", "munggoggo", "gateway", "--port", str(gateway_port)),
            *("--workers", "2", "--url", url, "--log-level", "warning"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        mesh = LoadedMesh(url, args.rate)
        async with mesh:
            await wait_http(f"http://127.0.0.1:{gateway_port}/readyz", gateway)
            start = time.time()
            progress(f"mesh and gateway loaded for {args.minutes:g} min; prometheus :{prom_port}")
            async with asyncio.TaskGroup() as tg:
                stop = asyncio.Event()
                tg.create_task(mesh.produce(stop))
                tg.create_task(mesh.call_calculator(stop))
                tg.create_task(drive_gateway(gateway_port, mesh, stop))
                tg.create_task(websocket_clients(gateway_port, mesh, stop))
                await asyncio.sleep(args.minutes * 60)
                stop.set()
            end = time.time()
            await asyncio.sleep(2)  # the last scrape
        prometheus = Prometheus(f"http://127.0.0.1:{prom_port}")
        up = prometheus.targets_up()
        if sorted(up.values()) != [1.0, 1.0]:
            progress(f"a scrape target is down: {up}")
            return 1
        out = Path(args.out)
        for path in sorted(DASHBOARDS.glob("*.json")):
            import json

            target = out / f"grafana-{path.stem}.png"
            drawn = render(json.loads(path.read_text()), prometheus, start, end, target)
            empty = [title for title, n in drawn.items() if n == 0]
            progress(f"{target}: {len(drawn)} panels, empty: {empty or 'none'}")
        progress(f"mesh: {mesh.summary()}")
        return 0
    finally:
        for proc in (gateway, prom):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()
        metrics_server.shutdown()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import httpx

    async with httpx.AsyncClient() as http, asyncio.timeout(timeout):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)


class LoadedMesh:
    """The agents of this bench and the traffic between them."""

    def __init__(self, url: str, rate: int) -> None:
        from munggoggo import Agent, AgentConfig, Behaviour, expose

        tag = uuid.uuid4().hex[:6]
        self.url = url
        self.rate = rate
        self.work_topic = f"dash.work.{tag}"
        self.check_topic = f"dash.check.{tag}"
        self.events_topic = f"dash.events.{tag}"

        class Calculator(Agent):
            @expose
            async def mul(self, a: int, b: int) -> int:
                return a * b

            @expose
            async def slow_mul(self, a: int, b: int) -> int:
                await asyncio.sleep(0.005)
                return a * b

        class Counting(Behaviour):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, **kw)
                self.seen = 0

            async def run(self) -> None:
                if await self.receive(timeout=0.1) is not None:
                    self.seen += 1

        class Checking(Behaviour):
            """Every 500th message is poison: retried once, then dead-lettered."""

            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, **kw)
                self.seen = 0

            async def run(self) -> None:
                msg = await self.receive(timeout=0.1)
                if msg is None:
                    return
                self.seen += 1
                if msg.body.endswith(b"!"):
                    raise ValueError("poison message (on purpose)")
                await asyncio.sleep(0.0002)  # some work, so the step histogram says something

        self.calculator = Calculator(f"dash-calculator-{tag}", url=url)
        self.producer = Agent(f"dash-producer-{tag}", url=url)
        self.worker = Agent(f"dash-worker-{tag}", url=url, config=AgentConfig(max_redeliveries=1))
        self.caller = Agent(f"dash-caller-{tag}", url=url)
        self._counting = Counting(self.worker, binding_keys=[self.work_topic], name="count")
        self._checking = Checking(self.worker, binding_keys=[self.check_topic], name="check")
        self.published = 0
        self.calls = 0
        self.errors = 0

    async def __aenter__(self) -> LoadedMesh:
        for agent in (self.calculator, self.producer, self.worker, self.caller):
            await agent.start()
        await self.worker.add_behaviour(self._counting)
        await self.worker.add_behaviour(self._checking)
        return self

    async def __aexit__(self, *exc: object) -> None:
        from munggoggo.deadletters import DeadLetters

        # The poison messages were ours: leave the shared dead-letter queue as we found it.
        with contextlib.suppress(Exception):
            await DeadLetters(self.worker.connection).purge(all=True, agent=self.worker.identity)
        queues = [b.queue for b in (self._counting, self._checking) if b.queue]
        for agent in (self.caller, self.producer, self.worker, self.calculator):
            await agent.stop()
        # Behaviour queues outlive their agent (for a successor): this bench has none.
        from munggoggo.client import Connection

        async with Connection(self.url, reconnect=False) as admin:
            ch = await admin.channel(confirms=False)
            for queue in queues:
                await ch.queue_delete(queue)

    async def keep_going(self, stop: asyncio.Event, step: Any) -> None:
        """Run `step` until `stop`; a failure (the broker went away, say) is counted and
        shows on the dashboards, it does not end the bench."""
        while not stop.is_set():
            try:
                await step()
            except Exception:
                self.errors += 1
                await asyncio.sleep(0.2)

    async def produce(self, stop: asyncio.Event) -> None:
        """`rate` work messages a second in ticks of 10 ms, 1 in 10 also to the checker,
        1 in 5000 of those poisoned, and a few events for the WebSocket clients."""
        per_tick = max(1, self.rate // 100)

        async def tick() -> None:
            for _ in range(per_tick):
                n = self.published = self.published + 1
                await self.producer.publish(str(n), self.work_topic)
                if n % 10 == 0:
                    body = f"{n}!" if n % 5000 == 0 else str(n)
                    await self.producer.publish(body, self.check_topic)
                if n % 20 == 0:
                    await self.producer.publish({"n": n}, self.events_topic)
            await asyncio.sleep(0.01)

        await self.keep_going(stop, tick)

    async def call_calculator(self, stop: asyncio.Event) -> None:
        async def call() -> None:
            self.calls += 1
            await self.caller.call(self.calculator.identity, "mul", self.calls, 3)
            if self.calls % 10 == 0:
                await self.caller.call(self.calculator.identity, "slow_mul", self.calls, 3)
            await asyncio.sleep(0.005)

        await self.keep_going(stop, call)

    def summary(self) -> str:
        return (
            f"published {self.published} work messages, {self.calls} RPC calls; worker saw "
            f"{self._counting.seen} + {self._checking.seen}; {self.errors} errors in the loops"
        )


async def drive_gateway(port: int, mesh: LoadedMesh, stop: asyncio.Event) -> None:
    """REST and JSON-RPC calls through the gateway, a 404 now and then; 8 clients."""
    import httpx

    calc = mesh.calculator.identity

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            i = 0

            async def request() -> None:
                nonlocal i
                i += 1
                if i % 3:
                    await http.post(f"/agents/{calc}/call/mul", json=[i, k])
                else:
                    rpc = {"jsonrpc": "2.0", "method": f"{calc}.slow_mul", "params": [i, k]}
                    await http.post("/jsonrpc", json={**rpc, "id": i})
                if i % 50 == 0:
                    await http.get(f"/agents/nobody-{k}")  # an unknown agent: 404
                await asyncio.sleep(0.01)

            await mesh.keep_going(stop, request)

    await asyncio.gather(*(client(k) for k in range(8)))


async def websocket_clients(port: int, mesh: LoadedMesh, stop: asyncio.Event) -> None:
    """One client reads everything; one reads a frame a second and loses most."""
    import json

    import websockets

    async def client(delay: float) -> None:
        async def session() -> None:
            # A small receive buffer, so a slow reader backs up into the gateway soon;
            # no keepalive pings, which a client that does not read would fail.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws", sock=sock, max_queue=1, ping_interval=None
            ) as ws:
                await ws.send(json.dumps({"op": "subscribe", "topic": mesh.events_topic}))
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.5)
                    if delay:
                        await asyncio.sleep(delay)

        await mesh.keep_going(stop, session)

    await asyncio.gather(client(0.0), client(1.0))
