"""Make training data: `python -m ltx_jax.preprocess --config configs/preprocess.py`.

  --config configs/preprocess.py[:smoke]   the config file (configs/preprocess.py lists the keys)
  --config.KEY=VALUE                       e.g. --config.input=clips/dataset.json
                                           --config.buckets='768x512x49' --config.model.source=PATH

Media and captions become ArrayRecord shards of VAE latents and T5 embeddings plus an index
(ltx_jax.data); --config.decode=FOLDER decodes such a folder back to videos. Bad flags and
values: one line, exit status 2; unusable data (nothing left after skipping bad inputs, a
damaged cache): one line, exit status 1.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ltx_jax.errors import LTXError, UsageError

_CONFIG = None  # the --config flag, defined when run as a program (ltx_jax.generate has one too)


def _die(message, status: int):
  """One line on stderr, no traceback."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(status)


def _parse(argv: list[str]) -> list[str]:
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001  -- flags errors and the config file's own refusals
    text = str(e)
    if 'Traceback' in text:  # config_flags wraps a get_config() exception with its traceback
      text = text.strip().splitlines()[-1]
    elif 'AttributeError' in text or 'KeyError' in text or isinstance(
        e.__cause__ or e.__context__, (AttributeError, KeyError)):
      flag = next((a.split('=')[0] for a in argv[1:] if a.startswith('--config.')
                   and a.split('=')[0].rsplit('.', 1)[-1].strip("'") in text), None)
      text = (f"unknown config key in {flag!r}; the keys are those of base_config() in "
              "ltx_jax/cli/preprocess_run.py") if flag else text
    _die(text, 2)
  if _CONFIG.value is None:
    _die("--config is required, e.g. --config configs/preprocess.py", 2)
  if len(rest) > 1:
    _die(f"unexpected arguments {rest[1:]}; set values with --config.KEY=VALUE", 2)
  return rest


def main(_):
  from ltx_jax.cli import preprocess_run
  from ltx_jax.compilation_cache import configure_compilation_cache
  configure_compilation_cache()
  logging.set_verbosity(logging.INFO)
  try:
    preprocess_run.run(_CONFIG.value)
  except UsageError as e:
    _die(e, 2)
  except (LTXError, OSError) as e:
    _die(e if isinstance(e, LTXError) else f"{type(e).__name__}: {e}", 1)


if __name__ == '__main__':
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (and :variant).',
                                            lock_config=True)
  app.run(main, flags_parser=_parse)
