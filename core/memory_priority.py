"""Moved to `munggoggo.memory.priority`; this name keeps old imports working."""

from .memory.priority import PriorityReady, put_back, ready_queue, requeue

__all__ = ["PriorityReady", "put_back", "ready_queue", "requeue"]
