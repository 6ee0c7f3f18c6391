"""Topic matching follows RabbitMQ: the one matcher (core/topics.py) against the real broker.

A table of binding keys and routing keys with the tricky cases (empty words, leading and
trailing dots, `#` in the middle, `*.#.*`, `#.#`, the empty key, long keys): each binding
key gets its own queue on a topic exchange of the test's own, every routing key is
published once, and what the broker delivered must be exactly what our matcher says. The
same table runs on memory://, and the places that match topics (templates, the memory
broker, the gateway) must all use the one matcher.
"""

from __future__ import annotations

import uuid

import pytest

from munggoggo import memory_routing, template, topics
from munggoggo.agent import open_connection
from munggoggo.gateway import mesh
from munggoggo.url import parse_url

LONG_KEY = ".".join(["w"] * 128)[:255]  # 255 bytes, RabbitMQ's limit for a routing key

PATTERNS = [
    "",
    "a",
    "*",
    "#",
    "#.#",
    "*.*",
    "*.#",
    "#.*",
    "*.#.*",
    "a.*",
    "a.#",
    "#.b",
    "a.#.b",
    "a.#.#.b",
    "a.*.b",
    "a.*.#",
    "a..b",
    "a.",
    ".a",
    ".",
    "..",
    "*.",
    ".*",
    "#.",
    ".#",
    "#.a.#",
    "w.#.w",
    "#." + ".".join(["w"] * 100),
    ".".join(["*"] * 128),
]

ROUTING_KEYS = [
    "",
    ".",
    "..",
    "a",
    "b",
    "a.",
    ".a",
    "a.b",
    "a..b",
    "a.x.b",
    "a.x.y.b",
    "x.b",
    "a.b.c",
    "a.a",
    ".b",
    "a.#",
    "#",
    "*",
    "w",
    LONG_KEY,
    LONG_KEY[:-2],
]


def test_templates_the_memory_broker_and_the_gateway_share_one_matcher():
    assert template.topic_matches is topics.topic_matches
    assert mesh.topic_matches is topics.topic_matches
    for pattern in PATTERNS:
        for key in ROUTING_KEYS:
            assert memory_routing.topic_matches(
                memory_routing.split_key(pattern), memory_routing.split_key(key)
            ) == topics.topic_matches(pattern, key), (pattern, key)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.*", "a.", True),  # `*` takes the empty word after the dot
        ("a.*", "a", False),
        ("*", "", False),  # the empty key has no word at all
        ("#", "", True),
        ("", "", True),
        ("a.#.b", "a.b", True),
        ("*.#.*", "a", False),
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),
    ],
)
def test_empty_words_follow_rabbitmq(pattern, key, expected):
    assert topics.topic_matches(pattern, key) is expected


def test_many_hashes_match_without_backtracking_blowup():
    # A pattern a WebSocket client may send: a backtracking regex takes minutes on it.
    pattern = ".".join(["#", "a"] * 20) + ".b"
    key = ".".join(["a"] * 127)
    assert topics.topic_matches(pattern, key) is False
    assert topics.topic_matches(pattern, key[:-1] + "b") is True


async def routed_by_broker(url: str) -> set[tuple[str, str]]:
    """(binding key, routing key) pairs the broker at `url` delivered."""
    conn = await open_connection(parse_url(url), "topics-conformance")
    exchange = f"test.topics.{uuid.uuid4().hex[:8]}"
    delivered: set[tuple[str, str]] = set()
    try:
        ch = await conn.channel()
        await ch.exchange_declare(exchange, "topic", auto_delete=True)
        queues = []
        for i, pattern in enumerate(PATTERNS):
            queue = f"{exchange}.q{i}"
            await ch.queue_declare(queue, exclusive=True)
            await ch.queue_bind(queue, exchange, pattern)
            queues.append(queue)
        for i, key in enumerate(ROUTING_KEYS):
            ch.publish(str(i).encode(), exchange, key)
        await ch.wait_confirms(timeout=10)
        for pattern, queue in zip(PATTERNS, queues, strict=True):
            while (delivery := await ch.get(queue, no_ack=True)) is not None:
                delivered.add((pattern, ROUTING_KEYS[int(bytes(delivery.body))]))
        await ch.exchange_delete(exchange)
    finally:
        await conn.close()
    return delivered


@pytest.mark.rabbitmq
@pytest.mark.timeout(60)
async def test_the_matcher_routes_like_the_broker(mesh_url):
    delivered = await routed_by_broker(mesh_url)
    expected = {(p, k) for p in PATTERNS for k in ROUTING_KEYS if topics.topic_matches(p, k)}
    only_broker = sorted(delivered - expected)
    only_ours = sorted(expected - delivered)
    assert not only_broker and not only_ours, (
        f"the broker routed {only_broker} that our matcher refuses, and did not route "
        f"{only_ours} that our matcher accepts"
    )


def test_whole_keys_and_pre_split_words_get_the_same_answer():
    # `matches` takes shortcuts (string compare, a regex); `match_words` walks the words.
    for pattern in PATTERNS:
        compiled = topics.compile_topic(pattern)
        for key in ROUTING_KEYS:
            assert compiled.matches(key) == compiled.match_words(topics.split_words(key)), (
                pattern,
                key,
            )
