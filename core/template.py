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

__all__ = [
    "AllOf",
    "AnyOf",
    "Not",
    "OneOf",
    "Template",
    "TemplateOps",
    "declared_body_type",
    "topic_matches",
]


class TemplateOps:
    """The operators that combine templates: `a & b` (all match), `a | b` (any matches),
    `a ^ b` (exactly one matches) and `~a` (does not match). The combined templates
    (`AllOf`, `AnyOf`, `OneOf`, `Not`) mix it in; `Template` has the same operators. Chains
    flatten: `a ^ b ^ c` matches when exactly one of the three does (not a parity).
    """

    def __and__(self, other: Any) -> AllOf:
        """Both match.

        Args:
            other: a template.

        Returns:
            The combined template.
        """
        return AllOf(_operands(self, AllOf) + _operands(other, AllOf))

    def __or__(self, other: Any) -> AnyOf:
        """At least one matches.

        Args:
            other: a template.

        Returns:
            The combined template.
        """
        return AnyOf(_operands(self, AnyOf) + _operands(other, AnyOf))

    def __xor__(self, other: Any) -> OneOf:
        """Exactly one matches (of all the templates in a chain of `^`).

        Args:
            other: a template.

        Returns:
            The combined template.
        """
        return OneOf(_operands(self, OneOf) + _operands(other, OneOf))

    def __invert__(self) -> Not:
        """It does not match.

        Returns:
            The negated template (`~~t` is `t` again).
        """
        return Not(self)


def _operands(template: Any, kind: type[AllOf | AnyOf | OneOf]) -> tuple[Any, ...]:
    """A template's operands for a combination of `kind`: its own when it is one already."""
    return template.templates if type(template) is kind else (template,)


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

    def __xor__(self, other: Any) -> OneOf:
        """Exactly one of this and `other` matches (see `TemplateOps`).

        Args:
            other: a template.

        Returns:
            The combined template.
        """
        return OneOf((self, *_operands(other, OneOf)))

    def __invert__(self) -> Not:
        """This template does not match.

        Returns:
            The negated template.
        """
        return Not(self)


@dataclass(frozen=True)
class AllOf(TemplateOps):
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
class AnyOf(TemplateOps):
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


@dataclass(frozen=True)
class OneOf(TemplateOps):
    """Matches when exactly one of `templates` matches (`t1 ^ t2`).

    Attributes:
        templates: the templates (anything with a `match(msg)` method), at least two.
    """

    templates: tuple[Any, ...]

    def match(self, msg: Message) -> bool:
        """Whether exactly one of the templates matches.

        Args:
            msg: the message.

        Returns:
            True when one template and no other matches it.
        """
        matched = 0
        for template in self.templates:
            if template.match(msg):
                matched += 1
                if matched > 1:
                    return False
        return matched == 1


@dataclass(frozen=True)
class Not(TemplateOps):
    """Matches what `template` does not match (`~t`).

    Attributes:
        template: the template negated (anything with a `match(msg)` method).
    """

    template: Any

    def match(self, msg: Message) -> bool:
        """Whether the template does not match.

        Args:
            msg: the message.

        Returns:
            True when `template` does not match it.
        """
        return not self.template.match(msg)

    def __invert__(self) -> Any:
        """The negated template itself (`~~t` is `t`).

        Returns:
            `template`.
        """
        return self.template


def declared_body_type(template: Any) -> Any:
    """The body type every message a template matches decodes into, if it says one.

    A `Template`'s `body_type`; for `AllOf` (`a & b`) the first one its templates declare
    (each must match, so each one's type holds). `AnyOf`, `OneOf` and `Not` promise no
    single type.

    Args:
        template: a template, a combination of templates, or None.

    Returns:
        The type, or None.
    """
    if isinstance(template, Template):
        return template.body_type
    if isinstance(template, AllOf):
        for member in template.templates:
            found = declared_body_type(member)
            if found is not None:
                return found
    return None
