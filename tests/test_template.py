"""core/template.py: which direct messages a behaviour wants.

On their own: a template matches on sender, kind, routing key (topic patterns), headers
(every given item equal) and body type (the body must decode into it), and `&`/`|` combine
templates. In an agent, on RabbitMQ and memory://: a direct message goes to the behaviour
whose template matches, and one that no template accepts is dead-lettered with a reason.
"""

from __future__ import annotations

import msgspec
import pytest
from broker_tools import wait_until
from mesh_tools import (
    MessageCollector,
    Point,
    dead_letter_queue,
    delivered,
    purge_dead_letters,
    uid,
)

from munggoggo import Agent, Template
from munggoggo.agent import REASON_HEADER
from munggoggo.template import AllOf, AnyOf

JSON = "application/json"


def test_an_empty_template_matches_anything():
    assert Template().match(delivered(b"x"))
    assert Template().match(delivered(b"\xff", content_type=JSON, type="rpc"))


def test_sender_and_kind_must_be_equal():
    msg = delivered(b"x", app_id="alice", type="message")
    assert Template(sender="alice").match(msg)
    assert not Template(sender="bob").match(msg)
    assert Template(kind="message").match(msg)
    assert not Template(kind="rpc").match(msg)
    # A message without a type property is a plain message; one without app_id has no sender.
    assert Template(kind="message").match(delivered(b"x"))
    assert not Template(sender="alice").match(delivered(b"x"))


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("sensors.*.temp", "sensors.kitchen.temp", True),
        ("sensors.*.temp", "sensors.kitchen.hall.temp", False),
        ("sensors.#", "sensors", True),
        ("sensors.#", "sensors.a.b", True),
        ("sensors", "sensors.a", False),
    ],
)
def test_routing_keys_match_as_topic_patterns(pattern, key, matches):
    assert Template(routing_key=pattern).match(delivered(b"x", routing_key=key)) is matches


def test_every_given_header_must_be_equal_others_do_not_matter():
    msg = delivered(b"x", headers={"prio": "high", "region": "eu", "n": 1})
    assert Template(headers={"prio": "high"}).match(msg)
    assert Template(headers={"prio": "high", "n": 1}).match(msg)
    assert not Template(headers={"prio": "low"}).match(msg)
    assert not Template(headers={"prio": "high", "absent": "any value"}).match(msg)
    assert not Template(headers={"prio": "high"}).match(delivered(b"x"))  # no headers at all


def test_a_body_type_matches_what_decodes_into_it():
    point = delivered(msgspec.json.encode(Point(1, 2)), content_type=JSON)
    assert Template(body_type=Point).match(point)
    assert not Template(body_type=Point).match(delivered(b'{"x": "one"}', content_type=JSON))
    assert not Template(body_type=Point).match(delivered(b"not json", content_type=JSON))
    assert Template(body_type=dict).match(point)
    assert not Template(body_type=list).match(point)


def test_templates_combine_with_and_and_or():
    urgent = Template(headers={"prio": "high"})
    from_alice = Template(sender="alice")
    both, either = urgent & from_alice, urgent | from_alice
    assert isinstance(both, AllOf) and isinstance(either, AnyOf)
    alice_urgent = delivered(b"x", app_id="alice", headers={"prio": "high"})
    alice_calm = delivered(b"x", app_id="alice", headers={"prio": "low"})
    bob_calm = delivered(b"x", app_id="bob")
    assert both.match(alice_urgent) and not both.match(alice_calm)
    assert either.match(alice_calm) and not either.match(bob_calm)


# -- in an agent, on RabbitMQ and memory:// ----------------------------------------------


async def test_direct_messages_go_to_the_matching_template(mesh_url):
    receiver = Agent(uid("rx"), url=mesh_url)
    sender = Agent(uid("tx"), url=mesh_url)
    async with receiver, sender:
        points = await receiver.add_behaviour(
            MessageCollector(receiver, template=Template(body_type=Point), name="points")
        )
        urgent = await receiver.add_behaviour(
            MessageCollector(receiver, template=Template(headers={"prio": "high"}), name="urgent")
        )
        await sender.send(receiver.identity, Point(1, 2))
        await sender.send(receiver.identity, "wake up", headers={"prio": "high"})
        assert await wait_until(lambda: len(points.got) == 1 and len(urgent.got) == 1)
        assert points.got[0].decode(Point) == Point(1, 2)
        assert points.got[0].content_type == "application/json"
        assert urgent.got[0].body == b"wake up"


async def test_direct_message_nobody_accepts_is_dead_lettered_with_a_reason(mesh_url):
    receiver = Agent(uid("rx"), url=mesh_url)
    sender = Agent(uid("tx"), url=mesh_url)
    async with receiver, sender:
        dead = await dead_letter_queue(sender, receiver.identity)
        await receiver.add_behaviour(
            MessageCollector(receiver, template=Template(sender="someone-else"))
        )
        await sender.send(receiver.identity, "unwanted")
        assert await wait_until(lambda: len(dead) == 1)
        headers = dead[0].properties.headers
        assert "no behaviour template matches" in headers[REASON_HEADER]
        assert headers["x-munggoggo-agent"] == receiver.identity
        assert dead[0].body == b"unwanted"
        assert receiver.state == "running"
        await purge_dead_letters(sender, receiver.identity)
