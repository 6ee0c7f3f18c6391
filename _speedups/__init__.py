"""Chooses the compiled hot paths or their pure-Python twins, once, at import.

`MUNGGOGGO_NO_EXTENSIONS=1` forces the twins. `USING_EXTENSIONS` tells which were loaded,
`IMPORT_ERRORS` why a compiled module was not, and `log_speedups_notice()` says so once, on
the `munggoggo` logger, when the first agent starts. Both sets stay importable by name
(`_frames_py`, `_frames`) so tests can hold them to the same behaviour.
"""

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any

from ._errors import MunggoggoError

NO_EXTENSIONS = bool(os.environ.get("MUNGGOGGO_NO_EXTENSIONS"))

# Compiled module -> why it did not import (empty when both did, or when not tried).
IMPORT_ERRORS: dict[str, str] = {}


def _compiled(name: str) -> Any:
    """The compiled module `name`, or None with the reason kept in IMPORT_ERRORS."""
    try:
        # By its full name: a missing module then says "No module named ...", where
        # `from . import` would blame a circular import.
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        IMPORT_ERRORS[name] = str(exc)
        return None


if TYPE_CHECKING:
    # The compiled modules' stubs (_frames.pyi, _confirms.pyi) type both twins.
    from . import _confirms as _confirms_impl
    from . import _frames as _frames_impl
else:
    # The twins first: what runs unless both compiled modules import.
    from . import _confirms_py as _confirms_impl
    from . import _frames_py as _frames_impl

    if not NO_EXTENSIONS:
        # Each tried on its own, so the notice names every one that is missing. All or
        # nothing: one compiled and one not would be a mix that no test runs.
        _confirms_compiled, _frames_compiled = _compiled("_confirms"), _compiled("_frames")
        if not IMPORT_ERRORS:
            _confirms_impl = _confirms_compiled
            _frames_impl = _frames_compiled

USING_EXTENSIONS = not NO_EXTENSIONS and not IMPORT_ERRORS

FrameError = _frames_impl.FrameError
PropertiesTooLarge = _frames_impl.PropertiesTooLarge
check_header_fits = _frames_impl.check_header_fits
Properties = _frames_impl.Properties
Delivery = _frames_impl.Delivery
EncodedTable = _frames_impl.EncodedTable
FrameReader = _frames_impl.FrameReader
decode_properties = _frames_impl.decode_properties
encode_properties = _frames_impl.encode_properties
decode_table = _frames_impl.decode_table
encode_table = _frames_impl.encode_table
publish_method_frame = _frames_impl.publish_method_frame
pack_publish = _frames_impl.pack_publish
ChannelPublisher = _frames_impl.ChannelPublisher
pack_ack = _frames_impl.pack_ack
ConfirmTracker = _confirms_impl.ConfirmTracker
AckTracker = _confirms_impl.AckTracker

from ._frames_py import (  # noqa: E402  (constants are plain ints, shared by both twins)
    DELIVER,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    GET_OK,
    HEARTBEAT_FRAME,
    MAX_TABLE_DEPTH,
    PROPERTY_NAMES,
    R_CONFIRM,
    R_HEARTBEAT,
    R_METHOD,
    RETURN,
)

_notice_logged = False


def speedups_notice() -> str | None:
    """Say why the compiled speedups are not in use.

    Returns:
        One line naming `MUNGGOGGO_NO_EXTENSIONS`, or each compiled module that failed to
        import and why; None when the compiled speedups are loaded.
    """
    if USING_EXTENSIONS:
        return None
    if NO_EXTENSIONS:
        return (
            "munggoggo: MUNGGOGGO_NO_EXTENSIONS is set: running on the pure-Python twins "
            "of the compiled speedups"
        )
    failed = "; ".join(f"{name}: {reason}" for name, reason in sorted(IMPORT_ERRORS.items()))
    return (
        "munggoggo: the compiled speedups are not loaded, running on their pure-Python twins "
        f"(slower). Failed to import {failed}"
    )


def log_speedups_notice() -> bool:
    """Log `speedups_notice()` on the `munggoggo` logger, once per process.

    WARNING when a compiled module failed to import (a build without a compiler, a broken
    install); INFO when `MUNGGOGGO_NO_EXTENSIONS` asked for the twins on purpose. Agents call
    it when they start.

    Returns:
        True when this call logged the notice; False when there was nothing to say or it
        was said before.
    """
    global _notice_logged
    text = speedups_notice()
    if text is None or _notice_logged:
        return False
    _notice_logged = True
    level = logging.INFO if NO_EXTENSIONS else logging.WARNING
    logging.getLogger("munggoggo").log(level, text)
    return True


__all__ = [
    "DELIVER",
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "GET_OK",
    "HEARTBEAT_FRAME",
    "IMPORT_ERRORS",
    "MAX_TABLE_DEPTH",
    "NO_EXTENSIONS",
    "PROPERTY_NAMES",
    "RETURN",
    "R_CONFIRM",
    "R_HEARTBEAT",
    "R_METHOD",
    "USING_EXTENSIONS",
    "AckTracker",
    "ChannelPublisher",
    "ConfirmTracker",
    "Delivery",
    "EncodedTable",
    "FrameError",
    "FrameReader",
    "MunggoggoError",
    "Properties",
    "PropertiesTooLarge",
    "check_header_fits",
    "decode_properties",
    "decode_table",
    "encode_properties",
    "encode_table",
    "log_speedups_notice",
    "pack_ack",
    "pack_publish",
    "publish_method_frame",
    "speedups_notice",
]
