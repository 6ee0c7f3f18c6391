"""core/publishing.py: one publish surface for agents and behaviours, labelled per publisher."""

from __future__ import annotations

import asyncio

from mesh_tools import BodyCollector, uid

from munggoggo import Agent, Behaviour, OneShotBehaviour
from munggoggo.publishing import PublishSurface


def test_agent_and_behaviour_share_one_publish_surface():
    for name in ("publish", "send", "broadcast"):
        assert getattr(Agent, name) is getattr(PublishSurface, name)
        assert getattr(Behaviour, name) is getattr(PublishSurface, name)


class Sender(OneShotBehaviour):
    """Publishes, sends and broadcasts once each."""

    def __init__(self, agent: Agent, topic: str, target: str) -> None:
        super().__init__(agent, name="sender")
        self.topic = topic
        self.target = target

    async def run(self) -> None:
        await self.publish(b"topic", self.topic)
        await self.send(self.target, b"direct")
        await self.broadcast(b"everyone")


async def test_publishes_are_counted_under_who_published_them(isolated_mesh_url):
    # A vhost of its own: the broadcast reaches only these agents.
    topic = uid("publishing")
    sender = Agent(uid("pub-tx"), url=isolated_mesh_url)
    receiver = Agent(uid("pub-rx"), url=isolated_mesh_url)
    async with receiver, sender:
        collector = await receiver.add_behaviour(BodyCollector(receiver, binding_keys=[topic]))
        await sender.publish(b"from the agent", topic)
        # Sent to nobody: returned by the broker, not dead-lettered; counted all the same.
        behaviour = await sender.add_behaviour(Sender(sender, topic, uid("nobody")))
        await asyncio.wait_for(behaviour.task, 10)
        await sender.flush(timeout=10)
        for _ in range(200):
            if len(collector.bodies) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(collector.bodies) == [b"from the agent", b"topic"]
        assert sender.stats.published == {("", "message"): 1, ("sender", "message"): 3}
