"""core/fsm.py and core/mermaid.py: FSMBehaviour and State, on RabbitMQ and memory://.

An FSM runs its states' run()s one per step and moves only along declared transitions: a
state that names no next state ends it done, one that names an undeclared transition (or
an unknown state) ends it failed with the transition in `last_error`, which `describe()`
and `status` (over RPC too) show. States read the FSM's mailbox and publish, send and call
as their FSM; kill() from a state or from outside ends it with its exit code; on_end runs
once. Its Mermaid diagram and the agent's show the states and transitions.
"""

from __future__ import annotations

import itertools
import math

import pytest
from broker_tools import wait_until
from mesh_tools import BodyCollector, Calc, uid

from munggoggo import Agent, FSMBehaviour, RestartPolicy, State, Template
from munggoggo.mermaid import state_ids

pytestmark = pytest.mark.timeout(60)


class Recording(FSMBehaviour):
    """Records the states it visits (by the states) and each on_end() with its view."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.visits: list[str] = []
        self.ends: list[tuple[str, object, str | None]] = []

    async def on_end(self) -> None:
        self.ends.append((self.state, self.exit_code, self.current_state))


class Go(State):
    """Visits, then goes to `to` (None: ends the FSM)."""

    def __init__(self, to: str | None) -> None:
        super().__init__()
        self.to = to

    async def run(self) -> None:
        self.fsm.visits.append(self.name)
        if self.to is not None:
            self.set_next_state(self.to)


class WaitFor(State):
    """Waits for a message of the FSM's mailbox; its body names the next state ("" ends)."""

    async def run(self) -> None:
        self.fsm.visits.append(self.name)
        msg = await self.receive(timeout=math.inf)
        if msg is not None and msg.body:
            self.set_next_state(msg.body.decode())


def line(agent: Agent, *names: str, loop_back: bool = False, **kwargs) -> Recording:
    """An FSM a -> b -> ... whose last state ends it (or goes back to the first)."""
    fsm = Recording(agent, **kwargs)
    for i, name in enumerate(names):
        to = names[i + 1] if i + 1 < len(names) else (names[0] if loop_back else None)
        fsm.add_state(name, Go(to), initial=i == 0)
    for a, b in itertools.pairwise(names):
        fsm.add_transition(a, b)
    if loop_back:
        fsm.add_transition(names[-1], names[0])
    return fsm


async def test_states_run_in_turn_and_a_state_without_a_next_state_ends_it(mesh_url):
    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = await agent.add_behaviour(line(agent, "red", "green", "yellow"))
        await fsm.join(timeout=5)
        assert fsm.visits == ["red", "green", "yellow"]
        assert fsm.state == "done" and fsm.exit_code == 0 and fsm.last_error is None
        assert fsm.current_state == "yellow"
        assert fsm.ends == [("done", 0, "yellow")]
        assert not fsm.is_killed()


async def test_an_undeclared_transition_ends_it_failed_and_status_says_so(mesh_url):
    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = line(agent, "red", "green", "yellow")
        # yellow -> red was never declared: the FSM must not jump there.
        fsm.states["yellow"].to = "red"
        await agent.add_behaviour(fsm)
        await fsm.join(timeout=5)
        assert fsm.visits == ["red", "green", "yellow"]
        assert fsm.state == "failed" and fsm.exit_code == 1
        assert fsm.current_state == "yellow"
        assert "'yellow' -> 'red'" in fsm.last_error
        assert fsm.ends == [("failed", 1, "yellow")]
        described = agent.status()["behaviours"][0]
        assert described["state"] == "failed"
        assert "'yellow' -> 'red'" in described["last_error"]
        assert described["current_state"] == "yellow"
        async with Agent(uid("caller"), url=mesh_url) as caller:
            remote = await caller.call(agent.identity, "status", timeout=10)
        assert remote["behaviours"][0]["state"] == "failed"
        assert "'yellow' -> 'red'" in remote["behaviours"][0]["last_error"]


async def test_a_transition_to_an_unknown_state_ends_it_failed(mesh_url):
    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = line(agent, "a", "b")
        fsm.states["b"].to = "nowhere"
        await agent.add_behaviour(fsm)
        await fsm.join(timeout=5)
        assert fsm.state == "failed"
        assert "'b' -> 'nowhere'" in fsm.last_error and "no such state" in fsm.last_error


async def test_an_fsm_without_an_initial_state_ends_failed(mesh_url):
    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = Recording(agent)
        fsm.add_state("only", Go(None))
        await agent.add_behaviour(fsm)
        await fsm.join(timeout=5)
        assert fsm.state == "failed" and "no initial state" in fsm.last_error
        assert fsm.visits == []


