"""The command line: config presets, validation, the generation run and video files.

`python -m ltx_jax.generate --config configs/t2v.py` is a thin absl entry point over `run.main`.
"""
