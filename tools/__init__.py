"""Command-line tools over the ltx_jax library (run from the repository root)."""
