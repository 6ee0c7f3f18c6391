"""Builds munggoggo's compiled speedups; everything else about the package is in pyproject.toml.

The two Cython modules are optional: without a C compiler (or without Cython) the package
still builds and runs on their pure-Python twins. That is said loudly here, in a banner at
build time (as aiohttp's setup.py does), and once more at run time, when the first agent
starts (`munggoggo._speedups.log_speedups_notice`). `MUNGGOGGO_REQUIRE_EXTENSIONS=1` turns
the fallback into a build error, for builds that must ship the compiled modules (release
wheels, the container image).

The modules are compiled without debug information: with it, `_frames` is 2.6 MB; without
it, a few hundred KB.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

REQUIRE_ENV = "MUNGGOGGO_REQUIRE_EXTENSIONS"
REQUIRE_EXTENSIONS = os.environ.get(REQUIRE_ENV, "") not in ("", "0")

EXTENSIONS = [
    Extension("munggoggo._speedups._frames", ["_speedups/_frames.pyx"], optional=True),
    Extension("munggoggo._speedups._confirms", ["_speedups/_confirms.pyx"], optional=True),
]


def _cython_missing() -> bool:
    try:
        import Cython  # noqa: F401
    except ImportError:
        return True
    return False


def _banner(failures: list[tuple[str, str]]) -> str:
    stars = "*" * 78
    lines = [
        stars,
        "*** munggoggo: building WITHOUT the compiled speedups.",
        "*** The package will work, on the pure-Python twins of its hot paths (slower).",
    ]
    if _cython_missing():
        lines.append("*** Cython is not installed (it is a build requirement in pyproject.toml).")
    for name, reason in failures:
        # A compiler's error quotes its whole command line: its end says what happened.
        short = reason if len(reason) <= 160 else f"{reason[:60]} ... {reason[-90:]}"
        lines.append(f"*** {name} failed to build: {short}")
    if REQUIRE_EXTENSIONS:
        lines.append(f"*** {REQUIRE_ENV}=1 is set: this is an error.")
    else:
        lines.append(f"*** Set {REQUIRE_ENV}=1 to make this an error.")
    lines.append(stars)
    return "\n".join(lines)


class BuildSpeedups(build_ext):
    """build_ext that compiles without debug info and says which optional module failed.

    setuptools skips a failed optional extension with one line of warning that pip hides;
    this one collects the failures and prints a banner after the build, or fails the build
    when MUNGGOGGO_REQUIRE_EXTENSIONS=1.
    """

    def run(self) -> None:
        self.speedup_failures: list[tuple[str, str]] = []
        super().run()
        if self.speedup_failures:
            print(_banner(self.speedup_failures), file=sys.stderr, flush=True)
            if REQUIRE_EXTENSIONS:
                raise SystemExit(f"munggoggo: the compiled speedups did not build; {REQUIRE_ENV}=1")

    def build_extension(self, ext: Extension) -> None:
        if self.compiler.compiler_type == "unix":
            # gcc and clang: the interpreter's CFLAGS carry -g; a later -g0 wins. MSVC's
            # release flags have no debug info to begin with.
            ext.extra_compile_args = [*ext.extra_compile_args, "-g0"]
        try:
            super().build_extension(ext)
        except Exception as exc:
            # Any failure: no compiler (CompileError), no Cython and no generated .c
            # (a missing source is an OSError that setuptools' optional-extension filter
            # would not catch), a Cython error.
            self.speedup_failures.append((ext.name, f"{type(exc).__name__}: {exc}"))
            if not ext.optional:
                raise


setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildSpeedups})
