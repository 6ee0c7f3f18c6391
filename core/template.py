"""Message templates: which direct messages a behaviour wants.

A template matches on sender, kind, routing key (AMQP topic patterns with `*` and `#`),
headers (all given items must be equal) and body type (the body must decode into it).
Topic matching itself is core/topics.py's (`topic_matches` is re-exported here).
Direct messages to an agent's inbox go to the first behaviour whose template matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .envelope import DecodeError
from .message import Message
from .topics import topic_matches

__all__ = ["AllOf", "AnyOf", "Template", "topic_matches"]


@dataclass(frozen=True)
class Template:
    """Match criteria; a field left as None matches anything.

    Combine templates with `&` (`AllOf`) and `|` (`AnyOf`).

    Attributes:
        sender: the sending agent's identity.
        kind: the message kind (`message`, `rpc`, `control`).
        routing_key: a topic pattern the routing key matches (`*` one word, `#` zero or
            more).
        headers: headers the message carries with these values (empty: any).
        body_type: a type the body decodes into (a msgspec Struct, a builtin type).
    """

    sender: str | None = None
    kind: str | None = None
    routing_key: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    body_type: Any = None

    def match(self, msg: Message) -> bool:
        """Whether a message meets every criterion.

        Args:
            msg: the message.

        Returns:
            True if it matches.
        """
        if self.sender is not None and msg.sender != self.sender:
            return False
        if self.kind is not None and msg.kind != self.kind:
            return False
        if self.routing_key is not None and not topic_matches(self.routing_key, msg.routing_key):
            return False
        if self.headers:
            have = msg.headers
            for key, value in self.headers.items():
                if have.get(key) != value:
                    return False
        if self.body_type is not None:
            try:
                msg.decode(self.body_type)
            except DecodeError:
                return False
        return True

    def __and__(self, other: Template) -> AllOf:
        return AllOf((self, other))

    def __or__(self, other: Template) -> AnyOf:
        return AnyOf((self, other))


@dataclass(frozen=True)
class AllOf:
    """Matches what every one of its templates matches (`template & other`).

    Attributes:
        templates: the templates (anything with a `match(msg)` method).
    """

    templates: tuple[Any, ...]

    def match(self, msg: Message) -> bool:
        """Whether every template matches the message.

        Args:
            msg: the message.

        Returns:
            True if all match.
        """
        return all(t.match(msg) for t in self.templates)


@dataclass(frozen=True)
class AnyOf:
    """Matches what any one of its templates matches (`template | other`).

    Attributes:
        templates: the templates (anything with a `match(msg)` method).
    """

    templates: tuple[Any, ...]

    def match(self, msg: Message) -> bool:
        """Whether any template matches the message.

        Args:
            msg: the message.

        Returns:
            True if one matches.
        """
        return any(t.match(msg) for t in self.templates)
