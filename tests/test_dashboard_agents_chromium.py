"""The dashboard's agent list and agent detail in a real headless Chromium.

One gateway (`munggoggo gateway` in a subprocess) and one browser for the module: the list
follows the presence events of /ws (an agent started after the page loaded shows up, one
that stops is marked, and `GET /agents` is asked once, then once more after the socket
reconnects: the gateway's /metrics counts them), and the detail of an agent shows its
counters, its behaviours with start/stop, its FSM as an SVG graph with the current state
highlighted and as Mermaid text, and its recent messages filtered by direction, kind and
peer. The harness is tests/dashboard_tools.py.
`DASHBOARD_AGENT_SCREENSHOT=docs/dashboard-agent.png pytest tests/test_dashboard_agents_chromium.py`
refreshes the README's screenshot of the detail.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_tools import (
    DOOR_STATES,
    WAIT,
    AgentThread,
    Door,
    Gateway,
    Thermostat,
    agents_listed,
    door_topic,
    open_browser,
    page_problems,
)

from munggoggo.gateway import dashboard

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# The page polled `GET /agents` every 5 s before it followed presence: watching longer than
# that proves it no longer does.
OLD_POLL_SECONDS = 5.0

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def gateway(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(broker_url, tmp_path_factory.mktemp("gateway") / "gateway.log")
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def door(broker_url: str) -> Iterator[AgentThread]:
    with AgentThread(Door(f"door-{uuid.uuid4().hex[:6]}", url=broker_url)) as thread:
        yield thread


@pytest.fixture(scope="module")
def page(
    gateway: Gateway, door: AgentThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The dashboard in Chromium, loaded once the door agent runs; checked for errors after."""
    with open_browser(tmp_path_factory.mktemp("browser")) as driver:
        driver.get(gateway.url)
        yield driver
        problems = page_problems(driver)
        assert problems == [], problems


