"""Benchmarks against the PyTorch references: `python tools/bench.py --help` or
`python -m tools.bench --help`. Not part of the installed package (it needs torch)."""
