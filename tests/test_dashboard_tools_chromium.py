"""The dashboard's tool panels in a real headless Chromium against `munggoggo gateway`: the
method console (a form generated from a method's JSON Schema, raw JSON, the JSON-RPC error),
send and publish (an agent's inbox, a topic, a broadcast; JSON and text bodies) and the
dead letters (list, inspect, requeue, purge with the panel's own confirmation).

One gateway, one browser and one agent (`Toolbox`, tests/dashboard_ops_tools.py) for the
whole module; each test reloads the page. What the page claims is checked in the agent too
(what it received, what its method was called with, what is left in the dead-letter queue).
The dead-letter test works only on its agent's letters and purges them at the end, so the
shared `munggoggo.dead-letters` is left as found.
`DASHBOARD_TOOLS_SCREENSHOT=docs/dashboard-tools.png pytest tests/test_dashboard_tools_chromium.py`
refreshes the README's picture of the panels.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_ops_tools import Page, Toolbox, eventually
from dashboard_tools import AgentThread, Gateway, Thermostat, open_browser
from mesh_tools import uid

from munggoggo.deadletters import DeadLetters
from munggoggo.gateway import dashboard
from munggoggo.wire import REASON_HEADER

REPO = Path(__file__).resolve().parent.parent
TOOL_ASSETS = ("console.js", "messaging.js", "deadletters.js", "tools.css")


def test_the_tool_panels_load_only_the_pages_own_files():
    page = (dashboard.STATIC_ROOT / "index.html").read_text()
    assert '<link rel="stylesheet" href="static/tools.css">' in page
    for section in ("console-panel", "send-panel", "dead-letters-panel"):
        assert f'id="{section}"' in page
    # The page's Content-Security-Policy (default-src 'self') allows no inline script or
    # style and nothing from elsewhere.
    assert not re.search(r"<script>|<style|\sstyle=|\son[a-z]+=", page)
    for asset in TOOL_ASSETS:
        text = (dashboard.STATIC_ROOT / asset).read_text()
        assert not re.search(r"https?://|@import|url\(", text), asset
        # The purge's confirmation is the panel's own (a test can drive it), no dialog.
        assert not re.search(r"\b(confirm|alert|prompt)\(", text), asset


@pytest.fixture(scope="module")
def gateway(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(broker_url, tmp_path_factory.mktemp("gateway") / "gateway.log")
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def toolbox(broker_url: str, gateway: Gateway) -> Iterator[AgentThread]:
    agent = Toolbox(uid("toolbox"), broker_url, uid("tools.topic"), uid("tools.poison"))
    with AgentThread(agent) as thread:
        try:
            eventually(
                lambda: any(a["identity"] == agent.identity for a in gateway.agents()),
                f"{agent.identity} in GET /agents",
            )
            yield thread
        finally:
            thread.run(DeadLetters(agent.connection).purge(all=True, agent=agent.identity))


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_browser(tmp_path_factory.mktemp("browser")) as browser:
        yield browser


@pytest.fixture
def page(driver: Any, gateway: Gateway, toolbox: AgentThread) -> Page:
    driver.get(gateway.url)
    page = Page(driver)
    identity = toolbox.agent.identity
    for select in ("#console-agent", "#send-agent"):
        page.until(
            lambda s=select: page.find_all(f'{s} option[value="{identity}"]'),
            f"{identity} offered in {select}",
        )
    return page


def agent_of(thread: AgentThread) -> Toolbox:
    agent = thread.agent
    assert isinstance(agent, Toolbox)
    return agent


# -- the method console -------------------------------------------------------------------


def choose_method(page: Page, identity: str, method: str) -> None:
    page.choose("#console-agent", value=identity)
    page.until(lambda: page.find_all(f'#console-method option[value="{method}"]'), method)
    page.choose("#console-method", value=method)


@pytest.mark.rabbitmq
def test_console_calls_a_typed_method_through_the_generated_form(page, toolbox):
    agent = agent_of(toolbox)
    calls = agent.calls
    choose_method(page, agent.identity, "mix")
    methods = [o.get_attribute("value") for o in page.find_all("#console-method option")]
    assert methods.index("mix") < methods.index("ping")  # own methods before the control plane
    assert "Mix a batch" in page.text("#console-doc")

    widgets = {
        name: page.find(f"#console-field-{name}").get_attribute("data-widget")
        for name in ("name", "count", "ratio", "loud", "color", "shade", "tags", "where")
    }
    assert widgets == {
        "name": "string",
        "count": "integer",
        "ratio": "number",
        "loud": "boolean",
        "color": "enum",
        "shade": "enum",  # behind a $ref into $defs
        "tags": "list",
        "where": "json",  # a Struct in $defs, behind a $ref and Optional
    }
    assert page.find_all('[data-field="name"] .required')
    assert page.find_all('[data-field="count"] .required')
    assert not page.find_all('[data-field="ratio"] .required')
    assert "default 0.5" in page.text('[data-field="ratio"] .hint')

    # Checked before sending: a missing required name, a count that is no integer.
    page.type("#console-field-count", "2.5")
    page.click("#console-call")
    page.until(lambda: page.text("#console-invalid"), "the form's refusal")
    assert page.text('[data-field="name"] .field-error') == "required"
    assert "integer" in page.text('[data-field="count"] .field-error')
    assert agent.calls == calls
    assert page.find("#console-outcome").get_attribute("data-outcome") is None

    page.type("#console-field-name", "batch-1")
    page.type("#console-field-count", "3")
    page.type("#console-field-ratio", "0.25")
    page.choose("#console-field-loud", text="true")
    page.choose("#console-field-color", text="green")
    page.choose("#console-field-shade", text="dark")
    page.type("#console-field-tags", "a\nb")
    page.type("#console-field-where", '{"x": 1, "y": 2.5}')
    assert page.submit("#console-call", "#console-outcome") == "result"
    assert page.text("#console-invalid") == ""
    assert json.loads(page.text("#console-result")) == {
        "name": "batch-1",
        "count": 3,
        "ratio": 0.25,
        "loud": True,
        "color": "green",
        "shade": "dark",
        "tags": ["a", "b"],
        "where": {"x": 1.0, "y": 2.5},
    }
    assert re.fullmatch(r"\d+ ms", page.text("#console-time"))
    assert agent.calls == calls + 1
    if os.environ.get("DASHBOARD_TOOLS_SCREENSHOT"):
        # The README's picture of the tool panels, with this call's answer in the console.
        size = page.driver.get_window_size()
        page.driver.set_window_size(size["width"], 2000)  # all three panels in view
        try:
            panels = page.find("main.tools")
            page.driver.execute_script("arguments[0].scrollIntoView(true);", panels)
            panels.screenshot(str(REPO / os.environ["DASHBOARD_TOOLS_SCREENSHOT"]))
        finally:
            page.driver.set_window_size(size["width"], size["height"])


@pytest.mark.rabbitmq
def test_console_raw_json_and_the_json_rpc_error(page, toolbox):
    agent = agent_of(toolbox)
    calls = agent.calls
    choose_method(page, agent.identity, "mix")
    page.type("#console-field-name", "x")
    page.type("#console-field-count", "2")
    page.click("#console-raw")
    raw = page.find("#console-params")
    assert raw.is_displayed() and not page.find("#console-fields").is_displayed()
    assert json.loads(raw.get_attribute("value")) == {"name": "x", "count": 2}

    # Not JSON: refused in the page, nothing sent.
    page.type("#console-params", "{nope")
    page.click("#console-call")
    page.until(lambda: page.text("#console-invalid"), "the raw JSON's refusal")
    assert page.find("#console-outcome").get_attribute("data-outcome") is None

    # The agent refuses a count that is no integer: the JSON-RPC error, its code and status.
    page.type("#console-params", '{"name": "x", "count": "many"}')
    assert page.submit("#console-call", "#console-outcome") == "error"
    assert page.text('#console-error dd[data-key="code"]') == "-32602"
    assert page.text('#console-error dd[data-key="status"]').startswith("422")
    assert page.text('#console-error dd[data-key="message"]')
    assert re.fullmatch(r"\d+ ms", page.text("#console-time"))
    assert agent.calls == calls

    # Back to the form: it shows what the raw JSON said.
    page.type("#console-params", '{"name": "y", "count": 5, "color": "blue"}')
    page.click("#console-raw")
    assert page.find("#console-fields").is_displayed()
    assert page.find("#console-field-name").get_attribute("value") == "y"
    assert page.find("#console-field-count").get_attribute("value") == "5"
    assert page.text("#console-field-color option:checked") == "blue"

    # A control method without parameters.
    page.choose("#console-method", value="ping")
    assert page.find("#console-outcome").get_attribute("data-outcome") is None  # mix's answer went
    assert page.text("#console-time") == ""
    assert page.submit("#console-call", "#console-outcome") == "result"
    assert page.text("#console-result")


# -- send and publish ---------------------------------------------------------------------


def received(agent: Toolbox, behaviour: str, body: Any) -> dict[str, Any] | None:
    return next(
        (r for r in list(agent.received) if r["behaviour"] == behaviour and r["body"] == body),
        None,
    )


def send(page: Page, kind: str, body: str) -> str:
    page.click(f'#send-form input[name="send-body-kind"][value="{kind}"]')
    page.type("#send-body", body)
    return page.submit("#send-submit", "#send-outcome")


@pytest.mark.rabbitmq
def test_send_json_and_text_to_an_agents_inbox(page, toolbox):
    agent = agent_of(toolbox)
    page.click('#send-form input[name="send-kind"][value="inbox"]')
    assert page.find("#send-agent").is_displayed() and not page.find("#send-key").is_displayed()
    page.choose("#send-agent", value=agent.identity)

    # Not JSON: refused in the page, nothing sent.
    page.click('#send-form input[name="send-body-kind"][value="json"]')
    page.type("#send-body", '{"unfinished": ')
    page.click("#send-submit")
    page.until(lambda: page.text("#send-invalid"), "the body's refusal")
    assert page.find("#send-outcome").get_attribute("data-outcome") is None

    tag = uid("inbox")
    assert send(page, "json", json.dumps({"tag": tag})) == "ok"
    assert page.text("#send-outcome .outcome-head").startswith("202")
    assert json.loads(page.text("#send-answer")) == {"sent": True, "to": agent.identity}
    eventually(lambda: received(agent, "Mailbox", {"tag": tag}), "the JSON message")

    assert send(page, "text", f"plain {tag}") == "ok"
    text = eventually(lambda: received(agent, "Mailbox", f"plain {tag}"), "the text message")
    assert text["content_type"].startswith("text/plain")


@pytest.mark.rabbitmq
def test_publish_to_a_topic(page, toolbox):
    agent = agent_of(toolbox)
    page.click('#send-form input[name="send-kind"][value="topic"]')
    assert page.find("#send-key").is_displayed() and not page.find("#send-agent").is_displayed()
    assert page.text("#send-submit") == "Publish"

    page.type("#send-key", "")
    page.click('#send-form input[name="send-body-kind"][value="json"]')
    page.type("#send-body", "1")
    page.click("#send-submit")
    page.until(lambda: "routing key" in page.text("#send-invalid"), "the missing key's refusal")

    # The gateway refuses a wildcard: its error shows.
    page.type("#send-key", "no.#.wildcards")
    assert page.submit("#send-submit", "#send-outcome") == "error"
    assert page.text("#send-outcome .outcome-head").startswith("400")
    assert page.text("#send-answer")

    tag = uid("topic")
    page.type("#send-key", agent.topic)
    assert send(page, "json", json.dumps({"tag": tag})) == "ok"
    answer = json.loads(page.text("#send-answer"))
    assert answer == {"published": True, "routing_key": agent.topic}
    got = eventually(lambda: received(agent, "Listener", {"tag": tag}), "the published message")
    assert got["routing_key"] == agent.topic

    assert send(page, "text", f"words {tag}") == "ok"
    eventually(lambda: received(agent, "Listener", f"words {tag}"), "the published text")


@pytest.mark.rabbitmq
def test_broadcast(page, toolbox):
    agent = agent_of(toolbox)
    page.click('#send-form input[name="send-kind"][value="broadcast"]')
    assert not page.find("#send-key").is_displayed()
    assert not page.find("#send-agent").is_displayed()
    tag = uid("everyone")
    assert send(page, "json", json.dumps({"tag": tag})) == "ok"
    assert json.loads(page.text("#send-answer")) == {"broadcast": True}
    got = eventually(lambda: received(agent, "Mailbox", {"tag": tag}), "the broadcast")
    assert got["exchange"] == "munggoggo.fanout"


# -- dead letters -------------------------------------------------------------------------


class Letters:
    """The agent's dead letters as the queue holds them, and the page's view of them."""

    def __init__(self, page: Page, thread: AgentThread) -> None:
        self.page = page
        self.thread = thread
        self.agent = agent_of(thread)
        self.dead = DeadLetters(self.agent.connection)

    def in_queue(self) -> dict[str, Any]:
        """id -> decoded body of this agent's dead letters."""
        found = self.thread.run(self.dead.list(1000, agent=self.agent.identity))
        return {letter.id: json.loads(letter.body) for letter in found}

    def poison(self, *tags: str) -> dict[str, str]:
        """Publish one poison message per tag; wait until each is a dead letter: tag -> id."""
        before = set(self.in_queue())
        for tag in tags:
            self.thread.run(self.agent.publish({"poison": tag}, self.agent.poison_topic))

        def arrived() -> dict[str, str] | None:
            new = {body["poison"]: id for id, body in self.in_queue().items() if id not in before}
            return new if set(tags) <= set(new) else None

        return eventually(arrived, f"dead letters {tags}")

    def rows(self) -> list[str]:
        return [
            r.get_attribute("data-id") for r in self.page.find_all("#dl-table tbody tr[data-id]")
        ]

    def refresh_until(self, check: Any, what: str) -> None:
        """Click List until the page's rows pass `check` (another lister may hold a letter
        for a moment: AMQP has no peek)."""

        def listed() -> bool:
            self.page.click("#dl-refresh")
            self.page.until(
                lambda: self.page.find("#dl-table").get_attribute("data-loading") is None,
                "the list loaded",
            )
            return bool(check(self.rows()))

        self.page.until(listed, what)

    def button(self, id: str, action: str) -> str:
        return f'#dl-table tr[data-id="{id}"] button[data-action="{action}"]'

    def confirm(self, yes: bool) -> str:
        self.page.until(lambda: self.page.find("#dl-confirm").is_displayed(), "the confirmation")
        question = self.page.text("#dl-confirm-text")
        self.page.click("#dl-confirm-yes" if yes else "#dl-confirm-no")
        assert not self.page.find("#dl-confirm").is_displayed()
        return question


