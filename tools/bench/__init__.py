"""Benchmarks against the PyTorch references: `python tools/bench.py --help`."""
