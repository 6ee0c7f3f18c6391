"""A small agent to test: it answers greetings on a topic and greets by RPC.

`Greeter` listens on its `topic` (default `greetings`) and publishes `hello, <name>` on its
`reply_topic` (default `replies`) for each name it hears; `greet(name)` answers the same by
RPC. The topics are arguments so that its tests can give each test topics of its own (see
test_greeter.py next to this file, and docs/how-to/testing.md).

Run: python examples/testing/greeter.py   (MUNGGOGGO_URL picks the broker)
"""

from __future__ import annotations

from typing import Any

from munggoggo import Agent, Behaviour, expose, run


class Greeter(Agent):
    """Answers each name heard on `topic` with a greeting on `reply_topic`."""

    class Answer(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=1.0)
            if msg is not None:
                await self.publish(f"hello, {msg.decode(str)}", self.agent.reply_topic)

    def __init__(
        self,
        identity: str | None = None,
        *,
        topic: str = "greetings",
        reply_topic: str = "replies",
        **kwargs: Any,
    ) -> None:
        super().__init__(identity, **kwargs)
        self.topic = topic
        self.reply_topic = reply_topic

    async def setup(self) -> None:
        await self.add_behaviour(self.Answer(self, binding_keys=[self.topic]))

    @expose
    async def greet(self, name: str) -> str:
        """The greeting for `name`."""
        return f"hello, {name}"


if __name__ == "__main__":
    run(Greeter("greeter"))
