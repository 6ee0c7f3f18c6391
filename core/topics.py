"""AMQP topic matching, RabbitMQ's rules in one place.

Owns the one answer to "does binding key P match routing key K" used by message templates
(core/template.py), the memory:// broker (core/memory/exchange.py) and the gateway's
WebSocket fan-out (gateway/mesh.py). The rules are RabbitMQ's, checked against 3.10 and 4.3
by tests/test_topics.py:

* both keys are split at every `.`; an empty key has no words, so `a.` is the two words
  `a` and `` and `.` is two empty words;
* `*` matches exactly one word, an empty one included; `#` matches zero or more words;
  any other word matches itself only (an empty word matches an empty word).

How: a pattern without wildcards is a string comparison; one with at most one `#` (runs of
`#` collapsed: `#.#` is `#`) is a regular expression over "." + routing key, each word
written with its leading dot so empty words need no special case; a pattern with more `#`
(they come from WebSocket clients) is walked as a small NFA over words (a bit set of
positions): O(words x pattern words), never the polynomial-to-exponential backtracking a
regex with several `#` groups can take. `match_words` (pre-split keys, memory://) always
walks the words; the tests hold both ways to the broker's answers.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["TopicPattern", "compile_topic", "split_words", "topic_matches", "words_match"]


def split_words(key: str) -> list[str]:
    """The words of a routing or binding key as RabbitMQ splits them.

    Args:
        key: the key.

    Returns:
        `[]` for the empty key, else `key.split(".")` (empty words kept).
    """
    return key.split(".") if key else []


class TopicPattern:
    """A binding key prepared for matching many routing keys."""

    __slots__ = (
        "_empty_key_matches",
        "_everything",
        "_exact",
        "_hash_free",
        "_hashes",
        "_regex",
        "_size",
        "key",
        "words",
    )

    def __init__(self, binding_key: str) -> None:
        """Args:
        binding_key: the AMQP topic binding key (`*` and `#` stand alone between dots).
        """
        words = split_words(binding_key)
        # `#.#` matches what `#` matches: collapsing runs keeps the walk short.
        collapsed: list[str] = []
        for word in words:
            if word == "#" and collapsed and collapsed[-1] == "#":
                continue
            collapsed.append(word)
        self.key = binding_key
        self.words = collapsed
        self._size = len(collapsed)
        self._hash_free = "#" not in collapsed
        self._exact = self._hash_free and "*" not in collapsed
        # Bit i set: pattern word i is `#` (a position that may stay or be skipped).
        self._hashes = sum(1 << i for i, word in enumerate(collapsed) if word == "#")
        # The empty key has no words: only `#` (or the empty pattern) matches it.
        self._empty_key_matches = all(word == "#" for word in collapsed)
        self._everything = collapsed == ["#"]
        self._regex = None
        if not self._exact and collapsed.count("#") <= 1:
            pieces = [_REGEX_PIECES.get(word) or r"\." + re.escape(word) for word in collapsed]
            self._regex = re.compile("".join(pieces) + r"\Z").match

    def matches(self, routing_key: str) -> bool:
        """Whether a message published with `routing_key` is routed by this binding.

        Args:
            routing_key: the message's routing key.

        Returns:
            True when it matches.
        """
        if self._exact:
            return routing_key == self.key
        if self._everything:
            return True
        if not routing_key:
            return self._empty_key_matches
        regex = self._regex
        if regex is not None:
            return regex("." + routing_key) is not None
        return self.match_words(routing_key.split("."))

    def match_words(self, words: list[str]) -> bool:
        """`matches` for a routing key already split by `split_words`.

        Args:
            words: the routing key's words.

        Returns:
            True when they match.
        """
        pattern = self.words
        size = self._size
        if self._hash_free:
            if len(words) != size:
                return False
            return all(p == w or p == "*" for p, w in zip(pattern, words, strict=True))
        hashes = self._hashes
        states = self._closure(1)  # bit i: the first i pattern words are matched
        for word in words:
            step = 0
            rest = states
            while rest:
                low = rest & -rest
                rest ^= low
                i = low.bit_length() - 1
                if i == size:
                    continue
                if hashes & low:
                    step |= low  # `#` takes this word and may take more
                else:
                    p = pattern[i]
                    if p == "*" or p == word:
                        step |= low << 1
            if not step:
                return False
            states = self._closure(step)
        return bool(states >> size & 1)

    def _closure(self, states: int) -> int:
        """Add the positions reached by letting a `#` match no word."""
        hashes = self._hashes
        while True:
            grown = states | (states & hashes) << 1
            if grown == states:
                return states
            states = grown


# A word of the pattern as a regex over the dotted words of "." + routing key.
_REGEX_PIECES = {"*": r"\.[^.]*", "#": r"(?:\.[^.]*)*"}


@lru_cache(maxsize=4096)
def compile_topic(binding_key: str) -> TopicPattern:
    """The prepared pattern for a binding key (cached).

    Args:
        binding_key: the AMQP topic binding key.

    Returns:
        Its `TopicPattern`.
    """
    return TopicPattern(binding_key)


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Whether RabbitMQ's topic exchange routes `routing_key` through `binding_key`.

    Args:
        binding_key: the pattern (`*` one word, `#` zero or more words).
        routing_key: the message's routing key.

    Returns:
        True when it matches.
    """
    return compile_topic(binding_key).matches(routing_key)


def words_match(pattern: list[str], words: list[str]) -> bool:
    """`topic_matches` for keys already split by `split_words`.

    Args:
        pattern: the binding key's words.
        words: the routing key's words.

    Returns:
        True when they match.
    """
    return compile_topic(".".join(pattern)).match_words(words)
