"""Generate videos with LTX-Video: `python -m ltx_jax.generate --config configs/t2v.py`.

  --config configs/t2v.py[:PRESET]   a config file; PRESET names a release (configs/t2v.py lists
                                     them), default ltxv-2b-0.9.8-distilled
  --config.KEY=VALUE                 override any key, e.g. --config.prompt="a cat"
                                     --config.model.source=PATH_OR_REPO --config.num_frames=121

Bad flags and values are refused with one line and exit status 2; the work is in ltx_jax.cli.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ltx_jax.errors import LTXError, UsageError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (and :preset).',
                                          lock_config=True)


def _die(message: str, status: int = 2):
  """One line on stderr, no traceback."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
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
              "ltx_jax/cli/config.py")
  return text


def _parse(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  -- flags errors and config files' own refusals
    _die(_explain(e, argv))
  if _CONFIG.value is None:
    _die("--config is required, e.g. --config configs/t2v.py")
  if len(rest) > 1:
    _die(f"unexpected arguments {rest[1:]}; set values with --config.KEY=VALUE")
  return rest


def main(_):
  from ltx_jax.cli import run
  from ltx_jax.compilation_cache import configure_compilation_cache
  run.quiet_libraries()
  configure_compilation_cache()  # a second run of the same shapes skips compilation
  logging.set_verbosity(logging.INFO)
  try:
    with run.interrupts_raise():  # Ctrl-C, SIGTERM: cleaned up, one line, exit 130 / 143
      run.run(_CONFIG.value)
  except run.Interrupted as e:
    _die(e, e.status)
  except UsageError as e:  # a flag or value to change
    _die(e, 2)
  except (LTXError, OSError) as e:  # the files or sources given
    _die(e if isinstance(e, LTXError) else f"{type(e).__name__}: {e}", 1)

if __name__ == '__main__':
  app.run(main, flags_parser=_parse)
