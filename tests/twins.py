"""The twins of the hot paths a test runs on: each pure-Python module always, its compiled
twin when it is built (CI's second pass, MUNGGOGGO_NO_EXTENSIONS=1, checks the import-time
choice instead)."""

from __future__ import annotations

from types import ModuleType

from munggoggo._speedups import _confirms_py, _frames_py

FRAME_TWINS: list[ModuleType] = [_frames_py]
CONFIRM_TWINS: list[ModuleType] = [_confirms_py]
try:
    from munggoggo._speedups import _frames  # type: ignore[attr-defined]
except ImportError:
    pass
else:
    FRAME_TWINS.append(_frames)
try:
    from munggoggo._speedups import _confirms  # type: ignore[attr-defined]
except ImportError:
    pass
else:
    CONFIRM_TWINS.append(_confirms)


def twin_id(module: ModuleType) -> str:
    """A test id for a twin: its module's own name (`_frames_py`, `_frames`, ...)."""
    return module.__name__.rsplit(".", 1)[-1]
