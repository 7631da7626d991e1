"""A persistent XLA compilation cache, so a second run of the same shapes skips compilation.

Compiling the scanned denoising loop, T5 and the VAE decoder takes from seconds (CPU, tiny
models) to minutes (GPU, full sizes); XLA's on-disk cache turns the second run of a command into
a lookup. The cache lives in the user's cache folder (`$XDG_CACHE_HOME/ltx_jax/xla`, by default
`~/.cache/ltx_jax/xla`).

Entry points call `configure_compilation_cache()` once, before the first jit, which follows the
environment variable `LTX_JAX_COMPILATION_CACHE`:
  unset, '1', 'on', 'true'    the default folder
  '0', 'off', 'false', ''     no persistent cache
  anything else               that folder
Library users may call `enable_compilation_cache(path)` (None disables it) instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = 'LTX_JAX_COMPILATION_CACHE'
_OFF = ('0', 'off', 'false', 'no', '')
_ON = ('1', 'on', 'true', 'yes')
_DEFAULT = object()


def default_cache_dir() -> Path:
  """`$XDG_CACHE_HOME/ltx_jax/xla`, or `~/.cache/ltx_jax/xla`."""
  root = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
  return Path(root) / 'ltx_jax' / 'xla'


def _reset_if_initialized() -> None:
  """Makes JAX re-read the cache settings, if its cache is already set up (resetting an unused
  cache only logs noise: "Resetting cache at <empty>")."""
  from jax.experimental.compilation_cache import compilation_cache as cc
  try:  # the public module lacks the query (its is_initialized says "enabled")
    from jax._src import compilation_cache as internal
    used = internal._cache is not None or internal._cache_checked
  except (ImportError, AttributeError):
    used = True
  if used:
    cc.reset_cache()


def enable_compilation_cache(path: str | os.PathLike | None = _DEFAULT, *,
                             min_compile_time_secs: float = 0.0) -> Path | None:
  """Turns the persistent cache on in `path` (default `default_cache_dir()`), or off for None.

  min_compile_time_secs: programs that compile faster than this are not written (JAX's own
  default is 1 s; 0 caches everything, which is what makes a warm start of a small run fast).
  Returns the cache folder, or None when disabled. Safe to call again (takes effect for the
  next compilation).
  """
  if path is None:
    jax.config.update('jax_enable_compilation_cache', False)
    _reset_if_initialized()
    return None
  folder = default_cache_dir() if path is _DEFAULT else Path(path).expanduser()
  folder.mkdir(parents=True, exist_ok=True)
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', str(folder))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float(min_compile_time_secs))
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  _reset_if_initialized()  # re-read the settings if something was already compiled
  return folder


def configure_compilation_cache() -> Path | None:
  """Sets the cache up per `LTX_JAX_COMPILATION_CACHE` (see the module docstring).

  With the variable unset, a cache folder the user already gave JAX (`JAX_COMPILATION_CACHE_DIR`
  or `jax.config`) is kept.
  """
  value = os.environ.get(ENV_VAR)
  if value is None:
    if jax.config.jax_compilation_cache_dir:
      return Path(jax.config.jax_compilation_cache_dir)
    return enable_compilation_cache()
  if value.strip().lower() in _OFF:
    return enable_compilation_cache(None)
  if value.strip().lower() in _ON:
    return enable_compilation_cache()
  return enable_compilation_cache(value)


def cache_entries(folder: str | os.PathLike) -> int:
  """How many compiled programs a cache folder holds (0 if it does not exist)."""
  folder = Path(folder)
  return sum(1 for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0