@pytest.mark.rabbitmq
def test_dead_letters_list_inspect_requeue_and_purge(page, toolbox):
    letters = Letters(page, toolbox)
    agent = letters.agent
    ids = letters.poison("a", "b", "c")
    page.type("#dl-agent", agent.identity)
    page.type("#dl-limit", "10")
    letters.refresh_until(lambda rows: set(ids.values()) <= set(rows), "the three dead letters")
    assert set(letters.rows()) == set(ids.values())  # the filter: this agent's letters only
    row = f'#dl-table tr[data-id="{ids["a"]}"]'
    cells = [c.text for c in page.find_all(f"{row} td")]
    assert cells[1:5] == [ids["a"], agent.identity, "Picky", agent.poison_topic]
    assert "cannot digest" in cells[5]
    assert cells[6] == "2"  # the first try and max_redeliveries=1
    assert re.fullmatch(r"\d+ (s|min)", cells[7])

    # Inspect: the headers and the JSON body.
    page.click(letters.button(ids["a"], "inspect"))
    page.until(lambda: page.find("#dl-detail").is_displayed(), "the letter's detail")
    assert json.loads(page.text("#dl-detail-body")) == {"poison": "a"}
    assert "JSON" in page.text("#dl-detail-body-kind")
    assert "cannot digest" in json.loads(page.text("#dl-detail-headers"))[REASON_HEADER]
    page.click("#dl-detail-close")
    assert not page.find("#dl-detail").is_displayed()

    # Requeue one (its row's button) and the selected one: the fixed agent handles both.
    agent.fixed = True
    page.click(letters.button(ids["a"], "requeue"))
    eventually(lambda: {"poison": "a"} in agent.handled, "the requeued letter handled")
    page.until(lambda: ids["a"] not in letters.rows(), "a's row gone")
    assert page.text("#dl-status").startswith("requeued 1")
    assert page.find("#dl-requeue-selected").get_attribute("disabled")
    page.click(f'#dl-table tr[data-id="{ids["b"]}"] input[type="checkbox"]')
    page.click("#dl-requeue-selected")
    eventually(lambda: {"poison": "b"} in agent.handled, "the selected letter handled")
    letters.refresh_until(lambda rows: rows == [ids["c"]], "only c left")
    agent.fixed = False

    # Purge the selected (select all): cancelled first, nothing goes; then confirmed.
    page.click("#dl-all")
    assert page.find(f'#dl-table tr[data-id="{ids["c"]}"] input[type="checkbox"]').is_selected()
    page.click("#dl-purge-selected")
    assert "1 selected" in letters.confirm(yes=False)
    assert "cancelled" in page.text("#dl-status")
    eventually(lambda: ids["c"] in letters.in_queue(), "c still a dead letter")
    page.click("#dl-purge-selected")
    letters.confirm(yes=True)
    page.until(lambda: "purged 1" in page.text("#dl-status"), "the purge's answer")
    assert ids["c"] not in letters.in_queue()

    # A row's Purge, then Purge all (of the filtered agent).
    more = letters.poison("d", "e")
    letters.refresh_until(lambda rows: set(more.values()) <= set(rows), "d and e listed")
    page.click(letters.button(more["d"], "purge"))
    assert more["d"] in letters.confirm(yes=True)
    page.until(lambda: "purged 1" in page.text("#dl-status"), "d purged")
    eventually(lambda: set(letters.in_queue()) == {more["e"]}, "e alone left")
    page.click("#dl-purge-all")
    assert agent.identity in letters.confirm(yes=True)
    page.until(lambda: not letters.rows(), "the list emptied")
    assert letters.in_queue() == {}


