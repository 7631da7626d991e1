"""Test-only: make a run wait at a named point, so a test can interrupt it there.

With the environment variable `LTX_JAX_TEST_PAUSE` set to a point's name ('load', 'prepare',
'denoise', 'decode', 'write': the start of the CLI's stages; 'write_mp4': inside the mp4
writer, its temporary file open), the run prints `paused at NAME` on stderr when it gets there and waits until a signal
ends the wait. Unset (always, outside tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time

ENV_VAR = 'LTX_JAX_TEST_PAUSE'


def pause_point(name: str) -> None:
  """Waits here forever (until a signal handler raises) if LTX_JAX_TEST_PAUSE == name."""
  if os.environ.get(ENV_VAR) != name:
    return
  print(f"paused at {name}", file=sys.stderr, flush=True)
  while True:
    time.sleep(0.05)
