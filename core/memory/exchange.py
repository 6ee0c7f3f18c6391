"""Exchanges of the memory:// broker: their bindings and how a message matches them.

An `Exchange` holds its bindings to queues and to other exchanges and answers which
destinations a routing key (or, for a headers exchange, a message's headers) reaches:
direct, fanout and topic by the routing key (core/topics.py's matcher, shared with
templates and the gateway), headers through `headers.Pattern`. Following exchange-to-
exchange bindings and alternate exchanges is the broker's job (broker.py). `predeclared`
gives the exchanges every RabbitMQ vhost starts with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..topics import compile_topic, split_words, words_match
from .arguments import equivalent, inequivalent
from .errors import error
from .headers import Pattern, binding_problem

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


def split_key(key: str) -> list[str]:
    """Topic words as RabbitMQ splits them: "" has no words, "a." has two."""
    return split_words(key)


def topic_matches(pattern: list[str], words: list[str]) -> bool:
    """`*` matches exactly one word, `#` zero or more (core/topics.py's matcher)."""
    return words_match(pattern, words)


class Binding:
    """One binding of an exchange to a queue or another exchange."""

    __slots__ = ("arguments", "destination", "pattern", "routing_key", "words")

    def __init__(
        self, destination: Any, routing_key: str, arguments: dict[str, Any], headers: bool
    ) -> None:
        self.destination = destination
        self.routing_key = routing_key
        self.arguments = arguments
        self.words = split_key(routing_key)
        # What a binding of a headers exchange matches, compiled once.
        self.pattern = Pattern(arguments) if headers else None

    def same(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> bool:
        return (
            self.destination is destination
            and self.routing_key == routing_key
            and self.arguments == arguments
        )


class Exchange:
    """An exchange and its bindings. Destinations are queues or other Exchanges."""

    __slots__ = (
        "_cache",
        "arguments",
        "auto_delete",
        "bindings",
        "durable",
        "internal",
        "name",
        "type",
    )

    def __init__(
        self,
        name: str,
        type: str,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = dict(arguments or {})
        self.bindings: list[Binding] = []
        # routing key -> destinations; agents publish on few keys, so routing is a lookup
        self._cache: dict[str, list[Any]] = {}

    @property
    def alternate(self) -> str | None:
        value = self.arguments.get("alternate-exchange")
        return value if isinstance(value, str) else None

    def equivalence_problem(
        self,
        type: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> str | None:
        for key, have, want in (
            ("type", self.type, type),
            ("durable", self.durable, durable),
            ("auto_delete", self.auto_delete, auto_delete),
            ("internal", self.internal, internal),
        ):
            if have != want:
                return inequivalent("exchange", self.name, key, want, have)
        key = "alternate-exchange"
        have_ae, want_ae = self.arguments.get(key), arguments.get(key)
        if (have_ae is not None or want_ae is not None) and (
            have_ae is None or want_ae is None or not equivalent(have_ae, want_ae)
        ):
            return inequivalent("exchange", self.name, key, want_ae, have_ae)
        return None

    def bind(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> None:
        for b in self.bindings:
            if b.same(destination, routing_key, arguments):
                return
        self.bindings.append(
            Binding(destination, routing_key, arguments, headers=self.type == "headers")
        )
        self._cache.clear()

    def unbind(self, destination: Any, routing_key: str, arguments: dict[str, Any]) -> bool:
        for i, b in enumerate(self.bindings):
            if b.same(destination, routing_key, arguments):
                del self.bindings[i]
                self._cache.clear()
                return True
        return False

    def unbind_all(self, destination: Any) -> bool:
        kept = [b for b in self.bindings if b.destination is not destination]
        if len(kept) == len(self.bindings):
            return False
        self.bindings = kept
        self._cache.clear()
        return True

    def match(self, routing_key: str, headers: Callable[[], dict[str, Any]]) -> list[Any]:
        """Destinations of the bindings this routing key (or these headers, as
        headers.routing_headers gives them) match."""
        if self.type == "headers":
            found = headers()
            return _unique(
                b.destination
                for b in self.bindings
                if b.pattern is not None and b.pattern.matches(found)
            )
        cached = self._cache.get(routing_key)
        if cached is not None:
            return cached
        if self.type == "fanout":
            result = _unique(b.destination for b in self.bindings)
        elif self.type == "direct":
            result = _unique(b.destination for b in self.bindings if b.routing_key == routing_key)
        else:
            words = split_key(routing_key)
            result = _unique(
                b.destination
                for b in self.bindings
                if compile_topic(b.routing_key).match_words(words)
            )
        if len(self._cache) >= 4096:  # routing keys may be unbounded
            self._cache.clear()
        self._cache[routing_key] = result
        return result

    def match_keys(
        self, routing_keys: tuple[str, ...], headers: Callable[[], dict[str, Any]]
    ) -> list[Any]:
        """Destinations for a message with several routing keys (its CC and BCC keys after
        the publish's own): each destination once, in order of the keys."""
        if len(routing_keys) == 1 or self.type in ("fanout", "headers"):
            return self.match(routing_keys[0], headers)
        return _unique(d for key in routing_keys for d in self.match(key, headers))


def _unique(items: Any) -> list[Any]:
    return list(dict.fromkeys(items))


def predeclared() -> dict[str, Exchange]:
    """The exchanges every RabbitMQ vhost starts with."""
    return {
        "": Exchange("", "direct", durable=True),
        "amq.direct": Exchange("amq.direct", "direct", durable=True),
        "amq.fanout": Exchange("amq.fanout", "fanout", durable=True),
        "amq.topic": Exchange("amq.topic", "topic", durable=True),
        "amq.headers": Exchange("amq.headers", "headers", durable=True),
        "amq.match": Exchange("amq.match", "headers", durable=True),
        "amq.rabbitmq.trace": Exchange("amq.rabbitmq.trace", "topic", durable=True, internal=True),
    }


def check_binding(source: Exchange, args: dict[str, Any], method: tuple[int, int]) -> None:
    """The exchange type's check of a new binding's arguments (headers: x-match)."""
    if source.type == "headers":
        problem = binding_problem(args)
        if problem:
            raise error("PRECONDITION_FAILED", problem, method)