@pytest.mark.rabbitmq
def test_send_and_the_console_refuse_an_agent_that_stopped(broker_url, page, toolbox):
    agent = agent_of(toolbox)
    # Nothing is chosen at first: no agent gets a message it was not meant for.
    assert page.find("#send-agent").get_attribute("value") == ""
    page.click('#send-form input[name="send-kind"][value="inbox"]')
    page.click('#send-form input[name="send-body-kind"][value="json"]')
    page.type("#send-body", json.dumps({"tag": uid("nobody")}))
    page.click("#send-submit")
    page.until(lambda: page.text("#send-invalid") == "choose an agent", "no choice refused")

    brief = uid("brief")
    with AgentThread(Thermostat(brief, url=broker_url)):
        for select in ("#send-agent", "#console-agent"):
            page.until(lambda s=select: page.find_all(f'{s} option[value="{brief}"]'), brief)
            page.choose(select, value=brief)
        page.until(lambda: not page.find("#console-call").get_attribute("disabled"), "callable")
    for select in ("#send-agent", "#console-agent"):
        gone = f'{select} option[value="{brief}"][data-gone]'
        page.until(lambda g=gone: page.find_all(g), f"{brief} marked stopped in {select}")
        assert page.find(gone).is_selected() and not page.find(gone).is_enabled()
    assert page.find("#console-call").get_attribute("disabled")

    tag = uid("astray")
    page.type("#send-body", json.dumps({"tag": tag}))
    page.click("#send-submit")
    page.until(lambda: "stopped" in page.text("#send-invalid"), "the stopped agent refused")
    assert page.find("#send-outcome").get_attribute("data-outcome") is None
    # Chosen again, it sends.
    page.choose("#send-agent", value=agent.identity)
    assert page.submit("#send-submit", "#send-outcome") == "ok"
    eventually(lambda: received(agent, "Mailbox", {"tag": tag}), "the message, once chosen")


