"""Tests of the Greeter agent with munggoggo's pytest kit.

Run on a fresh memory:// broker per test:   pytest examples/testing
The same tests on RabbitMQ:                  pytest examples/testing --munggoggo-url amqp://guest:guest@127.0.0.1:5672/

`mesh_url` and `mesh_name` are fixtures of munggoggo's pytest plugin (installed with
munggoggo); async tests run under pytest-asyncio.
"""

from __future__ import annotations

import pytest
from greeter import Greeter

from munggoggo import Agent
from munggoggo.testing import MessageRecorder

pytestmark = pytest.mark.asyncio


async def test_a_greeting_is_answered_on_the_reply_topic(mesh_url, mesh_name):
    # Topics and identities from mesh_name: on a RabbitMQ shared by several tests, no
    # other test publishes on these or holds these identities.
    greetings, replies = mesh_name("greetings"), mesh_name("replies")
    async with (
        Greeter(mesh_name("greeter"), url=mesh_url, topic=greetings, reply_topic=replies),
        Agent(mesh_name("probe"), url=mesh_url) as probe,
    ):
        recorder = await probe.add_behaviour(MessageRecorder(probe, binding_keys=[replies]))
        await probe.publish("Ada", greetings)
        await probe.publish("Grace", greetings)

        first, second = await recorder.wait(2, timeout=5)

    assert [first.decode(), second.decode()] == ["hello, Ada", "hello, Grace"]
    assert first.sender == mesh_name("greeter")


async def test_greet_answers_by_rpc(mesh_url, mesh_name):
    async with (
        Greeter(mesh_name("greeter"), url=mesh_url) as greeter,
        Agent(mesh_name("caller"), url=mesh_url) as caller,
    ):
        assert await caller.call(greeter.identity, "greet", "Ada", timeout=5) == "hello, Ada"
