"""What many agent tests share: names no other test or run uses, and a behaviour that
keeps what it receives."""

from __future__ import annotations

import uuid

from munggoggo import Behaviour


def uid(prefix: str) -> str:
    """`prefix` and 8 random hex digits: a queue, topic or identity of this test alone."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class BodyCollector(Behaviour):
    """Keeps the body of each message in `bodies`; a message is settled when the next one
    is received (or the step ends)."""

    async def setup(self) -> None:
        self.bodies: list[bytes] = []

    async def run(self) -> None:
        msg = await self.receive(timeout=0.2)
        if msg is not None:
            self.bodies.append(msg.body)
