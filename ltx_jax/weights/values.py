"""Checked reads of config values: every value a checkpoint's config gives is typed and bounded
before anything is built from it.

The config parsers (`TransformerConfig.from_official`, `VAEConfig.from_diffusers`, ...) read
each key through these helpers with the key's name in the file, and the config dataclasses check
their fields again in `__post_init__` (configs rebuilt from a converted checkpoint's manifest take
that path). A value of the wrong type or out of range is a one-line `CheckpointFormatError`
naming the key, the value and what is allowed; `in_file` prefixes the file it came from. The
bounds are generous (many times every released model) but finite, so no config can make us
build, or allocate for, a model of 10^9 layers.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator, Mapping, Sequence

from ltx_jax.errors import CheckpointFormatError, LTXError

REQUIRED = object()  # a default meaning: the key must be present

MAX_LAYERS = 1024
MAX_CHANNELS = 1 << 16  # widths, heads x head dims, channels of any block
MAX_HEADS = 4096
MAX_BLOCKS = 256  # entries of a VAE block list


def _show(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + '...'


def _get(cfg: Mapping[str, Any], key: str, default: Any, what: str) -> Any:
  if not isinstance(cfg, Mapping):
    raise CheckpointFormatError(f"{what} config is {type(cfg).__name__} {_show(cfg)}, expected a "
                                "JSON object")
  if key in cfg and cfg[key] is not None:
    return cfg[key]
  if default is REQUIRED:
    raise CheckpointFormatError(f"{what} config has no {key!r}")
  return default


def _refuse(what: str, key: str, value: Any, allowed: str) -> None:
  raise CheckpointFormatError(f"{what} config {key}={_show(value)}: expected {allowed}")


def check_int(value: Any, key: str, lo: int, hi: int, what: str) -> int:
  """An integer in [lo, hi] (bools and floats refused, even 4.0)."""
  if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
    _refuse(what, key, value, f"an integer in [{lo}, {hi}]")
  return int(value)


def check_number(value: Any, key: str, lo: float, hi: float, what: str, *,
                 open_low: bool = False) -> float:
  """A finite number in [lo, hi] ((lo, hi] with open_low)."""
  ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        and (lo < value if open_low else lo <= value) and value <= hi)
  if not ok:
    _refuse(what, key, value, f"a number in {'(' if open_low else '['}{lo:g}, {hi:g}]")
  return float(value)


def check_bool(value: Any, key: str, what: str) -> bool:
  if not isinstance(value, bool):
    _refuse(what, key, value, "true or false")
  return value


def check_choice(value: Any, key: str, allowed: Sequence[Any], what: str) -> Any:
  if not isinstance(value, (str, int, float, bool)) or value not in allowed:
    _refuse(what, key, value, f"one of {list(allowed)}")
  return value


def check_list(value: Any, key: str, what: str, *, length: int | None = None,
               max_length: int = MAX_BLOCKS) -> list:
  """A JSON list (or tuple) of `length` entries (any length up to max_length when None)."""
  if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length) or (
      len(value) > max_length):
    n = f"{length} entries" if length is not None else f"at most {max_length} entries"
    _refuse(what, key, value, f"a list of {n}")
  return list(value)


def integer(cfg: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = REQUIRED, *,
            what: str) -> int:
  return check_int(_get(cfg, key, default, what), key, lo, hi, what)


def number(cfg: Mapping[str, Any], key: str, lo: float, hi: float, default: Any = REQUIRED, *,
           what: str, open_low: bool = False) -> float:
  return check_number(_get(cfg, key, default, what), key, lo, hi, what, open_low=open_low)


def boolean(cfg: Mapping[str, Any], key: str, default: Any = REQUIRED, *, what: str) -> bool:
  return check_bool(_get(cfg, key, default, what), key, what)


def choice(cfg: Mapping[str, Any], key: str, allowed: Sequence[Any], default: Any = REQUIRED, *,
           what: str) -> Any:
  return check_choice(_get(cfg, key, default, what), key, allowed, what)


def int_list(cfg: Mapping[str, Any], key: str, lo: int, hi: int, default: Any = REQUIRED, *,
             what: str, length: int | None = None) -> list[int]:
  values = check_list(_get(cfg, key, default, what), key, what, length=length)
  return [check_int(v, f"{key}[{i}]", lo, hi, what) for i, v in enumerate(values)]


def bool_list(cfg: Mapping[str, Any], key: str, default: Any = REQUIRED, *, what: str,
              length: int | None = None) -> list[bool]:
  values = check_list(_get(cfg, key, default, what), key, what, length=length)
  return [check_bool(v, f"{key}[{i}]", what) for i, v in enumerate(values)]


def mapping(value: Any, what: str) -> Mapping[str, Any]:
  """A JSON object (a dict with string keys)."""
  if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
    raise CheckpointFormatError(f"{what} is {type(value).__name__} {_show(value)}, expected a "
                                "JSON object")
  return value


# What a parser can raise on data it did not expect (JSON and Unicode errors are ValueErrors).
_STRAY = (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError,
          OverflowError)


@contextlib.contextmanager
def in_file(path: str | os.PathLike | None) -> Iterator[None]:
  """Names `path` in the errors raised inside: LTXErrors get `path: ` prefixed (once: messages
  already naming it are kept) and keep their type; any other parsing error (a KeyError from a
  config missing a key, a UnicodeDecodeError, ...) becomes a CheckpointFormatError naming the
  file and the error. OSErrors pass through (they name their file)."""
  try:
    yield
  except LTXError as e:
    text = str(e)
    if path is None or str(path) in text:
      raise
    raise type(e)(f"{path}: {text}") from None
  except _STRAY as e:
    what = str(e).splitlines()[0][:200] if str(e) else ''
    raise CheckpointFormatError(f"{path}: unreadable or inconsistent checkpoint "
                                f"({type(e).__name__}: {what})") from None
