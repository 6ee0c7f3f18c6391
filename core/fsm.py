"""Finite-state machines (SPADE's FSMBehaviour): a behaviour whose steps are the `run()`s of
its states, moving from state to state only along declared transitions.

Each step of an `FSMBehaviour` runs its current state's `run()`; the state names the next
one with `set_next_state()`. A state that names none ends the FSM (done); one that names a
state it has no declared transition to ends it failed, the undeclared transition in
`last_error` (what `describe()` and the agent's `status` show), never a silent jump. A state
that raises is a failed step like any behaviour's: the FSM's `restart_policy` retries the
same state after a backoff, or ends it failed after `max_failures`.

States share their FSM's mailbox, consumer and settling: `self.receive()` in a state reads
the FSM's mailbox, and what a state received is acked when its `run()` returns.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .behaviour import DONE, FAILED, Behaviour
from .mermaid import fsm_diagram
from .publishing import PublishSurface

if TYPE_CHECKING:
    from .agent import Agent
    from .message import Message

__all__ = ["FSMBehaviour", "State"]

log = logging.getLogger("munggoggo.behaviour")


class State(PublishSurface):
    """One state of an `FSMBehaviour`: subclass it and write `run()`, which does this
    state's work and names the next state with `set_next_state()` (or none, to end the FSM).

    A state receives from its FSM's mailbox and publishes, sends, broadcasts and calls as
    its FSM (its publishes are counted under the FSM's name). It belongs to one FSM, which
    `FSMBehaviour.add_state` attaches it to.

    Attributes:
        name: its name in the FSM ("" until added).
        next_state: the state `set_next_state()` named during the current `run()`, or None.
    """

    def __init__(self) -> None:
        self.name = ""
        self.next_state: str | None = None
        self._fsm: FSMBehaviour | None = None

    # -- the user hook -------------------------------------------------------------------

    async def run(self) -> None:
        """This state's work, once per visit; call `set_next_state()` to move on."""

    # -- what run() uses ---------------------------------------------------------------

    def set_next_state(self, name: str) -> None:
        """Name the state the FSM goes to when this `run()` returns. The transition must
        have been declared with `add_transition`, or the FSM ends failed.

        Args:
            name: the next state's name.
        """
        self.next_state = name

    @property
    def fsm(self) -> FSMBehaviour:
        """The FSM this state belongs to.

        Raises:
            RuntimeError: the state was not added to an FSM.
        """
        if self._fsm is None:
            raise RuntimeError(f"state {type(self).__name__} was not added to an FSMBehaviour")
        return self._fsm

    @property
    def agent(self) -> Agent:
        """The agent running its FSM."""
        return self.fsm.agent

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next message of the FSM's mailbox, or None (see `Behaviour.receive`).

        Args:
            timeout: seconds to wait for a message; None or 0: do not wait.

        Returns:
            The message, or None when none arrived in time.

        Raises:
            ValueError: a negative or NaN timeout.
        """
        return await self.fsm.receive(timeout)

    async def call(
        self, target: str, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call `method` of agent `target` over RPC (see `Agent.call`).

        Args:
            target: the called agent's identity.
            method: the exposed method's name.
            *args: its positional arguments.
            timeout: seconds to wait for the reply (None: `AgentConfig.rpc_timeout`).
            **kwargs: its keyword arguments.

        Returns:
            The method's result.

        Raises:
            RpcError: the call failed, timed out (`RpcTimeout`) or the target is
                unreachable (`AgentUnreachable`).
        """
        return await self.fsm.call(target, method, *args, timeout=timeout, **kwargs)

    def attach(self, fsm: FSMBehaviour, name: str) -> None:
        """Make this state `name` of `fsm` (what `FSMBehaviour.add_state` calls).

        Args:
            fsm: the FSM it belongs to from now on.
            name: its name there.

        Raises:
            ValueError: it already belongs to another FSM, or under another name.
        """
        if self._fsm is not None and (self._fsm is not fsm or self.name != name):
            raise ValueError(f"state {type(self).__name__} already is {self.name!r} of an FSM")
        self._fsm = fsm
        self.name = name
        self._publisher = fsm.agent
        self._publish_label = fsm.short_name
        self._batch_lane = fsm.agent.batch_lane(fsm.batching)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class FSMBehaviour(Behaviour):
    """A finite-state machine: each step runs the current state's `run()`, then moves to
    the state it named, along a declared transition.

    Add its states (one of them initial) and transitions before adding it to the agent,
    or in its `setup()`. It ends done when a state names no next state, failed when a
    state names one without a declared transition (`last_error` says which).

    Args:
        agent: the agent that hosts it.
        binding_keys: topic patterns its states receive (the FSM's queue).
        template: which direct messages of the agent's inbox its states receive.
        **kwargs: the other `Behaviour` arguments (`name`, `prefetch`, `queue`).
    """

    kind = "fsm"
    # Slots, not instance-dict entries: a behaviour's __dict__ stays within CPython's
    # shared-key layout (see PublishSurface).
    __slots__ = ("_current", "_initial", "_states", "_transitions")

    def __init__(
        self,
        agent: Agent,
        *,
        binding_keys: list[str] | None = None,
        template: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(agent, binding_keys=binding_keys, template=template, **kwargs)
        self._states: dict[str, State] = {}
        self._transitions: dict[str, list[str]] = {}  # source -> destinations, in order
        self._initial: str | None = None
        self._current: str | None = None  # None until the first step of a run

    # -- building it ---------------------------------------------------------------------

    def add_state(self, name: str, state: State, initial: bool = False) -> None:
        """Add a state.

        Args:
            name: its name, unique in this FSM.
            state: the State instance (it belongs to this FSM from now on).
            initial: the FSM starts in this state (exactly one state is initial).

        Raises:
            ValueError: an empty or taken name, a second initial state, or a state that
                belongs to another FSM.
            TypeError: `state` is no `State`.
        """
        if not isinstance(state, State):
            raise TypeError(f"FSM {self.short_name!r}: a state must be a State, got {state!r}")
        if not name:
            raise ValueError(f"FSM {self.short_name!r}: a state needs a name")
        if name in self._states:
            raise ValueError(f"FSM {self.short_name!r} already has a state {name!r}")
        if initial and self._initial is not None:
            raise ValueError(
                f"FSM {self.short_name!r} already starts in {self._initial!r}; "
                f"{name!r} cannot be initial too"
            )
        state.attach(self, name)
        self._states[name] = state
        self._transitions.setdefault(name, [])
        if initial:
            self._initial = name

    def add_transition(self, source: str, dest: str) -> None:
        """Declare that state `source` may go to state `dest` (itself included).

        Args:
            source: the state it leaves.
            dest: the state it enters.

        Raises:
            ValueError: either state was not added yet.
        """
        for name in (source, dest):
            if name not in self._states:
                raise ValueError(
                    f"FSM {self.short_name!r} has no state {name!r}; add_state() it first"
                )
        if dest not in self._transitions[source]:
            self._transitions[source].append(dest)

    # -- reading it ----------------------------------------------------------------------

    @property
    def current_state(self) -> str | None:
        """The state running now or next; after the FSM ended, the state it ended in (the
        source of a refused transition). The initial state before it ran, None without one.
        """
        return self._current if self._current is not None else self._initial

    @property
    def initial_state(self) -> str | None:
        """The initial state's name, None before one is added."""
        return self._initial

    @property
    def states(self) -> dict[str, State]:
        """The states by name, in the order they were added (a copy)."""
        return dict(self._states)

    @property
    def transitions(self) -> list[tuple[str, str]]:
        """The declared transitions as (source, dest) pairs, in the order declared."""
        return [(src, dst) for src, dests in self._transitions.items() for dst in dests]

    def is_valid_transition(self, source: str, dest: str) -> bool:
        """Whether `source` -> `dest` was declared.

        Args:
            source: a state name.
            dest: a state name.

        Returns:
            True when the FSM may go from `source` to `dest`.
        """
        return dest in self._transitions.get(source, ())

    def describe(self) -> dict[str, Any]:
        """`Behaviour.describe()` plus the current state, the states and the transitions.

        Returns:
            What `list_behaviours`, `describe` and `status` show of it.
        """
        info = super().describe()
        info["current_state"] = self.current_state
        info["initial_state"] = self._initial
        info["states"] = list(self._states)
        info["transitions"] = [list(pair) for pair in self.transitions]
        return info

    def to_mermaid(self) -> str:
        """A Mermaid `stateDiagram-v2` of its states and transitions, the current state
        highlighted (paste it into a Markdown file, or mermaid.live).

        Returns:
            The diagram's source.
        """
        return fsm_diagram(list(self._states), self.transitions, self._initial, self._current)

    # -- running it ----------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart) it: a new run begins in the initial state."""
        if self.task is None or self.task.done():
            self._current = None
        super().start()

    async def run(self) -> None:
        """One step: the current state's `run()`, then the transition it asked for (or
        the end of the FSM). Override the states, not this.
        """
        if self._current is None:
            if self._initial is None:
                self._fail(f"FSM {self.short_name!r} has no initial state")
                return
            self._current = self._initial
        source = self._current
        state = self._states[source]
        state.next_state = None
        await state.run()
        dest = state.next_state
        if self._stop:  # killed or stopped during the state's run(): no transition
            return
        if dest is None:
            self._end_run(DONE)
        elif self.is_valid_transition(source, dest):
            self._current = dest
        else:
            known = "" if dest in self._states else " (no such state)"
            self._fail(f"undeclared transition {source!r} -> {dest!r}{known}")

    def _fail(self, error: str) -> None:
        log.error("%s: %s; the FSM ends", self.name, error)
        self._end_run(FAILED, error)
