"""The command line with a mesh (8 simulated CPU devices, data=2 x context=4, ring and
all-gather context attention) equals its single-device run and really runs partitioned.

The mesh runs happen in tests/cli_mesh_worker.py, a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (this pytest process has JAX on one device);
the single-device run happens here, meanwhile.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import ltx_jax
from cli_mesh_worker import RUNS, run_cli, smoke_config

WORKER = Path(__file__).with_name('cli_mesh_worker.py')
MESH = {'data': 2, 'fsdp': 1, 'tensor': 1, 'context': 4}
LATENT_TOLERANCE = 1e-5  # relative L2, f32


def test_cli_mesh_equals_single_device(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    single, frames, latents = run_cli(smoke_config(tmp_path / 'single', None))
  finally:
    out, _ = proc.communicate(timeout=400)
  assert proc.returncode == 0, out[-4000:]
  assert single['partitioning'] is None and single['sidecar']['mesh'] is None
  assert single['sidecar']['versions']['ltx_jax'] == ltx_jax.__version__
  assert frames.shape == (9, 64, 64, 3)

  result = json.loads((tmp_path / 'result.json').read_text())
  assert result['device_count'] == 8
  for name, attention in RUNS.items():
    facts = result['runs'][name]
    # The pipeline the CLI built holds the mesh, and its parameters live on all 8 devices.
    assert facts['partitioning'] == {'mesh': MESH, 'context_attention': attention}, name
    assert facts['param_devices'] == 8, name
    assert facts['sidecar']['mesh'] == {'shape': MESH, 'devices': 8,
                                        'context_attention': attention}, name
    assert len(facts['sidecar']['devices']) == 8
    assert facts['sidecar']['versions']['ltx_jax'] == ltx_jax.__version__
    # Its denoising loop compiles to a partitioned program.
    assert sum(facts['collectives'].values()) > 0, (name, facts['collectives'])
    got = np.load(tmp_path / f'{name}.npz')
    diff = np.abs(got['frames'].astype(int) - frames.astype(int)).max()
    err = np.linalg.norm(got['latents'] - latents) / np.linalg.norm(latents)
    print(f"{name}: frames max diff {diff}, latents relative L2 {err:.2e}, "
          f"collectives {facts['collectives']}")
    assert diff <= 1, name
    assert err < LATENT_TOLERANCE, name
  # Ring attention passes key / value blocks around the context axis.
  ring, gather = (result['runs'][f'data2_context4_{a}']['collectives'] for a in
                  ('ring', 'allgather'))
  assert ring['collective-permute'] > gather['collective-permute'], (ring, gather)
