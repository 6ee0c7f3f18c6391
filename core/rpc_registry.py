"""The methods an agent serves: its own `@expose`d ones and those of its behaviours.

A behaviour's `@expose`d methods (the original munggoggo's `configure_rpc`) are callable
through its agent, by their own names, while the behaviour runs: the request runs the method
on the behaviour. Each name belongs to one owner: a behaviour whose exposed method has the
name of one of the agent's, or of another behaviour's, is refused when it is added
(`MethodNameClash`), so that a call never depends on which behaviour happens to run. A
behaviour that stopped or ended keeps its names (it may be started again) but serves none
of them: calling one is "method not found" (-32601).
"""

from __future__ import annotations

import weakref
from typing import Any

from ._speedups import MunggoggoError
from .rpc import ExposedMethod, exposed_methods
from .rpc_schemas import method_schema

__all__ = ["MethodNameClash", "MethodRegistry", "behaviour_methods"]


class MethodNameClash(MunggoggoError, ValueError):
    """A behaviour exposes a method under a name the agent or another behaviour of the
    agent already serves; raised by `Agent.add_behaviour`.

    Args:
        message: which name, and whose it is.
        name: the method name both expose ("" when not given).

    Attributes:
        name: the method name both expose.
    """

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.name))


# Weak: behaviour classes made on the fly (in tests, by factories) are not kept alive.
_by_class: weakref.WeakKeyDictionary[type, dict[str, ExposedMethod]] = weakref.WeakKeyDictionary()


def behaviour_methods(cls: type) -> dict[str, ExposedMethod]:
    """The `@expose`d methods of a behaviour class, by name (built once per class).

    Args:
        cls: the behaviour class.

    Returns:
        Its exposed methods, inherited ones included.
    """
    methods = _by_class.get(cls)
    if methods is None:
        methods = _by_class[cls] = exposed_methods(cls)
    return methods


class MethodRegistry:
    """Which object serves each exposed method name of one agent.

    Args:
        agent_methods: the agent's own exposed methods (its class's), by name.

    Attributes:
        agent_methods: the agent's own exposed methods, by name.
    """

    def __init__(self, agent_methods: dict[str, ExposedMethod]) -> None:
        self.agent_methods = agent_methods
        # name -> (the behaviour, its method); a behaviour's names stay taken while it is
        # one of the agent's, running or not.
        self._behaviour_methods: dict[str, tuple[Any, ExposedMethod]] = {}
        self._schemas: dict[ExposedMethod, dict[str, Any]] = {}

    def add_behaviour(self, behaviour: Any) -> None:
        """Take the names of a behaviour's exposed methods.

        Args:
            behaviour: the behaviour being added to the agent.

        Raises:
            MethodNameClash: one of its names is the agent's, or another behaviour's;
                then none of its names is taken.
        """
        methods = behaviour_methods(type(behaviour))
        for name in methods:
            if name in self.agent_methods:
                raise MethodNameClash(
                    f"behaviour {behaviour.short_name!r} exposes {name!r}, a method its "
                    "agent exposes already",
                    name,
                )
            owner = self._behaviour_methods.get(name)
            if owner is not None and owner[0] is not behaviour:
                raise MethodNameClash(
                    f"behaviour {behaviour.short_name!r} exposes {name!r}, which behaviour "
                    f"{owner[0].short_name!r} of the agent exposes already",
                    name,
                )
        for name, method in methods.items():
            self._behaviour_methods[name] = (behaviour, method)

    def remove_behaviour(self, behaviour: Any) -> None:
        """Give back the names of a behaviour that is no longer the agent's.

        Args:
            behaviour: the behaviour.
        """
        for name in [n for n, (b, _) in self._behaviour_methods.items() if b is behaviour]:
            del self._behaviour_methods[name]

    def lookup(self, name: str) -> tuple[Any, ExposedMethod] | None:
        """Who serves a method name right now.

        Args:
            name: the requested method name.

        Returns:
            `(None, method)` for one of the agent's own methods (it runs on the agent),
            `(behaviour, method)` for a running behaviour's, None when nobody serves it.
        """
        method = self.agent_methods.get(name)
        if method is not None:
            return None, method
        found = self._behaviour_methods.get(name)
        if found is None or not found[0].is_running:
            return None
        return found

    def served(self) -> dict[str, ExposedMethod]:
        """Every method served right now: the agent's and its running behaviours'.

        Returns:
            The methods by name.
        """
        served = dict(self.agent_methods)
        for name, (behaviour, method) in self._behaviour_methods.items():
            if behaviour.is_running:
                served[name] = method
        return served

    def names(self) -> list[str]:
        """The names of every method served right now, sorted.

        Returns:
            The names.
        """
        return sorted(self.served())

    def schemas(self) -> dict[str, dict[str, Any]]:
        """The contract of every method served right now (see `rpc_schemas.method_schema`),
        each built once.

        Returns:
            method name -> `params`, `result` and `doc`.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, method in sorted(self.served().items()):
            schema = self._schemas.get(method)
            if schema is None:
                schema = self._schemas[method] = method_schema(method)
            out[name] = schema
        return out
