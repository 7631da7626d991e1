"""The command line: the config and its checks, the generation run, stage timings.

`python -m ltx_jax.generate --config configs/t2v.py` is a thin absl entry point over `run.run`.
"""
