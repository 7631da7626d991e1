"""Multi-host runs: one process per host, `jax.distributed` joining them into one set of devices.

  initialize()                      from the environment (below), or nothing for one process
  initialize('host0:1234', 2, 0)    explicit coordinator address, process count, process id

Environment variables (the usual JAX ones): JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID (and JAX_LOCAL_DEVICE_IDS, comma separated). With `auto=True` and none of them
set, JAX's own cluster detection runs (SLURM, Open MPI, Cloud TPU, Kubernetes jobsets).
On CPU (JAX_PLATFORMS=cpu) the processes exchange data with gloo collectives.

Every process runs the same program on its own devices; results that every process reads are
replicated over the mesh, and output files are written by process 0 alone (`is_main_process`).
Call `initialize` before anything else touches JAX's devices.
"""

from __future__ import annotations

import os

import jax


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, '').strip()
  return int(value) if value else None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None, *,
               auto: bool = False) -> bool:
  """Joins this process to a multi-process run; returns whether one was set up.

  Missing arguments come from the environment variables above. With neither arguments nor
  environment (and auto=False) this is a single-process run and nothing happens.
  """
  coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS') or None
  num_processes = num_processes if num_processes is not None else _env_int('JAX_NUM_PROCESSES')
  process_id = process_id if process_id is not None else _env_int('JAX_PROCESS_ID')
  if local_device_ids is None and os.environ.get('JAX_LOCAL_DEVICE_IDS'):
    local_device_ids = [int(i) for i in os.environ['JAX_LOCAL_DEVICE_IDS'].split(',')]
  if coordinator_address is None and num_processes is None and not auto:
    return False
  if coordinator_address is not None and (num_processes is None or process_id is None):
    raise ValueError(f"coordinator {coordinator_address!r} needs num_processes and process_id "
                     "(flags, or JAX_NUM_PROCESSES and JAX_PROCESS_ID)")
  if os.environ.get('JAX_PLATFORMS', '').split(',')[0] == 'cpu':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             local_device_ids=local_device_ids)
  return True


def is_main_process() -> bool:
  """Process 0 writes the outputs."""
  return jax.process_index() == 0