# The page's first `GET dead-letters?...` from now on: sent, answered, and its answer held
# in the page until `held.release()` (a list that is still running).
HOLD_LIST = """
window.realFetch ||= window.fetch;
window.held = { answered: false, used: false };
const gate = new Promise((resolve) => (held.release = resolve));
window.fetch = async (url, options) => {
  const response = await window.realFetch(url, options);
  if (String(url).startsWith("dead-letters?") && !held.used) {
    held.used = held.answered = true;
    await gate;
  }
  return response;
};
"""


@pytest.mark.rabbitmq
def test_dead_letter_actions_use_the_listed_filter_and_list_again(page, toolbox):
    letters = Letters(page, toolbox)
    agent = letters.agent
    ids = letters.poison("f", "g", "h")
    other = uid("someone-else")

    def listed(*names: str) -> None:
        page.type("#dl-agent", agent.identity)
        wanted = {ids[n] for n in names}
        letters.refresh_until(lambda rows: set(rows) == wanted, f"{names} listed")

    agent.fixed = True
    try:
        # What the box says after the list was loaded does not change what its rows act on.
        listed("f", "g", "h")
        page.type("#dl-agent", other)
        page.click(f'#dl-table tr[data-id="{ids["f"]}"] input[type="checkbox"]')
        page.click("#dl-requeue-selected")
        page.until(lambda: page.text("#dl-status").startswith("requeued 1"), "f requeued")
        eventually(lambda: {"poison": "f"} in agent.handled, "the requeued f handled")

        listed("g", "h")
        page.type("#dl-agent", other)
        page.click(f'#dl-table tr[data-id="{ids["h"]}"] input[type="checkbox"]')
        page.click("#dl-purge-selected")
        letters.confirm(yes=True)
        page.until(lambda: "purged 1" in page.text("#dl-status"), "h purged")
        assert set(letters.in_queue()) == {ids["g"]}

        # A requeue that ends while a list runs: that list read the queue before, so the
        # page lists again after it.
        listed("g")
        page.driver.execute_script(HOLD_LIST)
        page.click("#dl-refresh")
        page.until(lambda: page.driver.execute_script("return held.answered"), "the held list")
        page.click(letters.button(ids["g"], "requeue"))
        eventually(lambda: {"poison": "g"} in agent.handled, "the requeued g handled")
        page.until(lambda: page.text("#dl-status").startswith("requeued 1"), "g requeued")
        page.driver.execute_script("held.release()")
        page.until(lambda: ids["g"] not in letters.rows(), "g still listed after its requeue")
        assert letters.in_queue() == {}
    finally:
        agent.fixed = False
        page.driver.execute_script("if (window.realFetch) window.fetch = window.realFetch;")
