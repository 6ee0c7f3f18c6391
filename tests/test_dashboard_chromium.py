"""The dashboard: gateway/dashboard.py's file serving (in memory, no broker), and the page in
a real headless Chromium against a running gateway with a real agent.

The browser test starts `munggoggo gateway` on a free port (or, where that command does
not exist, a minimal ASGI app of the dashboard, /ws and the REST routes the page calls,
served by granian), runs an agent with a behaviour in a thread of this process, clicks the
behaviour's Stop and Start buttons and checks both the page and the agent (the harness is
tests/dashboard_tools.py). Chromium and chromedriver come from Debian (`apt-get install
chromium chromium-driver`, done by .ci/setup); when they are missing the test fails and
says so.
`DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard_chromium.py` refreshes
the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dashboard_tools import (
    BEHAVIOUR,
    WAIT,
    AgentThread,
    Blinky,
    Gateway,
    Thermostat,
    page_problems,
    tick_topic,
)

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


@pytest.fixture
def gateway_server(broker_url, tmp_path):
    """`munggoggo gateway` in a subprocess on a free port, ready."""
    gw = Gateway(broker_url, tmp_path / "gateway.log")
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


@pytest.mark.rabbitmq
def test_dashboard_stops_and_starts_a_behaviour_in_chromium(
    broker_url, gateway_server, browser, tmp_path
):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    identity = f"blinky-{uuid.uuid4().hex[:6]}"
    thermostat = Thermostat(f"thermostat-{uuid.uuid4().hex[:6]}", url=broker_url)
    with AgentThread(Blinky(identity, url=broker_url), thermostat) as agent:
        deadline = time.monotonic() + WAIT
        while not any(a["identity"] == identity for a in gateway_server.agents()):
            if time.monotonic() > deadline:  # a guard against hanging, not a speed claim
                pytest.fail(f"{identity} never showed up in GET /agents")

        browser.get(gateway_server.url)
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

        problems = page_problems(browser)
        assert problems == [], problems
