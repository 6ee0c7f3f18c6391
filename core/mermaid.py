"""Mermaid diagrams of FSMs and agents (the original munggoggo drew its agents as a graph).

`fsm_diagram` draws one finite-state machine as a `stateDiagram-v2`; `agent_diagram` draws
an agent as a `flowchart`: the agent, its behaviours (kind and state), the topics they
subscribe to, and each FSM as a box holding its states and transitions. Both read only
public attributes. An FSM's states keep their names as ids where Mermaid allows (`red -->
green`); any other name, and everything in the agent diagram, is a quoted label on a
generated id, so any name is safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent_base import AgentBase

__all__ = ["agent_diagram", "fsm_diagram", "label", "state_ids"]

_INDENT = "    "
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Words a stateDiagram reads as its own syntax: a state so named gets a generated id.
_KEYWORDS = frozenset(
    (
        "accdescr",
        "acctitle",
        "as",
        "choice",
        "class",
        "classdef",
        "click",
        "concurrent",
        "default",
        "direction",
        "empty",
        "end",
        "fork",
        "hide",
        "href",
        "join",
        "left",
        "note",
        "of",
        "over",
        "right",
        "scale",
        "state",
        "statediagram",
        "style",
    )
)
_CURRENT_STYLE = "classDef current stroke-width:3px,font-weight:bold"


def label(text: str) -> str:
    """`text` as the inside of a quoted Mermaid label: the characters that would end the
    label or start markup are written as Mermaid entity codes.

    Args:
        text: any text.

    Returns:
        The text, safe between double quotes.
    """
    return (
        text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


def state_ids(states: Iterable[str]) -> dict[str, str]:
    """A Mermaid id for each state name: the name itself when it is a plain identifier
    and no keyword (so diagrams read `red --> green`), else `s<index>`, unique either way.

    Args:
        states: the state names, in order.

    Returns:
        Name -> id, in the same order.
    """
    names = list(states)
    plain = {n for n in names if _IDENTIFIER.fullmatch(n) and n.lower() not in _KEYWORDS}
    ids: dict[str, str] = {}
    for i, name in enumerate(names):
        sid = name if name in plain else f"s{i}"
        while sid != name and sid in plain:  # a state may be called "s1" itself
            sid += "_"
        ids[name] = sid
    return ids


def fsm_diagram(
    states: Iterable[str],
    transitions: Iterable[tuple[str, str]],
    initial: str | None,
    current: str | None,
) -> str:
    """A `stateDiagram-v2` of a finite-state machine.

    Args:
        states: the state names, in order.
        transitions: the (source, dest) pairs declared.
        initial: the initial state (drawn from the start marker), or None.
        current: the state to highlight, or None.

    Returns:
        The diagram's source, one statement a line.
    """
    ids = state_ids(states)
    lines = ["stateDiagram-v2"]
    lines += [
        f"{_INDENT}{sid}" if sid == name else f'{_INDENT}state "{label(name)}" as {sid}'
        for name, sid in ids.items()
    ]
    if initial is not None:
        lines.append(f"{_INDENT}[*] --> {ids[initial]}")
    lines += [f"{_INDENT}{ids[src]} --> {ids[dst]}" for src, dst in transitions]
    if current is not None:
        lines += [f"{_INDENT}{_CURRENT_STYLE}", f"{_INDENT}class {ids[current]} current"]
    return "\n".join(lines)


def agent_diagram(agent: AgentBase) -> str:
    """A `flowchart` of an agent: its behaviours with their kind and state, the topics
    they subscribe to, and its FSMs with their states and transitions.

    Args:
        agent: the agent to draw.

    Returns:
        The diagram's source, one statement a line.
    """
    lines = ["flowchart LR", f'{_INDENT}agent(["{label(agent.identity)}<br/>{agent.state}"])']
    topics: dict[str, str] = {}
    current: list[str] = []
    for i, behaviour in enumerate(agent.behaviours.values()):
        bid = f"b{i}"
        title = f"{label(behaviour.short_name)}<br/>{behaviour.kind}, {behaviour.state}"
        fsm = _fsm_parts(behaviour)
        if fsm is None:
            lines.append(f'{_INDENT}{bid}["{title}"]')
        else:
            lines += _fsm_subgraph(bid, title, *fsm)
            if fsm[3] is not None:
                current.append(f"{bid}_s{list(fsm[0]).index(fsm[3])}")
        lines.append(f"{_INDENT}agent --> {bid}")
        for key in behaviour.binding_keys:
            if key not in topics:
                topics[key] = tid = f"t{len(topics)}"
                lines.append(f'{_INDENT}{tid}[/"{label(key)}"/]')
            lines.append(f"{_INDENT}{topics[key]} -.-> {bid}")
    if current:
        lines += [f"{_INDENT}{_CURRENT_STYLE}", f"{_INDENT}class {','.join(current)} current"]
    return "\n".join(lines)


def _fsm_parts(
    behaviour: Any,
) -> tuple[list[str], list[tuple[str, str]], str | None, str | None] | None:
    """(states, transitions, initial, current) of an FSM behaviour (core/fsm.py, kind
    "fsm"; read by its public names, as that module imports this one), None for the
    other kinds.
    """
    if behaviour.kind != "fsm":
        return None
    running = behaviour.current_state if behaviour.task is not None else None
    return list(behaviour.states), behaviour.transitions, behaviour.initial_state, running


def _fsm_subgraph(
    bid: str,
    title: str,
    states: list[str],
    transitions: list[tuple[str, str]],
    initial: str | None,
    current: str | None,
) -> list[str]:
    """An FSM as a subgraph: a start marker, a rounded node per state, its transitions."""
    inner = _INDENT * 2
    ids = {name: f"{bid}_s{i}" for i, name in enumerate(states)}
    lines = [f'{_INDENT}subgraph {bid} ["{title}"]', f"{inner}direction LR"]
    lines += [f'{inner}{sid}("{label(name)}")' for name, sid in ids.items()]
    if initial is not None:
        lines += [f'{inner}{bid}_start((" ")) --> {ids[initial]}']
    lines += [f"{inner}{ids[src]} --> {ids[dst]}" for src, dst in transitions]
    lines.append(f"{_INDENT}end")
    return lines
