"""Moved to `munggoggo.memory.headers`; this name keeps old imports working."""

from .memory.headers import MODES, Pattern, binding_problem, routing_headers

__all__ = ["MODES", "Pattern", "binding_problem", "routing_headers"]
