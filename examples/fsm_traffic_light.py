"""A traffic light as a finite-state machine, a pedestrian who presses its button, and a
timer that switches the light off.

The light's FSM goes red -> green -> yellow -> red; green waits for a button press (a direct
message its template accepts) or its time, whichever comes first. A TimeoutBehaviour kills
the FSM after a few seconds; the FSM's on_end() reports, the program joins it, prints the
agent as a Mermaid diagram and ends.

Run: python examples/fsm_traffic_light.py   (MUNGGOGGO_URL picks the broker; memory:// works too)
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from munggoggo import (
    Agent,
    Behaviour,
    FSMBehaviour,
    PeriodicBehaviour,
    State,
    Template,
    TimeoutBehaviour,
)

LIGHTS = "lights.crossing"  # the topic the light publishes its colour on
BUTTON = Template(headers={"button": "pressed"})
SWITCH_OFF_AFTER = 3.0  # seconds


class Red(State):
    async def run(self) -> None:
        await self.publish("red", LIGHTS)
        await asyncio.sleep(0.4)
        self.set_next_state("green")


class Green(State):
    async def run(self) -> None:
        await self.publish("green", LIGHTS)
        # The FSM's mailbox holds the button presses: one cuts green short.
        press = await self.receive(timeout=1.0)
        if press is not None:
            print(f"light: button pressed by {press.sender}")
        self.set_next_state("yellow")


class Yellow(State):
    async def run(self) -> None:
        await self.publish("yellow", LIGHTS)
        await asyncio.sleep(0.2)
        self.set_next_state("red")


class Light(FSMBehaviour):
    async def on_end(self) -> None:
        print(f"light: off in state {self.current_state} (exit code {self.exit_code!r})")


class Other(Behaviour):
    """Direct messages that are no button press (`~BUTTON`)."""

    async def run(self) -> None:
        msg = await self.receive(timeout=0.5)
        if msg is not None:
            print(f"light: message from {msg.sender}: {msg.body.decode()}")


class SwitchOff(TimeoutBehaviour):
    async def run(self) -> None:
        self.agent.behaviour("Light").kill(exit_code="switched off")


class TrafficLight(Agent):
    async def setup(self) -> None:
        light = Light(self, template=BUTTON)
        light.add_state("red", Red(), initial=True)
        light.add_state("green", Green())
        light.add_state("yellow", Yellow())
        light.add_transition("red", "green")
        light.add_transition("green", "yellow")
        light.add_transition("yellow", "red")
        self.light = await self.add_behaviour(light)
        await self.add_behaviour(Other(self, template=~BUTTON))
        off_at = datetime.now() + timedelta(seconds=SWITCH_OFF_AFTER)
        await self.add_behaviour(SwitchOff(self, start_at=off_at))


class Pedestrian(Agent):
    class Watch(Behaviour):
        async def run(self) -> None:
            msg = await self.receive(timeout=0.5)
            if msg is not None:
                print(f"pedestrian: the light is {msg.body.decode()}")

    class Press(PeriodicBehaviour):
        async def run(self) -> None:
            await self.send("light", "", headers={"button": "pressed"})

    async def setup(self) -> None:
        await self.add_behaviour(self.Watch(self, binding_keys=[LIGHTS]))
        await self.add_behaviour(self.Press(self, period=1.3))
        await self.send("light", "hello")


async def main() -> None:
    async with TrafficLight("light") as light, Pedestrian("pedestrian"):
        await light.light.join(timeout=SWITCH_OFF_AFTER + 10)
        print(light.to_mermaid())


if __name__ == "__main__":
    asyncio.run(main())
