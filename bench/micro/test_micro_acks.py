"""Micro benchmarks of consumer-ack coalescing (`AckTracker`), fed directly (no broker).

Run with `pytest bench/micro/test_micro_acks.py --benchmark-only -q`. Each benchmark runs once per
importable implementation: the pure-Python twin always, the compiled one when built. One
round is one loop tick of a consumer: BATCH deliveries marked done, then what the channel
does before it writes (`take()`, then `take_singles()`); divide by BATCH for per-ack cost.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

BATCH = 256


def _implementation(name: str) -> pytest.ParameterSet:
    try:
        module = importlib.import_module(f"munggoggo._speedups.{name}")
    except ImportError:
        return pytest.param(None, id=name, marks=pytest.mark.skip(reason=f"{name} not built"))
    return pytest.param(module, id=name)


IMPLEMENTATIONS = [_implementation("_confirms_py"), _implementation("_confirms")]


@pytest.mark.parametrize("confirms", IMPLEMENTATIONS)
def test_ack_tick_in_order(benchmark, confirms: ModuleType) -> None:
    """Every delivery of the tick done in order: one multiple-ack, no singles."""
    acks = confirms.AckTracker()
    next_tag = [1]

    def tick() -> int:
        first = next_tag[0]
        last = first + BATCH
        for tag in range(first, last):
            acks.done(tag)
        next_tag[0] = last
        multiple = acks.take()
        acks.take_singles()
        return multiple

    assert tick() == BATCH
    benchmark(tick)


@pytest.mark.parametrize("confirms", IMPLEMENTATIONS)
def test_ack_tick_above_a_gap(benchmark, confirms: ModuleType) -> None:
    """Tag 1 never settles: every later delivery is acked singly (one frame each)."""
    acks = confirms.AckTracker()
    next_tag = [2]

    def tick() -> int:
        first = next_tag[0]
        last = first + BATCH
        for tag in range(first, last):
            acks.done(tag)
        next_tag[0] = last
        acks.take()
        return len(acks.take_singles())

    assert tick() == BATCH
    benchmark(tick)
