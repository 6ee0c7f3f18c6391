"""The browser harness of the dashboard tests: a headless Chromium under selenium
(`open_browser`; the `browser` fixture in conftest.py), `munggoggo gateway` in a subprocess
(`Gateway`), and agents on an event loop of their own in a thread (`AgentThread`) while the
test drives the page: `Blinky` (one behaviour publishing a wave of ticks) and `Thermostat`.

Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`,
done by .ci/setup); when they are missing the test fails and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from munggoggo import Agent, Behaviour, FSMBehaviour, PeriodicBehaviour, State, expose
from munggoggo.gateway.dashboard import dashboard_endpoint
from munggoggo.testing import free_port

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1360,900",
]
BEHAVIOUR = "Blinker"
WAIT = 30.0


def chromium_and_driver() -> tuple[str, str]:
    browser = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "Chromium and chromedriver are needed for the dashboard test and were not found: "
            "run `apt-get install -y chromium chromium-driver` (bash .ci/setup does this)"
        )
    return browser, driver


class Blinky(Agent):
    """An agent with one behaviour that publishes a wave of ticks (for the sparkline)."""

    class Blinker(Behaviour):
        async def setup(self) -> None:
            self.n = 0

        async def run(self) -> None:
            self.n += 1
            burst = 2 + round(6 * (1 + math.sin(self.n / 25)))
            for _ in range(burst):
                await self.publish({"n": self.n, "level": burst}, tick_topic(self.agent.identity))
            await asyncio.sleep(0.1)

    async def setup(self) -> None:
        await self.add_behaviour(self.Blinker(self))

    @expose
    def level(self) -> int:
        return self.behaviour(BEHAVIOUR).n


class Thermostat(Agent):
    """A second agent, so the page lists more than one (and another behaviour kind)."""

    class Report(PeriodicBehaviour):
        async def run(self) -> None:
            await self.publish({"celsius": 21.5}, f"sensors.{self.agent.identity}.temp")

    async def setup(self) -> None:
        await self.add_behaviour(self.Report(self, period=1.0))

    @expose
    def set_target(self, celsius: float) -> float:
        return celsius


def tick_topic(identity: str) -> str:
    return f"dashboard.{identity}.tick"


class AgentThread:
    """An agent on its own event loop in a thread, while the test drives the browser."""

    def __init__(self, agent: Agent, *others: Agent) -> None:
        self.agent = agent
        self.agents = [agent, *others]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> AgentThread:
        self.thread.start()
        for agent in self.agents:
            self.run(agent.start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for agent in self.agents:
                self.run(agent.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=WAIT)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=WAIT)

    def behaviour_state(self, name: str) -> str:
        async def read() -> str:
            return self.agent.behaviour(name).state

        return self.run(read())


def gateway_command(port: int, broker_url: str) -> list[str]:
    """`munggoggo gateway` where it exists, else granian serving `fallback_app` below."""
    probe = subprocess.run(
        [sys.executable, "-m", "munggoggo", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    if probe.returncode == 0 and "--port" in probe.stdout:
        return [
            *(sys.executable, "-m", "munggoggo", "gateway"),
            *("--host", "127.0.0.1", "--port", str(port), "--url", broker_url),
            *("--log-level", "warning"),
        ]
    return [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--working-dir", str(TESTS)),
        *("--log-level", "warning", "dashboard_tools:fallback_app"),
    ]


def fallback_app() -> Any:
    """Only while `munggoggo gateway` does not exist: the dashboard, /ws and the REST
    routes the page calls, around one GatewayState."""
    from munggoggo.gateway.mesh import Mesh
    from munggoggo.gateway.state import GatewaySettings, GatewayState
    from munggoggo.gateway.ws import websocket_endpoint

    states: list[GatewayState] = []
    control = re.compile(r"/agents/([^/]+)/behaviours/([^/]+)/(start|stop)")

    async def respond(send: Any, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                mesh = Mesh(os.environ.get("MUNGGOGGO_URL"))
                await mesh.start()
                states.append(GatewayState(GatewaySettings.from_env(), mesh))
                await send({"type": "lifespan.startup.complete"})
            await states[0].mesh.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
        state = states[0]
        if scope["type"] == "websocket":
            await websocket_endpoint(scope, receive, send, state)
        elif scope["path"] == "/agents":
            await respond(send, 200, await state.mesh.peers())
        elif (match := control.fullmatch(scope["path"])) and scope["method"] == "POST":
            identity, name, action = match.groups()
            try:
                result = await state.mesh.call(identity, f"{action}_behaviour", [name], 5.0)
            except Exception as exc:
                await respond(send, 502, {"error": str(exc)})
                return
            await respond(send, 200, result)
        else:
            await dashboard_endpoint(scope, receive, send, state)

    return app


class Gateway:
    """The gateway in a subprocess on a free port."""

    def __init__(self, broker_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.command = gateway_command(self.port, broker_url)
        self.log_path = log
        env = {**os.environ, "MUNGGOGGO_URL": broker_url, "PYTHONUNBUFFERED": "1"}
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the gateway exited ({self.command}):\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the gateway did not answer on {self.url}:\n{self.output()}")
            time.sleep(0.1)

    def agents(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "agents", timeout=WAIT) as response:
            return json.load(response)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.log.close()


@contextlib.contextmanager
def open_browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium under selenium, with its profile under `tmp_path`; quit after."""
    browser_path, driver_path = chromium_and_driver()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is needed for the dashboard test: pip install --group dev")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


