"""`MunggoggoError`, the root of every exception munggoggo raises on purpose.

It is defined here, in the package's lowest layer, because `_speedups` may import only the
standard library and still raises errors of its own (`FrameError`, `PropertiesTooLarge`):
the root has to sit at or below the lowest layer that derives from it, so every layer above
imports it from here. Users import it as `munggoggo.MunggoggoError` or from
`munggoggo.exceptions`, which shows the whole tree.
"""


class MunggoggoError(Exception):
    """Base class of every exception munggoggo raises on purpose.

    `except munggoggo.MunggoggoError` catches them all. Each subclass also keeps the standard
    exception it has always been (a `DecodeError` is a `ValueError`, an `RpcTimeout` a
    `TimeoutError`, an `AMQPConnectError` an `OSError`), so existing `except` clauses keep
    working.
    """

    # Shown (in tracebacks, reprs and the reference docs) where users import it from; this
    # module is its home only because of the layer rule above. Pickle finds it there too.
    __module__ = "munggoggo.exceptions"