async def test_states_share_the_fsm_mailbox_and_publish_send_and_call(mesh_url):
    class Ask(State):
        """Calls the calculator, publishes the product, sends it, and waits for a go."""

        async def run(self) -> None:
            product = await self.call(self.fsm.calc, "mul", 6, 7, timeout=10)
            await self.publish(product, self.fsm.topic)
            await self.send(self.fsm.listener, f"product {product}")
            self.set_next_state("wait")

    calc = Calc(uid("calc"), url=mesh_url)
    listener = Agent(uid("listener"), url=mesh_url)
    agent = Agent(uid("fsm"), url=mesh_url)
    async with calc, listener, agent:
        topic = f"fsm.{agent.identity}.out"
        heard = await listener.add_behaviour(BodyCollector(listener, binding_keys=[topic]))
        direct = await listener.add_behaviour(
            BodyCollector(listener, name="Direct", template=Template())
        )
        fsm = Recording(agent, binding_keys=[f"fsm.{agent.identity}.in"])
        fsm.calc, fsm.topic, fsm.listener = calc.identity, topic, listener.identity
        fsm.add_state("ask", Ask(), initial=True)
        fsm.add_state("wait", WaitFor())
        fsm.add_transition("ask", "wait")
        fsm.add_transition("wait", "ask")
        await agent.add_behaviour(fsm)
        assert await wait_until(lambda: heard.bodies == [b"42"] and fsm.current_state == "wait")
        assert await wait_until(lambda: direct.bodies == [b"product 42"])
        # The wait state reads the FSM's queue: "ask" goes round once more, "" ends it.
        await listener.publish("ask", f"fsm.{agent.identity}.in")
        assert await wait_until(lambda: heard.bodies == [b"42", b"42"])
        await listener.publish("", f"fsm.{agent.identity}.in")
        await fsm.join(timeout=10)
        assert fsm.visits == ["wait", "wait"] and fsm.state == "done"
        # Two visits of "ask": two publishes and two sends, counted under the FSM's name.
        assert await wait_until(lambda: len(direct.bodies) == 2), direct.bodies
        assert agent.stats.published[(fsm.short_name, "message")] == 4


async def test_kill_from_a_state_ends_it_without_the_transition(mesh_url):
    class Quits(State):
        async def run(self) -> None:
            self.fsm.visits.append(self.name)
            self.set_next_state("b")
            self.fsm.kill(exit_code="bye")

    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = line(agent, "a", "b")
        fsm.add_state("quit", Quits())
        fsm.states["a"].to = "quit"
        fsm.add_transition("a", "quit")
        fsm.add_transition("quit", "b")
        await agent.add_behaviour(fsm)
        await fsm.join(timeout=5)
        assert fsm.visits == ["a", "quit"]
        assert fsm.is_killed() and fsm.exit_code == "bye" and fsm.state == "stopped"
        assert fsm.current_state == "quit"
        assert fsm.ends == [("stopped", "bye", "quit")]


async def test_kill_from_outside_wakes_a_state_waiting_for_mail(mesh_url):
    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = Recording(agent, binding_keys=[f"fsm.{agent.identity}"])
        fsm.add_state("wait", WaitFor(), initial=True)
        await agent.add_behaviour(fsm)
        assert await wait_until(lambda: fsm.visits == ["wait"])
        fsm.kill(exit_code=9)
        await fsm.join(timeout=5)
        assert fsm.ends == [("stopped", 9, "wait")]
        assert fsm.short_name not in agent.consumers()


async def test_a_state_that_raises_is_retried_then_fails_by_the_restart_policy(mesh_url):
    class Flaky(State):
        tries = 0

        async def run(self) -> None:
            self.tries += 1
            raise RuntimeError(f"try {self.tries}")

    class Strict(Recording):
        restart_policy = RestartPolicy(initial=0.01, maximum=0.01, max_failures=3)

    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = Strict(agent)
        flaky = Flaky()
        fsm.add_state("flaky", flaky, initial=True)
        await agent.add_behaviour(fsm)
        await fsm.join(timeout=5)
        assert flaky.tries == 3
        assert fsm.state == "failed" and fsm.last_error == "RuntimeError: try 3"
        assert fsm.ends == [("failed", 1, "flaky")]


async def test_states_added_in_setup_and_a_restart_begins_in_the_initial_state(mesh_url):
    class Builds(Recording):
        async def setup(self) -> None:
            if not self.states:  # setup() runs again on a restart
                self.add_state("one", Go("two"), initial=True)
                self.add_state("two", Go(None))
                self.add_transition("one", "two")

    async with Agent(uid("fsm"), url=mesh_url) as agent:
        fsm = await agent.add_behaviour(Builds(agent))
        await fsm.join(timeout=5)
        assert fsm.visits == ["one", "two"] and fsm.state == "done"
        await agent.start_behaviour(fsm.short_name)
        await fsm.join(timeout=5)
        assert fsm.visits == ["one", "two", "one", "two"]
        assert [end[0] for end in fsm.ends] == ["done", "done"]


