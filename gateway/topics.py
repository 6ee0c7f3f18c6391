"""The topic rules of the gateway: what may be published to, what may be subscribed to.

One rule for every way in: `POST /topics/{routing_key}` and the WebSocket `publish` both
refuse a routing key holding `*` or `#` (a published key is literal: a wildcard in it
would reach only the subscribers whose own pattern happens to match those characters),
and the WebSocket `subscribe` takes AMQP topic patterns. Each function returns the
sentence to tell the client, or None when the name is fine.
"""

from __future__ import annotations

from typing import Any

MAX_NAME_BYTES = 255  # routing keys and binding keys are AMQP short strings


def topic_problem(topic: Any) -> str | None:
    """Why `topic` cannot be published to, or None when it can.

    Args:
        topic: the routing key as the client gave it (any JSON value).
    """
    if not isinstance(topic, str) or not topic:
        return 'publish needs a "topic" such as "sensors.t1"'
    if len(topic.encode()) > MAX_NAME_BYTES:
        return "a topic is at most 255 bytes long"
    if "*" in topic or "#" in topic:
        return f"publish to a concrete topic, not {topic!r}: '*' and '#' only work in subscribe"
    return None


def pattern_problem(topic: Any) -> str | None:
    """Why `topic` cannot be a subscription pattern, or None when it can.

    Args:
        topic: the pattern as the client gave it (any JSON value).
    """
    if not isinstance(topic, str) or not topic:
        return 'subscribe needs a "topic" pattern such as "sensors.*" or "#"'
    if len(topic.encode()) > MAX_NAME_BYTES:
        return "a topic pattern is at most 255 bytes long"
    for word in topic.split("."):
        if word not in ("*", "#") and ("*" in word or "#" in word):
            return (
                f"invalid pattern {topic!r}: {word!r} mixes a wildcard with other characters;"
                " '*' (one word) and '#' (any words) stand alone between dots, "
                "as in 'sensors.*' or 'sensors.#'"
            )
    return None
