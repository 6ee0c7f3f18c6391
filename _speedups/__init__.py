"""Chooses the compiled hot paths or their pure-Python twins, once, at import.

`MUNGGOGGO_NO_EXTENSIONS=1` forces the twins. `USING_EXTENSIONS` tells which were loaded.
Both sets stay importable by name (`_frames_py`, `_frames`) so tests can hold them to the
same behaviour.
"""

import os
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("MUNGGOGGO_NO_EXTENSIONS"))

USING_EXTENSIONS: bool
if TYPE_CHECKING:
    # The compiled modules' stubs (_frames.pyi, _confirms.pyi) type both twins.
    from . import _confirms as _confirms_impl
    from . import _frames as _frames_impl
elif NO_EXTENSIONS:
    from . import _confirms_py as _confirms_impl
    from . import _frames_py as _frames_impl

    USING_EXTENSIONS = False
else:
    try:
        from . import _confirms as _confirms_impl
        from . import _frames as _frames_impl

        USING_EXTENSIONS = True
    except ImportError:
        from . import _confirms_py as _confirms_impl
        from . import _frames_py as _frames_impl

        USING_EXTENSIONS = False

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

__all__ = [
    "DELIVER",
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "GET_OK",
    "HEARTBEAT_FRAME",
    "MAX_TABLE_DEPTH",
    "NO_EXTENSIONS",
    "PROPERTY_NAMES",
    "RETURN",
    "R_CONFIRM",
    "R_HEARTBEAT",
    "R_METHOD",
    "USING_EXTENSIONS",
    "AckTracker",
    "ConfirmTracker",
    "Delivery",
    "EncodedTable",
    "FrameError",
    "FrameReader",
    "Properties",
    "PropertiesTooLarge",
    "check_header_fits",
    "decode_properties",
    "decode_table",
    "encode_properties",
    "encode_table",
    "pack_ack",
    "pack_publish",
    "publish_method_frame",
]
