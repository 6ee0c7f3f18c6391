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
    """Match criteria; a field left as None matches anything."""

    sender: str | None = None
    kind: str | None = None
    routing_key: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    body_type: Any = None

    def match(self, msg: Message) -> bool:
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
    templates: tuple[Any, ...]

    def match(self, msg: Message) -> bool:
        return all(t.match(msg) for t in self.templates)


@dataclass(frozen=True)
class AnyOf:
    templates: tuple[Any, ...]

    def match(self, msg: Message) -> bool:
        return any(t.match(msg) for t in self.templates)
