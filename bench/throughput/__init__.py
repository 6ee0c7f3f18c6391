"""Throughput: `python -m bench engine`, `throughput` (scenarios/) and `idle`."""
