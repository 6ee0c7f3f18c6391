"""The package's version, in a module of its own so that any module can import it without
running the package's `__init__` (h11's `_version.py`)."""

__version__ = "0.1.0"
