"""Fine-tune LTX-Video: `python -m ltx_jax.train --config configs/train/ltxv.py:RECIPE`.

  --config configs/train/ltxv.py[:RECIPE]   a training config; RECIPE names one of
                                            LTX-Video-Trainer's recipes (ltxv_2b_lora, ...)
  --config configs/train/smoke.py           the tiny random model on clips it makes itself
  --config.KEY=VALUE                        override any key, e.g.
                                            --config.data.preprocessed_data_root=DIR

Bad flags and values are refused with one line and exit status 2, unusable files with exit 1.
SIGINT / SIGTERM finish the running step, save a checkpoint and exit 130 / 143; the same command
resumes. The work is in ltx_jax.cli.train_run.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ltx_jax.errors import LTXError, UsageError

_CONFIG = None  # the --config flag, defined when run as a program (importing defines no flag)


def _die(message: str, status: int = 2, prefix: str = 'error: '):
  """One line on stderr, no traceback."""
  print(f"{prefix}{' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(status)


def _explain(error: Exception, argv: list[str]) -> str:
  """A flags error as one line: the unknown key, or the config file's own refusal."""
  text = str(error)
  if 'Traceback' in text:  # config_flags wraps a get_config() exception with its traceback
    return text.strip().splitlines()[-1]
  if isinstance(error.__cause__ or error.__context__, (AttributeError, KeyError)) or (
      'AttributeError' in text or 'KeyError' in text):
    flag = next((a.split('=')[0] for a in argv[1:] if a.startswith('--config.')
                 and a.split('=')[0].rsplit('.', 1)[-1].strip("'") in text), None)
    if flag:
      return (f"unknown config key {flag[2:]!r}; the keys are those of base_config() in "
              "ltx_jax/cli/train_config.py")
  return text


def _parse(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  -- flags errors and config files' own refusals
    _die(_explain(e, argv))
  if _CONFIG.value is None:
    _die("--config is required, e.g. --config configs/train/ltxv.py:ltxv_2b_lora")
  if len(rest) > 1:
    _die(f"unexpected arguments {rest[1:]}; set values with --config.KEY=VALUE")
  return rest


def main(_):
  from ltx_jax.cli import train_run
  from ltx_jax.compilation_cache import configure_compilation_cache
  configure_compilation_cache()
  logging.set_verbosity(logging.INFO)
  try:
    train_run.run(_CONFIG.value)
  except train_run.Interrupted as e:  # SIGINT / SIGTERM: checkpoint saved, resumable
    _die(e, e.status, prefix='stopped: ')
  except UsageError as e:  # a flag or value to change
    _die(e, 2)
  except (LTXError, OSError) as e:  # the files or sources given, a full disk
    _die(e if isinstance(e, LTXError) else f"{type(e).__name__}: {e}", 1)


if __name__ == '__main__':
  _CONFIG = config_flags.DEFINE_config_file('config', None,
                                            'Training config file (and :recipe).',
                                            lock_config=True)
  app.run(main, flags_parser=_parse)