def waiter(driver: Any) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver: Any, selector: str) -> str:
    """The shown text of the first element `selector` finds ("" when none): read in one
    script, as the page may redraw between finding an element and reading it."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, selector)).strip()


def attributes(driver: Any, selector: str, *names: str) -> list[dict[str, str]]:
    """The `names` attributes of every element `selector` finds, read in one script."""
    script = (
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(e => Object.fromEntries(arguments[1].map(n => [n, e.getAttribute(n)])))"
    )
    return driver.execute_script(script, selector, list(names))


def click(driver: Any, selector: str, why: str) -> None:
    """Click the element `selector` finds, once it is there (found again after a redraw)."""

    def clicked(d: Any) -> bool:
        found = css(d, selector)
        if not found:
            return False
        found[0].click()
        return True

    waiter(driver).until(clicked, why)


def test_no_asset_links_anything_outside_the_gateway():
    assets = [p for p in dashboard.STATIC_ROOT.iterdir() if p.suffix in (".js", ".css")]
    assert {"agent.js", "fsmgraph.js"} <= {p.name for p in assets}
    for asset in assets:
        # The SVG namespace is a name the DOM needs, not an address anything is fetched from.
        text = asset.read_text().replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text, asset.name
        assert "url(" not in text and "@import" not in text, asset.name
    html = (dashboard.STATIC_ROOT / "index.html").read_text()
    for script in ("common.js", "dashboard.js", "fsmgraph.js", "agent.js", "console.js"):
        assert f'<script src="static/{script}" defer></script>' in html
    for section in ("console-panel", "send-panel", "dead-letters-panel", "agent-detail"):
        assert f'id="{section}"' in html


def test_the_list_follows_presence_without_polling(broker_url, gateway, door, page):
    wait = waiter(page)
    card = f'[data-agent="{door.agent.identity}"]'
    wait.until(lambda d: css(d, card), "the door agent is not listed")
    wait.until(lambda d: text_of(d, "#connection") == "live", "the socket never opened")
    # Presence only: on a broker other tests share, a flood of messages on `#` can make the
    # gateway drop frames, and a drop reloads the list (as it must), which this test counts.
    click(page, '#subscriptions [data-pattern="#"] button', "no subscription to #")
    wait.until(lambda d: not css(d, '#subscriptions [data-pattern="#"]'), "# still watched")
    loaded = time.monotonic()
    listed = agents_listed(gateway.url)
    assert listed >= 1

    identity = f"thermostat-{uuid.uuid4().hex[:6]}"
    started = f'[data-agent="{identity}"]'
    with AgentThread(Thermostat(identity, url=broker_url)):
        # Listed with its behaviours: the page asked the new agent for its status.
        wait.until(
            lambda d: css(d, f'{started} tr[data-behaviour="Report"]'),
            "an agent started after the page loaded never showed up",
        )
        assert not css(page, f"{started}.gone")
    wait.until(lambda d: css(d, f"{started}.gone"), "an agent that stopped was not marked")
    assert text_of(page, f"{started} .state") == "stopped"
    assert "stopped" in text_of(page, "#agents-count")

    time.sleep(max(0.0, loaded + OLD_POLL_SECONDS + 1.0 - time.monotonic()))
    assert agents_listed(gateway.url) == listed, "the page asked GET /agents again: polling"

    # A reconnect of /ws reloads the list once (events may have been missed meanwhile): the
    # stopped agent is no longer listed at all.
    page.execute_script("stream.socket.close()")
    wait.until(lambda d: not css(d, started), "the list was not reloaded after a reconnect")
    wait.until(lambda d: text_of(d, "#connection") == "live", "the socket never reopened")
    assert agents_listed(gateway.url) == listed + 1
    assert css(page, card)


def post_json(url: str, value: Any) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(value).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return json.load(response)


def test_the_detail_of_an_agent(gateway, door, page, tmp_path):
    wait = waiter(page)
    identity = door.agent.identity
    fsm = door.agent.behaviour("Door")

    def mermaid() -> str:
        async def read() -> str:
            return fsm.to_mermaid()

        return door.run(read())

    def current() -> list[str]:
        nodes = attributes(page, '[data-fsm="Door"] svg g.fsm-node.current', "data-state")
        return [n["data-state"] for n in nodes]

    click(page, f'[data-agent="{identity}"] button.identity', "the door agent is not listed")
    wait.until(lambda d: d.find_element("id", "agent-detail").is_displayed())
    wait.until(lambda d: text_of(d, '[data-counter="published"] .figure') not in ("", "?"))
    assert page.find_element("id", "detail-identity").text == identity
    assert text_of(page, '[data-counter="connected"] .figure') == "yes"
    for counter in ("uptime", "consumed", "rpc_served", "pending_calls", "unconfirmed"):
        assert text_of(page, f'[data-counter="{counter}"] .figure') not in ("", "?"), counter
    assert css(page, f'[data-agent="{identity}"].selected')

    # Behaviours, with start and stop as in the list.
    row = '#detail-behaviours tr[data-behaviour="Beacon"]'
    assert text_of(page, '#detail-behaviours tr[data-behaviour="Door"] td:nth-child(2)') == "fsm"
    click(page, f'{row} button[data-action="stop"]', "no stop button for Beacon")
    wait.until(lambda d: text_of(d, f"{row} .state") == "stopped", "Beacon never showed stopped")
    assert door.behaviour_state("Beacon") == "stopped"
    click(page, f'{row} button[data-action="start"]', "no start button for Beacon")
    wait.until(lambda d: text_of(d, f"{row} .state") == "running", "Beacon never showed running")
    assert door.behaviour_state("Beacon") == "running"

    # The FSM: a node per state, the current one highlighted, and its Mermaid source.
    nodes = attributes(page, '[data-fsm="Door"] svg.fsm-graph g.fsm-node', "data-state")
    assert sorted(n["data-state"] for n in nodes) == sorted(DOOR_STATES)
    assert current() == ["closed"]
    assert text_of(page, '[data-fsm="Door"] .current-state') == "closed"
    assert text_of(page, '[data-fsm="Door"] .mermaid-source') == mermaid()

    # Moved on by a command, it shows the new state after Refresh.
    post_json(f"{gateway.url}topics/{door_topic(identity)}", "open")
    deadline = time.monotonic() + WAIT
    while door.run(_current_state(fsm)) != "open":
        assert time.monotonic() < deadline, "the door never opened"  # a guard, not a speed claim
        time.sleep(0.05)
    click(page, "#detail-refresh", "no Refresh button in the detail")
    wait.until(lambda d: current() == ["open"], "the graph never highlighted the new state")
    assert text_of(page, '[data-fsm="Door"] .mermaid-source') == mermaid()
    assert "class open current" in mermaid()
    # Copy puts it on the clipboard, or (no clipboard permission) selects it for Ctrl+C.
    click(page, '[data-fsm="Door"] .mermaid-head button', "no Copy button")
    wait.until(lambda d: text_of(d, "#toast"), "Copy said nothing")
    if "copied" not in text_of(page, "#toast"):
        assert page.execute_script("return String(window.getSelection())").strip() == mermaid()

    # Recent messages, filtered by direction, kind and peer.
    def rows() -> list[dict[str, str]]:
        found = attributes(page, "#traces tbody tr", "data-direction", "data-kind", "data-peer")
        return [{k.removeprefix("data-"): v for k, v in r.items()} for r in found]

    everything = rows()
    assert {r["direction"] for r in everything} == {"in", "out"}
    select("trace-direction", "out", page)
    outgoing = rows()
    assert outgoing and all(r["direction"] == "out" for r in outgoing)
    assert len(outgoing) < len(everything)
    # The command published through the gateway came in as a message from the gateway.
    select("trace-direction", "in", page)
    select("trace-kind", "message", page)
    commands = rows()
    assert commands and all(r["direction"] == "in" and r["kind"] == "message" for r in commands)
    gateway_peer = commands[0]["peer"]
    assert gateway_peer and all(r["peer"] == gateway_peer for r in commands)
    select("trace-direction", "", page)
    select("trace-kind", "", page)
    peer = page.find_element("id", "trace-peer")
    peer.send_keys("munggoggo.topic")
    published = rows()
    assert published and all(r["peer"] == "munggoggo.topic" for r in published)
    assert text_of(page, "#trace-count") == f"{len(published)} of {len(everything)}"

    screenshot = tmp_path / "dashboard-agent.png"
    page.execute_script(
        "const input = document.getElementById('trace-peer'); input.value = '';"
        "input.dispatchEvent(new Event('input')); input.blur();"
    )
    # Tall enough for the whole detail: an element's screenshot shows what is in the window.
    size = page.get_window_size()
    page.set_window_size(size["width"], 1700)
    detail = page.find_element("id", "agent-detail")
    assert detail.screenshot(str(screenshot))
    page.set_window_size(size["width"], size["height"])
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DASHBOARD_AGENT_SCREENSHOT"):
        shutil.copyfile(screenshot, REPO / os.environ["DASHBOARD_AGENT_SCREENSHOT"])


def select(element_id: str, value: str, page: Any) -> None:
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", element_id)).select_by_value(value)


def _current_state(fsm: Any) -> Any:
    async def read() -> str | None:
        return fsm.current_state

    return read()


def test_any_state_names_give_the_same_mermaid_text_and_a_node_each(page):
    from munggoggo.mermaid import fsm_diagram

    states = ["idle", "end", 'say "hi"', "<b>bold</b>", "s1", "a b", "#1"]
    transitions = [["idle", "end"], ["end", 'say "hi"'], ['say "hi"', "idle"], ["s1", "s1"]]
    transitions += [["<b>bold</b>", "a b"], ["a b", "#1"], ["#1", "idle"], ["idle", "idle"]]
    fsm = {
        "name": "odd",
        "states": states,
        "transitions": transitions,
        "initial_state": "idle",
        "current_state": "<b>bold</b>",
    }
    script = "return fsmMermaid(arguments[0]);"
    expected = fsm_diagram(states, [tuple(t) for t in transitions], "idle", "<b>bold</b>")
    assert page.execute_script(script, fsm) == expected
    drawn = page.execute_script(
        "const graph = fsmGraph(arguments[0]);"
        "return [...graph.querySelectorAll('g.fsm-node')].map(g => ["
        "  g.dataset.state, g.querySelector('text').textContent, g.classList.contains('current'),"
        "  g.querySelector('text').children.length]);",
        fsm,
    )
    assert [name for name, *_ in drawn] == states
    assert all(text == name and children == 0 for name, text, _, children in drawn)
    assert [name for name, _, current, _ in drawn if current] == ["<b>bold</b>"]


def test_bad_states_and_transitions_are_left_out_not_fatal(page):
    """An agent's describe() with a non-string state or a transition that is no pair: the
    detail still draws what is usable (numbers and booleans as their text)."""
    from munggoggo.mermaid import fsm_diagram

    fsm = {
        "name": "bad",
        "kind": "fsm",
        "states": ["a", 5, None, {"x": 1}, "b", True, "a"],
        "transitions": [["a", "b"], "ab", ["a"], None, [5, "a"], ["a", None], [["a"], "b"]],
        "initial_state": "a",
        "current_state": 5,
    }
    usable = ["a", "5", "b", "true"]
    expected = fsm_diagram(usable, [("a", "b"), ("5", "a")], "a", "5")
    assert page.execute_script("return fsmMermaid(arguments[0]);", fsm) == expected
    drawn = page.execute_script(
        "const card = fsmCard(arguments[0]);"
        "return [[...card.querySelectorAll('g.fsm-node')].map(g => g.dataset.state),"
        "  [...card.querySelectorAll('g.fsm-node.current')].map(g => g.dataset.state),"
        "  card.querySelectorAll('path.fsm-edge').length];",
        fsm,
    )
    # Two transitions and the start marker's line.
    assert drawn == [usable, ["5"], 3]


# Fetch answers of the page replaced for one identity (the real gateway answers the rest);
# `arguments[1]` is a Response's init, or null for the status of a running agent.
FAKE_STATUS = """
window.realFetch ||= window.fetch;
const [identity, init] = arguments;
const target = `agents/${encodeURIComponent(identity)}`;
window.fetch = (url, options) => {
  if (String(url) !== target) return window.realFetch(url, options);
  const body = init ? { error: "busy" } : { identity, state: "started", behaviours: [] };
  return Promise.resolve(new Response(JSON.stringify(body), init || {}));
};
"""


def test_a_failed_status_call_keeps_what_was_listed(door, page):
    wait = waiter(page)
    identity = door.agent.identity
    card = f'[data-agent="{identity}"]'
    beacon = f'{card} tr[data-behaviour="Beacon"]'
    click(page, f"{card} button.identity", "the door agent is not listed")
    wait.until(lambda d: css(d, '#detail-fsms [data-fsm="Door"] svg g.fsm-node'), "no FSM")
    select("console-agent", identity, page)
    methods = len(css(page, "#console-method option"))
    assert methods > 0

    # The status call after a stop is refused (a slow agent: 503): the list keeps the
    # agent's behaviours, the detail its graph, the console its methods; marked.
    page.execute_script(FAKE_STATUS, identity, {"status": 503, "statusText": "Unavailable"})
    try:
        click(page, f'{beacon} button[data-action="stop"]', "no stop button for Beacon")
        wait.until(lambda d: "not answering" in text_of(d, card), "the failure is not shown")
        assert text_of(page, f"{beacon} .state") == "stopped"
        assert css(page, f'{card} tr[data-behaviour="Door"]')
        assert css(page, '#detail-behaviours tr[data-behaviour="Beacon"]')
        assert css(page, '#detail-fsms [data-fsm="Door"] svg g.fsm-node')
        assert len(css(page, "#console-method option")) == methods
    finally:
        page.execute_script("window.fetch = window.realFetch;")
    # The next status that answers takes the mark away.
    click(page, f'{beacon} button[data-action="start"]', "no start button for Beacon")
    wait.until(lambda d: text_of(d, f"{beacon} .state") == "running", "Beacon never ran again")
    wait.until(lambda d: "not answering" not in text_of(d, card), "the mark stayed")
    assert door.behaviour_state("Beacon") == "running"


def test_a_dropped_frame_reloads_the_list_once(gateway, door, page):
    wait = waiter(page)
    wait.until(lambda d: css(d, f'[data-agent="{door.agent.identity}"]'), "no door agent")
    wait.until(lambda d: page.execute_script("return agents.loading === null"), "a load runs")
    # An agent whose "stopped" frame was dropped: listed as running, though it is gone.
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    page.execute_script(
        "agents.list.push({identity: arguments[0], state: 'started', behaviours: []});"
        "renderAgents();",
        ghost,
    )
    wait.until(lambda d: css(d, f'[data-agent="{ghost}"]'), "the ghost was not drawn")
    listed = agents_listed(gateway.url)

    page.execute_script("for (let i = 0; i < 5; i++) onFrame({op: 'dropped', count: 3});")
    wait.until(lambda d: not css(d, f'[data-agent="{ghost}"]'), "the list was not reloaded")
    wait.until(
        lambda d: d.execute_script("return !agents.loading && !agents.reloadTimer"),
        "a reload is still owed",
    )
    wait.until(lambda d: agents_listed(gateway.url) > listed, "the gateway counted no load")
    assert agents_listed(gateway.url) == listed + 1  # one load for the burst of drops
    assert css(page, f'[data-agent="{door.agent.identity}"]')


# The page's timers of STOPPED_SHOWN_MS held, to be run by the test (no 20 s wait); the
# rest run as usual.
HOLD_REMOVALS = """
window.held = new Map();
window.realSetTimeout ||= window.setTimeout;
window.realClearTimeout ||= window.clearTimeout;
let next = 1e9;
window.setTimeout = (fn, ms, ...rest) => {
  if (ms !== STOPPED_SHOWN_MS) return window.realSetTimeout(fn, ms, ...rest);
  held.set(++next, fn);
  return next;
};
window.clearTimeout = (id) => (held.delete(id) ? undefined : window.realClearTimeout(id));
"""


def test_an_agent_that_stops_twice_is_shown_for_its_last_stop(page):
    ghost = f"flaky-{uuid.uuid4().hex[:6]}"
    page.execute_script(FAKE_STATUS, ghost, None)
    page.execute_script(HOLD_REMOVALS)
    try:
        shown = page.execute_async_script(
            """
            const [ghost, done] = arguments;
            const listed = () => agents.list.some((a) => a.identity === ghost);
            (async () => {
              await onPresence(ghost, "started");
              const started = listed();
              await onPresence(ghost, "stopped");
              await onPresence(ghost, "started"); // it came back...
              await onPresence(ghost, "stopped"); // ...and stopped again
              const removals = held.size;
              // The time of the first stop's removal passes (it runs if it was not dropped).
              for (const fn of [...held.values()].slice(0, -1)) fn();
              const afterFirst = listed() && agents.gone.has(ghost);
              for (const fn of [...held.values()].slice(-1)) fn(); // the last stop's time
              done([started, removals, afterFirst, listed()]);
            })();
            """,
            ghost,
        )
    finally:
        page.execute_script(
            "window.fetch = window.realFetch; window.setTimeout = window.realSetTimeout;"
            "window.clearTimeout = window.realClearTimeout;"
        )
    assert shown == [True, 1, True, False]


def test_stopped_times_of_unlisted_agents_are_bounded(page):
    waiter(page).until(lambda d: d.execute_script("return agents.loading === null"), "a load")
    size, bound, newest = page.execute_script(
        "for (let i = 0; i < 3000; i++) onPresence(`never-listed-${i}`, 'stopped');"
        "return [agents.stoppedAt.size, STOPPED_REMEMBERED,"
        "  agents.stoppedAt.has('never-listed-2999')];"
    )
    assert size <= bound < 3000
    assert newest
