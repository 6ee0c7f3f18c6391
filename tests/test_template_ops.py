"""core/template.py's `~t` (not) and `t1 ^ t2` (exactly one), beside `&` and `|`.

On their own: every combination over every message of a small table agrees with the
boolean it stands for, chains flatten (`a ^ b ^ c` is exactly one of three, not a parity)
and combinations combine further. In an agent, on RabbitMQ and memory://: a behaviour
whose template is `~t` gets what `t` refuses, one with `a ^ b` what exactly one accepts.
"""

from __future__ import annotations

import itertools

import pytest
from broker_tools import wait_until
from mesh_tools import MessageCollector, dead_letter_queue, delivered, purge_dead_letters, uid

from munggoggo import Agent, Template
from munggoggo.template import AllOf, AnyOf, Not, OneOf

ALICE = Template(sender="alice")
URGENT = Template(headers={"prio": "high"})
EVENT = Template(routing_key="events.#")

# Every mix of sender alice or bob, urgent or not, on events.* or not.
MESSAGES = [
    delivered(
        b"x",
        routing_key="events.door" if event else "logs.door",
        app_id=sender,
        headers={"prio": "high" if urgent else "low"},
    )
    for sender, urgent, event in itertools.product(("alice", "bob"), (True, False), (True, False))
]


def test_not_matches_what_the_template_refuses():
    for msg in MESSAGES:
        assert (~ALICE).match(msg) is (not ALICE.match(msg))
    assert isinstance(~ALICE, Not)
    assert ~~ALICE == ALICE  # double negation is the template itself


def test_xor_matches_when_exactly_one_matches():
    either = ALICE ^ URGENT
    assert isinstance(either, OneOf)
    for msg in MESSAGES:
        assert either.match(msg) is (ALICE.match(msg) != URGENT.match(msg))


def test_a_chain_of_xor_means_exactly_one_of_all_not_a_parity():
    one = ALICE ^ URGENT ^ EVENT
    assert one == OneOf((ALICE, URGENT, EVENT))
    for msg in MESSAGES:
        hits = [t.match(msg) for t in (ALICE, URGENT, EVENT)]
        assert one.match(msg) is (hits.count(True) == 1), hits
    all_three = delivered(b"x", routing_key="events.a", app_id="alice", headers={"prio": "high"})
    assert not one.match(all_three)  # a parity would say three is odd: match


def test_combinations_combine_further():
    cases = {
        "~(a & b)": (~(ALICE & URGENT), lambda a, u, e: not (a and u)),
        "(a | b) ^ c": ((ALICE | URGENT) ^ EVENT, lambda a, u, e: (a or u) != e),
        "~a & ~b": (~ALICE & ~URGENT, lambda a, u, e: not a and not u),
        "(a ^ b) | c": ((ALICE ^ URGENT) | EVENT, lambda a, u, e: (a != u) or e),
        "~(a ^ b)": (~(ALICE ^ URGENT), lambda a, u, e: a == u),
        "a & b & c": (ALICE & URGENT & EVENT, lambda a, u, e: a and u and e),
    }
    for name, (template, truth) in cases.items():
        for msg in MESSAGES:
            hits = (ALICE.match(msg), URGENT.match(msg), EVENT.match(msg))
            assert template.match(msg) is truth(*hits), (name, hits)
    assert isinstance(ALICE & URGENT & EVENT, AllOf)
    assert isinstance((ALICE | URGENT) | EVENT, AnyOf)
    assert len((ALICE & URGENT & EVENT).templates) == 3


# -- in an agent, on RabbitMQ and memory:// ----------------------------------------------


@pytest.mark.timeout(60)
async def test_not_and_xor_route_direct_messages(mesh_url):
    receiver = Agent(uid("rx"), url=mesh_url)
    alice = Agent(uid("alice"), url=mesh_url)
    bob = Agent(uid("bob"), url=mesh_url)
    async with receiver, alice, bob:
        dead = await dead_letter_queue(bob, receiver.identity)
        from_alice = Template(sender=alice.identity)
        urgent = Template(headers={"prio": "high"})
        # The first behaviour whose template matches gets the message: exactly-one first,
        # then what is not from alice; alice's urgent message matches neither.
        one = await receiver.add_behaviour(
            MessageCollector(receiver, template=from_alice ^ urgent, name="one")
        )
        others = await receiver.add_behaviour(
            MessageCollector(receiver, template=~from_alice, name="others")
        )
        await alice.send(receiver.identity, "alice calm")  # alice only: one
        await alice.send(receiver.identity, "alice urgent", headers={"prio": "high"})  # both
        await bob.send(receiver.identity, "bob urgent", headers={"prio": "high"})  # urgent: one
        await bob.send(receiver.identity, "bob calm")  # neither: ~from_alice
        assert await wait_until(
            lambda: len(one.got) == 2 and len(others.got) == 1 and len(dead) == 1
        )
        assert sorted(m.body for m in one.got) == [b"alice calm", b"bob urgent"]
        assert [m.body for m in others.got] == [b"bob calm"]
        assert [d.body for d in dead] == [b"alice urgent"]  # both matched: neither took it
        await purge_dead_letters(bob, receiver.identity)