@pytest.mark.parametrize("states", ["busy", "waiting for mail"])
async def test_the_agent_stopping_ends_a_running_fsm_once_as_stopped(mesh_url, states):
    agent = Agent(uid("fsm"), url=mesh_url)
    await agent.start()
    if states == "busy":
        fsm = await agent.add_behaviour(line(agent, "a", "b", loop_back=True))
        assert await wait_until(lambda: len(fsm.visits) > 10)
    else:
        # The stop wakes its receive() with None, so the state names no next state: that
        # is the stop, not the FSM's end.
        fsm = Recording(agent, binding_keys=[f"fsm.{agent.identity}"])
        fsm.add_state("wait", WaitFor(), initial=True)
        await agent.add_behaviour(fsm)
        assert await wait_until(lambda: fsm.visits == ["wait"])
    await agent.stop()
    await fsm.join(timeout=1)
    assert len(fsm.ends) == 1 and fsm.ends[0][:2] == ("stopped", 0)
    assert fsm.state == "stopped"


# -- building and drawing (no broker) ----------------------------------------------------


async def test_building_mistakes_are_refused_at_once():
    agent = Agent(uid("fsm"), url="memory://fsm-building")
    fsm = FSMBehaviour(agent)
    fsm.add_state("a", Go(None), initial=True)
    with pytest.raises(ValueError, match="already has a state 'a'"):
        fsm.add_state("a", Go(None))
    with pytest.raises(ValueError, match="already starts in 'a'"):
        fsm.add_state("b", Go(None), initial=True)
    with pytest.raises(ValueError, match="no state 'c'"):
        fsm.add_transition("a", "c")
    with pytest.raises(TypeError):
        fsm.add_state("d", object())  # type: ignore[arg-type]
    shared = Go(None)
    fsm.add_state("e", shared)
    with pytest.raises(ValueError, match="already is 'e'"):
        FSMBehaviour(agent, name="Other").add_state("e", shared)
    with pytest.raises(RuntimeError, match="not added"):
        _ = Go(None).fsm
    assert list(fsm.states) == ["a", "e"] and fsm.initial_state == "a"


async def test_describe_and_mermaid_show_states_and_transitions():
    agent = Agent(uid("fsm"), url="memory://fsm-drawing")
    fsm = line(agent, "red", 'say "hi" <now>', "green", name="Light")
    fsm.add_transition("green", "red")
    described = fsm.describe()
    assert described["kind"] == "fsm" and described["current_state"] == "red"
    assert described["states"] == ["red", 'say "hi" <now>', "green"]
    assert described["transitions"] == [
        ["red", 'say "hi" <now>'],
        ['say "hi" <now>', "green"],
        ["green", "red"],
    ]
    diagram = fsm.to_mermaid().splitlines()
    assert diagram[0] == "stateDiagram-v2"
    # Plain names are their own ids; any other name is a quoted label on a generated id.
    assert "    red" in diagram and "    green" in diagram
    assert '    state "say #quot;hi#quot; #lt;now#gt;" as s1' in diagram
    assert "    [*] --> red" in diagram
    assert {"    red --> s1", "    s1 --> green", "    green --> red"} <= set(diagram)
    assert "    red --> green" not in diagram  # not declared
    assert not any(row.startswith("    class ") for row in diagram)  # nothing ran yet


def test_state_ids_are_names_where_mermaid_allows_and_never_clash():
    ids = state_ids(["idle", "end", "s1", "two words", "State", "_x"])
    assert ids == {
        "idle": "idle",
        "end": "s1_",  # a keyword; "s1" is a state's own name
        "s1": "s1",
        "two words": "s3",
        "State": "s4",
        "_x": "s5",
    }
    assert len(set(ids.values())) == len(ids)


async def test_agent_mermaid_draws_behaviours_topics_and_fsms(mesh_url):
    async with Agent(uid("drawn"), url=mesh_url) as agent:
        await agent.add_behaviour(BodyCollector(agent, binding_keys=["sensors.#"]))
        fsm = Recording(agent, binding_keys=["sensors.#"], name="Light")
        fsm.add_state("red", WaitFor(), initial=True)
        fsm.add_state("green", WaitFor())
        fsm.add_transition("red", "green")
        fsm.add_transition("green", "red")
        await agent.add_behaviour(fsm)
        assert await wait_until(lambda: fsm.visits == ["red"])
        diagram = agent.to_mermaid().splitlines()
        assert diagram[0] == "flowchart LR"
        assert f'    agent(["{agent.identity}<br/>running"])' in diagram
        assert '    b0["BodyCollector<br/>cyclic, running"]' in diagram
        assert '    subgraph b1 ["Light<br/>fsm, running"]' in diagram
        assert '        b1_s0("red")' in diagram and '        b1_s1("green")' in diagram
        assert '        b1_start((" ")) --> b1_s0' in diagram
        assert {"        b1_s0 --> b1_s1", "        b1_s1 --> b1_s0"} <= set(diagram)
        # One topic node, subscribed by both behaviours.
        assert diagram.count('    t0[/"sensors.#35;"/]') == 1
        assert {"    t0 -.-> b0", "    t0 -.-> b1", "    agent --> b1"} <= set(diagram)
        assert "    class b1_s0 current" in diagram
        fsm.kill()
        await fsm.join(timeout=5)
