"""Optional dependencies ("extras"): which extra provides which import, and the one error a
missing one raises.

Every import of an optional dependency goes through `needs_extra` (or `require`), so a user
without the extra gets one line naming the `pip install` that fixes it, from Python
(`MissingExtra`, an `ImportError`) and from the `munggoggo` command (that line on stderr,
exit status 2) alike, e.g. `munggoggo.otel needs the 'otel' extra (no module named
'opentelemetry'): pip install 'munggoggo[otel]'`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from ._speedups import MunggoggoError

__all__ = ["EXTRAS", "MissingExtra", "needs_extra", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "gateway": ("granian", "prometheus_client"),
    "metrics": ("prometheus_client",),
    "otel": ("opentelemetry",),
}
"""Extra name -> the top-level modules it installs that munggoggo imports."""


class MissingExtra(MunggoggoError, ImportError):
    """A feature needs an optional dependency that is not installed.

    The message is one line ending in the `pip install` command that installs the extra.

    Attributes:
        feature: what needs the extra, e.g. `munggoggo.gateway`.
        extra: the extra's name, e.g. `gateway`.
        module: the module that could not be imported, e.g. `granian` (also `name`, as for
            any `ImportError`).
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        """Describe a missing extra.

        Args:
            feature: what needs the extra, as the user knows it.
            extra: the extra's name (a key of `EXTRAS`).
            module: the module that could not be imported.
        """
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(self.explain(feature), name=module)

    def explain(self, feature: str) -> str:
        """The one-line message, naming `feature` as what needs the extra.

        The command line names its own command here (`munggoggo gateway`) rather than the
        module that found the dependency missing.

        Args:
            feature: what needs the extra.

        Returns:
            `<feature> needs the '<extra>' extra (no module named '<module>'): pip install
            'munggoggo[<extra>]'`.
        """
        return (
            f"{feature} needs the {self.extra!r} extra (no module named {self.module!r}): "
            f"pip install 'munggoggo[{self.extra}]'"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # ImportError pickles as (message,) plus name/path: rebuild from our own fields.
        return (type(self), (self.feature, self.extra, self.module))


@contextlib.contextmanager
def needs_extra(extra: str, feature: str) -> Iterator[None]:
    """Turn the failed import of one of `extra`'s modules, inside the block, into a
    `MissingExtra`.

    An `ImportError` for any other module (a broken installation of the dependency itself,
    say) passes through unchanged, so it is not mistaken for a missing extra.

    Args:
        extra: the extra's name (a key of `EXTRAS`).
        feature: what needs it, as the user knows it (e.g. `munggoggo.otel`).

    Yields:
        Nothing: the `with` block runs at that point.

    Raises:
        MissingExtra: a module of the extra is not installed.
        KeyError: `extra` is not a key of `EXTRAS`.
    """
    roots = EXTRAS[extra]
    try:
        yield
    except ImportError as exc:
        missing = exc.name or ""
        if isinstance(exc, MissingExtra) or missing.partition(".")[0] not in roots:
            raise
        raise MissingExtra(feature, extra, missing) from exc


def require(extra: str, feature: str) -> None:
    """Import every module of `extra` now, so a missing one fails here, with its message.

    Args:
        extra: the extra's name (a key of `EXTRAS`).
        feature: what needs it, as the user knows it (e.g. `munggoggo.gateway`).

    Raises:
        MissingExtra: a module of the extra is not installed.
    """
    with needs_extra(extra, feature):
        for module in EXTRAS[extra]:
            importlib.import_module(module)
