"""Lay out the `munggoggo` package for griffe, as it is installed.

setuptools maps core/ to `munggoggo`, gateway/ to `munggoggo.gateway` and _speedups/ to
`munggoggo._speedups` (pyproject.toml, [tool.setuptools] package-dir). griffe finds
packages by directory name and cannot follow the editable install's import hook, so this
links the installed layout under build/docs-api (as .ci/typecheck does for mypy) before
mkdocstrings reads the sources there. Static analysis of the sources, not imports: the
reference is the same whether or not the optional extras are installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "build" / "docs-api"
# Subpackages that live outside core/: their directory -> the name under munggoggo/.
MAPPED = {"gateway": "gateway", "_speedups": "_speedups"}


def link_layout() -> None:
    """(Re)build build/docs-api/munggoggo from links to core/*, gateway/ and _speedups/."""
    package = LAYOUT / "munggoggo"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for entry in sorted((ROOT / "core").iterdir()):
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for directory, name in MAPPED.items():
        (package / name).symlink_to(ROOT / directory)


def on_startup(command: str, dirty: bool) -> None:
    """MkDocs hook: runs once, before the configuration (and mkdocstrings) is loaded."""
    link_layout()
