"""The dashboard on a gateway with tokens, in headless Chromium: the page itself is open, its
API calls and its WebSocket need the token. Without one the page asks for it; with one
(typed into that form, or given as `#token=...` in the address) it lists the agents and
streams their messages. Uses the gateway subprocess and agent thread of
tests/dashboard_tools.py and the `browser` fixture.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from dashboard_tools import WAIT, AgentThread, Blinky, Gateway, tick_topic

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

TOKEN = "dash-" + uuid.uuid4().hex


@pytest.fixture
def secured_gateway(broker_url, tmp_path, monkeypatch):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    tokens.chmod(0o600)
    monkeypatch.setenv("MUNGGOGGO_GATEWAY_TOKENS_FILE", str(tokens))
    gw = Gateway(broker_url, tmp_path / "gateway.log")
    try:
        gw.wait_ready()  # the page answers without a token
        yield gw
    finally:
        gw.stop()


def test_the_dashboard_asks_for_the_token_and_then_works(
    broker_url,
    secured_gateway,
    browser,
):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gateway = secured_gateway
    identity = f"blinky-{uuid.uuid4().hex[:6]}"
    wait = WebDriverWait(
        browser, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )
    agent_card = f'[data-agent="{identity}"]'
    ticks = f'#stream tr[data-topic="{tick_topic(identity)}"]'

    def shown(css: str) -> Any:
        return lambda d: d.find_elements(By.CSS_SELECTOR, css)

    with AgentThread(Blinky(identity, url=broker_url)):
        browser.get(gateway.url)
        form = browser.find_element(By.ID, "token-form")
        wait.until(lambda d: form.is_displayed(), "the page never asked for a token")
        assert browser.find_element(By.ID, "token-label").text == "this gateway needs a token"
        wait.until(
            lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "closed",
            "the socket without a token was not refused",
        )
        assert not browser.find_elements(By.CSS_SELECTOR, agent_card)

        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait.until(shown(agent_card), "the agent never showed up after the token was given")
        wait.until(lambda d: d.find_element(By.ID, "connection").text == "live", "no socket")
        wait.until(shown(ticks), "no messages in the stream")
        assert not form.is_displayed()

        # A fresh start: the token in the address fragment, taken out of it at once.
        browser.execute_script("sessionStorage.clear()")
        browser.get("about:blank")
        browser.get(gateway.url + f"#token={TOKEN}")
        wait.until(shown(agent_card), "the agent never showed up with #token=")
        assert TOKEN not in browser.current_url
        wait.until(shown(ticks), "no messages in the stream with #token=")
        assert not browser.find_element(By.ID, "token-form").is_displayed()

        # A wrong token pasted into the open page's address is refused and the page says so.
        browser.execute_script("location.hash = 'token=not-the-token'")
        wait.until(
            lambda d: d.find_element(By.ID, "token-label").text == "that token was not accepted",
            "a wrong token was not reported",
        )
    assert TOKEN not in gateway.output()
