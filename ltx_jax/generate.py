"""Generate videos with LTX-Video: `python -m ltx_jax.generate --config configs/t2v.py`.

  --config configs/t2v.py[:PRESET]   a config file; PRESET names a release (configs/t2v.py lists
                                     them), default ltxv-2b-0.9.8-distilled
  --config.KEY=VALUE                 override any key, e.g. --config.prompt="a cat"
                                     --config.model.source=PATH_OR_REPO --config.num_frames=121
  --config.dry_run=True              print the resolved config and the files the run would read,
                                     then stop (nothing loads or compiles)
  --help                             this text and every config key with its default
                                     (with --config FILE[:PRESET]: that config's values)

Bad flags and values are refused with one line and exit status 2 (files that cannot be used:
exit status 1); the work is in ltx_jax.cli.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ltx_jax.cli import help as help_lib
from ltx_jax.errors import LTXError, ReleaseError, UsageError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (and :preset).',
                                          lock_config=True)
HELP_FLAGS = ('--help', '-h', '--helpfull', '--helpshort', '-?')
# ReleaseError messages name the library's arguments; these are their command-line spellings.
RELEASE_FLAGS = ("on the command line: --config.model.release=NAME names the release, "
                 "--config.model.allow_custom=True (or --config.model.release=custom) accepts "
                 "a custom or test model")


def _die(message: str, status: int = 2):
  """One line on stderr, no traceback."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(status)


def _explain(error: Exception, argv: list[str]) -> str:
  """A flags error as one line: the unknown key (with the nearest known ones), or the config
  file's own refusal."""
  text = str(error)
  if 'Traceback' in text:  # config_flags wraps a get_config() exception with its traceback
    last = text.strip().splitlines()[-1]
    name, sep, message = last.partition(': ')
    return message if sep and name.rsplit('.', 1)[-1].endswith(('Error', 'Exception')) else last
  if isinstance(error.__cause__ or error.__context__, (AttributeError, KeyError)) or (
      'AttributeError' in text or 'KeyError' in text):
    flag = next((a.split('=')[0] for a in argv[1:] if a.startswith('--config.')
                 and a.split('=')[0].rsplit('.', 1)[-1].strip("'") in text), None)
    if flag:
      return help_lib.unknown_key(flag[len('--config.'):], help_lib.config_of(argv))
  return text


def _parse(argv: list[str]) -> list[str]:
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(help_lib.usage(__doc__, help_lib.config_of(argv)))
    sys.exit(0)
  try:
    help_lib.check_config_file(argv)
  except UsageError as e:
    _die(e)
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  -- flags errors and config files' own refusals
    _die(_explain(e, argv))
  if _CONFIG.value is None:
    _die("--config is required, e.g. --config configs/t2v.py (--help lists the keys)")
  if len(rest) > 1:
    _die(f"unexpected arguments {rest[1:]}; set values with --config.KEY=VALUE")
  return rest


def main(_):
  from ltx_jax.cli import preflight, run
  from ltx_jax.compilation_cache import configure_compilation_cache
  run.quiet_libraries()
  configure_compilation_cache()  # a second run of the same shapes skips compilation
  logging.set_verbosity(logging.INFO)
  try:
    if _CONFIG.value.dry_run:
      print(preflight.dry_run(_CONFIG.value))
      return
    with run.interrupts_raise():  # Ctrl-C, SIGTERM: cleaned up, one line, exit 130 / 143
      run.run(_CONFIG.value)
  except run.Interrupted as e:
    _die(e, e.status)
  except UsageError as e:  # a flag or value to change
    _die(e, 2)
  except ReleaseError as e:  # weights that are no known release (or could be several)
    _die(f"{e} ({RELEASE_FLAGS})", 1)
  except (LTXError, OSError) as e:  # the files or sources given
    _die(e if isinstance(e, LTXError) else f"{type(e).__name__}: {e}", 1)

if __name__ == '__main__':
  app.run(main, flags_parser=_parse)
