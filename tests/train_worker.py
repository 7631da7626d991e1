"""Runs the smoke training recipe as one process of a multi-process run (jax.distributed on
localhost, gloo CPU collectives), for tests/test_train_run.py:

  python tests/train_worker.py OUTPUT_DIR DATASET STEPS OUT.npz ADDRESS N I [STOP]

Process 0 writes the final trainable parameters and the loss sequence to OUT.npz. With STOP,
process 0 sends itself SIGINT after step STOP: every process saves and exits 130.
"""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def main(output_dir, dataset, steps, out, address, n, i, stop=0):
  import signal
  import numpy as np
  from train_common import smoke_config, flat_params
  from ltx_jax.cli import train_run
  c = smoke_config(output_dir, dataset, steps=int(steps))
  c.distributed.coordinator, c.distributed.num_processes = address, int(n)
  c.distributed.process_id = int(i)

  def on_step(step, _):
    if int(stop) and step == int(stop) and int(i) == 0:
      os.kill(os.getpid(), signal.SIGINT)

  try:
    result = train_run.run(c, on_step=on_step)
  except train_run.Interrupted as e:
    print(e)
    sys.exit(e.status)
  import jax
  params = flat_params(result['state'])
  if jax.process_index() == 0:
    np.savez(out, losses=np.asarray(result['losses']), processes=jax.process_count(),
             devices=jax.device_count(), **params)


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(__file__))
  main(*sys.argv[1:])