# -- the agent list and detail (tests/test_dashboard_agents_chromium.py) --------------------

DOOR_STATES = ("closed", "open", "locked")


def door_topic(identity: str) -> str:
    """The topic a `Door`'s FSM takes its commands on ("open", "close", "lock")."""
    return f"doors.{identity}.command"


class DoorState(State):
    """A state of the door: it stays (a self-transition) until a command moves it on."""

    def __init__(self, moves: dict[str, str]) -> None:
        super().__init__()
        self.moves = moves  # command -> the state it leads to

    async def run(self) -> None:
        msg = await self.receive(timeout=0.3)
        command = msg.decode() if msg is not None else None
        known = isinstance(command, str) and command in self.moves
        self.set_next_state(self.moves[command] if known else self.name)


class Door(Agent):
    """An agent with an FSM (closed, open, locked; moved by commands on `door_topic`) and a
    periodic behaviour that publishes, so its detail has a graph and traffic to show."""

    class Beacon(PeriodicBehaviour):
        async def run(self) -> None:
            await self.publish({"door": self.agent.identity}, f"doors.{self.agent.identity}.beacon")

    async def setup(self) -> None:
        door = FSMBehaviour(self, binding_keys=[door_topic(self.identity)], name="Door")
        door.add_state("closed", DoorState({"open": "open", "lock": "locked"}), initial=True)
        door.add_state("open", DoorState({"close": "closed"}))
        door.add_state("locked", DoorState({"unlock": "closed"}))
        for source, dest in [
            ("closed", "open"),
            ("open", "closed"),
            ("closed", "locked"),
            ("locked", "closed"),
            *((state, state) for state in DOOR_STATES),
        ]:
            door.add_transition(source, dest)
        await self.add_behaviour(door)
        await self.add_behaviour(self.Beacon(self, period=0.5))


def gateway_counter(url: str, series: str, **labels: str) -> float:
    """The sum of a Prometheus series of the gateway's `/metrics` over the samples whose
    labels include `labels` (0 when there is none)."""
    with urllib.request.urlopen(url + "metrics", timeout=WAIT) as response:
        text = response.read().decode()
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name != series or not all(label in rest for label in wanted):
            continue
        total += float(line.rsplit(" ", 1)[1])
    return total


def agents_listed(url: str) -> int:
    """How many `GET /agents` the gateway at `url` answered (its /metrics)."""
    return round(
        gateway_counter(url, "munggoggo_gateway_requests_total", route="/agents", method="GET")
    )


# Chromium logs every answer >= 400 to a fetch. The page asks each agent that announces
# itself for its status; on a broker shared with other tests some are gone (404) or killed
# (504, 503) before they answer: the page handles that (tests/test_dashboard_agents_chromium.py),
# so those lines are no problem of the page.
_VANISHED_AGENT = re.compile(r"/agents/[^/\s]+ - Failed to load resource: .* (404|503|504) ")


def page_problems(driver: Any) -> list[str]:
    """The browser's SEVERE log lines, except the status asks of agents that vanished."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not _VANISHED_AGENT.search(entry["message"])
    ]
