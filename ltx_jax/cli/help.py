"""What the command line tells a user before any run: `--help` with every config key and its
default, the config file check, and "did you mean" for a misspelled key."""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

import ml_collections

from ltx_jax.errors import UsageError

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'  # the repository's config files


def config_arg(argv: list[str]) -> str | None:
  """The value of --config (FILE[:ARG]) in argv, or None."""
  for i, a in enumerate(argv[1:], 1):
    if a.startswith('--config='):
      return a[len('--config='):]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def known_configs() -> str:
  names = sorted(p.name for p in CONFIGS.glob('*.py')) if CONFIGS.is_dir() else []
  return ', '.join(f"configs/{n}" for n in names) or 'configs/t2v.py'


def check_config_file(argv: list[str]) -> None:
  """A UsageError when --config names no file (before absl reads it)."""
  value = config_arg(argv)
  if value is None:
    return
  path = value.partition(':')[0]
  if not os.path.isfile(os.path.expanduser(path)):
    raise UsageError(f"--config {value}: no such config file {path!r}; the configs are "
                     f"{known_configs()}")


def config_of(argv: list[str]) -> ml_collections.ConfigDict:
  """The config --config names (its preset applied), else the default config: what --help
  shows and what misspelled keys are matched against. A config file that cannot be loaded
  falls back to the default config (its own refusal is reported by the flags parser)."""
  from ltx_jax.cli import config as config_lib
  value = config_arg(argv)
  if value is not None:
    path, sep, arg = value.partition(':')
    try:
      spec = importlib.util.spec_from_file_location('_ltx_jax_config', os.path.expanduser(path))
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module.get_config(arg) if sep else module.get_config()
    except Exception:  # noqa: BLE001  -- any failure: the default keys still help
      pass
  return config_lib.base_config()


def flat(c: ml_collections.ConfigDict, prefix: str = '') -> dict[str, object]:
  """{'model.source': value, ...} for every leaf key of `c`, in definition order."""
  out = {}
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict) and len(v):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v
  return out


def usage(doc: str, c: ml_collections.ConfigDict) -> str:
  """The command's doc, then every config key with its value in `c`."""
  keys = flat(c)
  width = min(max(map(len, keys)), 32)
  lines = [f"  --config.{k:<{width}} = {v!r}" for k, v in keys.items()]
  return (f"{doc.strip()}\n\nConfig keys (preset {c.get('preset') or '(none)'!r}; set any with "
          f"--config.KEY=VALUE; configs: {known_configs()}):\n" + '\n'.join(lines))


def unknown_key(key: str, c: ml_collections.ConfigDict) -> str:
  """The message for an unknown --config.KEY: the nearest known keys (by the whole dotted
  name, or by its last part for a key given without its group)."""
  keys = list(flat(c)) + [k for k, v in c.items() if isinstance(v, ml_collections.ConfigDict)]

  def score(known: str) -> float:
    return max(difflib.SequenceMatcher(None, key, known).ratio(),
               difflib.SequenceMatcher(None, key.rpartition('.')[2],
                                       known.rpartition('.')[2]).ratio() - 0.05)

  ranked = sorted(keys, key=score, reverse=True)
  best = score(ranked[0]) if ranked else 0.0
  near = [k for k in ranked[:3] if score(k) >= max(0.6, best - 0.08)]
  hint = f"; did you mean {' or '.join(f'config.{k}' for k in near)}?" if near else ''
  return f"unknown config key 'config.{key}'{hint} (--help lists every key and its default)"
