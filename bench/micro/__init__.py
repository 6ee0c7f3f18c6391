"""Micro benchmarks (pytest-benchmark: `pytest bench/micro/ --benchmark-only`) and the
differential fuzzer of the frame codec twins (`python -m bench.micro.fuzz_frames`)."""
