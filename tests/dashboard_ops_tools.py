"""The agent and page helpers of the dashboard's tool panels' browser test
(tests/test_dashboard_tools_chromium.py): `Toolbox`, an agent with a typed method for the
method console, a mailbox behaviour for direct messages and broadcasts, a topic listener
and a picky behaviour that dead-letters poison; `Page`, small selenium helpers that wait
for what the page shows. The gateway and the browser come from tests/dashboard_tools.py.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import pytest
from dashboard_tools import WAIT

from munggoggo import Agent, AgentConfig, Behaviour, RestartPolicy, Template, expose

Color = Literal["red", "green", "blue"]


class Shade(enum.Enum):
    """An enum the schema carries in `$defs` (a select behind a `$ref`)."""

    LIGHT = "light"
    DARK = "dark"


class Point(msgspec.Struct):
    """A parameter type the schema carries in `$defs` (the form's JSON field)."""

    x: float
    y: float


class Toolbox(Agent):
    """An agent for the tool panels: `mix` (a typed method), `Mailbox` (direct messages and
    broadcasts), `Listener` (a topic) and `Picky` (fails on poison until fixed)."""

    def __init__(self, identity: str, url: str, topic: str, poison_topic: str) -> None:
        super().__init__(identity, url=url, config=AgentConfig(max_redeliveries=1))
        self.topic = topic
        self.poison_topic = poison_topic
        self.calls = 0
        self.received: list[dict[str, Any]] = []  # Mailbox and Listener, in arrival order
        self.handled: list[Any] = []  # Picky's successes
        self.fixed = False

    class Mailbox(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is not None:
                self.agent.received.append(record(self.short_name, msg))

    class Listener(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is not None:
                self.agent.received.append(record(self.short_name, msg))

    class Picky(Behaviour):
        restart_policy = RestartPolicy(initial=0.01, maximum=0.02)

        async def run(self) -> None:
            msg = await self.receive(timeout=0.2)
            if msg is None:
                return
            body = msg.decode()
            if isinstance(body, dict) and "poison" in body and not self.agent.fixed:
                raise RuntimeError(f"cannot digest {body!r}")
            self.agent.handled.append(body)

    async def setup(self) -> None:
        await self.add_behaviour(self.Mailbox(self, template=Template()))
        await self.add_behaviour(self.Listener(self, binding_keys=[self.topic]))
        await self.add_behaviour(self.Picky(self, binding_keys=[self.poison_topic]))

    @expose
    def mix(
        self,
        name: str,
        count: int,
        ratio: float = 0.5,
        loud: bool = False,
        color: Color = "red",
        shade: Shade = Shade.LIGHT,
        tags: list[str] = [],  # noqa: B006 (msgspec copies defaults)
        where: Point | None = None,
    ) -> dict[str, Any]:
        """Mix a batch: echoes what it was given, so the page's params can be checked."""
        self.calls += 1
        return {
            "name": name,
            "count": count,
            "ratio": ratio,
            "loud": loud,
            "color": color,
            "shade": shade.value,
            "tags": tags,
            "where": None if where is None else msgspec.to_builtins(where),
        }


def record(behaviour: str, msg: Any) -> dict[str, Any]:
    """What a test checks of a received message."""
    return {
        "behaviour": behaviour,
        "exchange": msg.exchange,
        "routing_key": msg.routing_key,
        "content_type": msg.content_type,
        "body": msg.decode(),
    }


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll `check` (from the test's thread) until it returns something truthy.

    A guard against hanging, not a speed claim: `timeout` is generous.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def in_loop(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    """Run `coro` on the agents' loop and wait for its value."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=WAIT)


class Page:
    """Selenium helpers for the dashboard page: find by id, type, choose, click, wait."""

    def __init__(self, driver: Any) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.wait = WebDriverWait(
            driver, WAIT, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
        )

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def type(self, css: str, text: str) -> None:
        """Replace the field's text with `text`."""
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def choose(self, css: str, *, value: str | None = None, text: str | None = None) -> None:
        """Pick an option of a select, by value or by visible text."""
        from selenium.webdriver.support.ui import Select

        select = Select(self.find(css))
        if value is not None:
            select.select_by_value(value)
        else:
            assert text is not None
            select.select_by_visible_text(text)

    def click(self, css: str) -> None:
        self.find(css).click()

    def until(self, check: Callable[[], Any], what: str) -> Any:
        """Wait until `check()` is truthy; fail saying `what` otherwise."""
        from selenium.common.exceptions import TimeoutException

        try:
            return self.wait.until(lambda _driver: check())
        except TimeoutException:
            logs = "\n".join(str(e) for e in self.driver.get_log("browser"))
            pytest.fail(f"the page never showed: {what}\nbrowser log:\n{logs}")

    def text(self, css: str) -> str:
        found = self.find_all(css)
        return found[0].text if found else ""

    def submit(self, button: str, outcome: str) -> str:
        """Click `button` and wait for the panel's outcome box (`outcome`) to show a new
        answer; returns its `data-outcome` (result, ok or error)."""
        box = self.find(outcome)
        self.driver.execute_script("arguments[0].removeAttribute('data-outcome')", box)
        self.click(button)
        return self.outcome(outcome)

    def outcome(self, css: str) -> str:
        """The `data-outcome` of a panel's outcome box once it is no longer pending."""

        def settled() -> str | None:
            value = self.find(css).get_attribute("data-outcome")
            return value if value and value != "pending" else None

        return self.until(settled, f"an outcome in {css}")
