"""The dashboard: gateway/dashboard.py's file serving (in memory, no broker), and the page in
a real headless Chromium against a running gateway with a real agent.

The browser test starts `munggoggo gateway` on a free port (or, where that command does
not exist, a minimal ASGI app of the dashboard, /ws and the REST routes the page calls,
served by granian), runs an agent with a behaviour in a thread of this process, clicks the
behaviour's Stop and Start buttons and checks both the page and the agent.
Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`,
done by .ci/setup); when they are missing the test fails and says so.
`DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard_chromium.py` refreshes
the README's screenshot.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from munggoggo import Agent, Behaviour, PeriodicBehaviour, expose
from munggoggo.gateway import dashboard
from munggoggo.gateway.dashboard import dashboard_endpoint

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


# -- file serving (in memory) ------------------------------------------------------------


async def get(path: str, method: str = "GET", headers=(), root_path: str = "") -> Any:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await dashboard_endpoint(scope, receive, send, None)
    start, body = sent
    response = {k.decode(): v.decode() for k, v in start["headers"]}
    response["status"] = start["status"]
    response["body"] = body["body"]
    return response


async def test_index_page_links_only_its_own_files():
    page = await get("/")
    assert page["status"] == 200
    assert page["content-type"] == "text/html; charset=utf-8"
    html = page["body"].decode()
    assert '<canvas id="sparkline"' in html
    assert "static/dashboard.js" in html and "static/dashboard.css" in html
    assert "http://" not in html and "https://" not in html  # no CDN, no external fonts
    for asset in ("dashboard.js", "dashboard.css"):
        text = (await get(f"/static/{asset}"))["body"].decode()
        assert not re.search(r"https?://|@import|url\(", text), asset


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
        ("index.html", "text/html; charset=utf-8"),
    ],
)
async def test_static_files_have_their_content_type(name, content_type):
    response = await get(f"/static/{name}")
    assert response["status"] == 200
    assert response["content-type"] == content_type
    assert response["body"] == (dashboard.STATIC_ROOT / name).read_bytes()
    assert int(response["content-length"]) == len(response["body"])
    assert response["x-content-type-options"] == "nosniff"


async def test_caching_headers_and_revalidation():
    page = await get("/")
    assert page["cache-control"] == "no-cache"
    asset = await get("/static/dashboard.js")
    assert asset["cache-control"].startswith("public, max-age=")
    etag = asset["etag"]
    assert etag.startswith('"') and etag != page["etag"]
    again = await get("/static/dashboard.js", headers=[("if-none-match", etag)])
    assert again["status"] == 304 and again["body"] == b"" and again["etag"] == etag
    weak = await get("/static/dashboard.js", headers=[("if-none-match", f'"x", W/{etag}')])
    assert weak["status"] == 304
    other = await get("/static/dashboard.js", headers=[("if-none-match", '"stale"')])
    assert other["status"] == 200 and other["body"]


async def test_head_and_other_methods():
    head = await get("/static/dashboard.css", method="HEAD")
    assert head["status"] == 200 and head["body"] == b""
    assert int(head["content-length"]) == len(
        (dashboard.STATIC_ROOT / "dashboard.css").read_bytes()
    )
    post = await get("/", method="POST")
    assert post["status"] == 405 and post["allow"] == "GET, HEAD"


async def test_behind_a_path_prefix():
    response = await get("/gw/static/dashboard.js", root_path="/gw")
    assert response["status"] == 200 and response["content-type"].startswith("text/javascript")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../state.py",
        "/static/../../core/agent.py",
        "/static/./dashboard.js",
        "/static/sub/../dashboard.js",
        "/static//etc/passwd",
        "/static/%2e%2e/state.py",
        "/static/..\\state.py",
        "/static/.hidden",
        "/static/",
        "/static/nope.js",
        "/static/dashboard.js\x00.png",
        "/elsewhere",
    ],
)
async def test_no_path_traversal(path):
    response = await get(path)
    assert response["status"] == 404
    assert response["body"] == b"not found\n"


async def test_a_symlink_out_of_the_static_folder_is_not_followed(tmp_path, monkeypatch):
    static = tmp_path / "static"
    static.mkdir()
    (static / "ok.txt").write_text("fine")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (static / "leak.txt").symlink_to(secret)
    monkeypatch.setattr(dashboard, "STATIC_ROOT", static.resolve())
    assert (await get("/static/ok.txt"))["body"] == b"fine"
    assert (await get("/static/leak.txt"))["status"] == 404


# -- the page in Chromium ---------------------------------------------------------------------

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        *("--log-level", "warning", "test_dashboard_chromium:fallback_app"),
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


@pytest.fixture
def gateway(broker_url, tmp_path):
    gw = Gateway(broker_url, tmp_path / "gateway.log")
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def browser(tmp_path):
    browser_path, driver_path = chromium_and_driver()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is needed for the dashboard test: pip install -e '.[dev]'")
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


@pytest.mark.rabbitmq
def test_dashboard_stops_and_starts_a_behaviour_in_chromium(broker_url, gateway, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    identity = f"blinky-{uuid.uuid4().hex[:6]}"
    thermostat = Thermostat(f"thermostat-{uuid.uuid4().hex[:6]}", url=broker_url)
    with AgentThread(Blinky(identity, url=broker_url), thermostat) as agent:
        deadline = time.monotonic() + WAIT
        while not any(a["identity"] == identity for a in gateway.agents()):
            if time.monotonic() > deadline:  # a guard against hanging, not a speed claim
                pytest.fail(f"{identity} never showed up in GET /agents")

        browser.get(gateway.url)
        wait = WebDriverWait(
            browser, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        )
        row = f'[data-agent="{identity}"] tr[data-behaviour="{BEHAVIOUR}"]'

        def page_state(driver: Any) -> str:
            return driver.find_element(By.CSS_SELECTOR, f"{row} .state").text

        def click(action: str) -> None:
            def clicked(driver: Any) -> bool:
                driver.find_element(
                    By.CSS_SELECTOR, f'{row} button[data-action="{action}"]'
                ).click()
                return True

            wait.until(clicked, f"no {action} button for {BEHAVIOUR}")

        wait.until(lambda d: page_state(d) == "running", "the behaviour never showed as running")
        methods = browser.find_element(By.CSS_SELECTOR, f'[data-agent="{identity}"] .methods')
        assert methods.text == "methods: level"  # the control plane is not listed
        assert agent.behaviour_state(BEHAVIOUR) == "running"

        click("stop")
        wait.until(lambda d: page_state(d) == "stopped", "the page never showed it stopped")
        assert agent.behaviour_state(BEHAVIOUR) == "stopped"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row} [data-action="start"]'))

        click("start")
        wait.until(lambda d: page_state(d) == "running", "the page never showed it running")
        assert agent.behaviour_state(BEHAVIOUR) == "running"

        # The live stream (subscribed to "#" over /ws) shows the agent's ticks, and the
        # sparkline has counted them.
        tick = f'#stream tr[data-topic="{tick_topic(identity)}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, tick), "no ticks in the stream")
        assert browser.find_element(By.ID, "connection").text == "live"
        # A screenshot for the README waits for a fuller sparkline.
        seconds = 45 if os.environ.get("DASHBOARD_SCREENSHOT") else 5
        WebDriverWait(browser, WAIT + seconds).until(
            lambda d: (
                d.execute_script("return throughput.buckets.filter(v => v > 0).length") >= seconds
            ),
            f"the sparkline never got {seconds} seconds of traffic",
        )
        screenshot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copyfile(screenshot, REPO / os.environ["DASHBOARD_SCREENSHOT"])

        problems = [
            entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
        ]
        assert problems == [], problems
