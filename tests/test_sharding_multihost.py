"""Two processes on this machine (jax.distributed, gloo CPU collectives on localhost, 4
simulated devices each) generate the single-process latents and frames."""

import socket

import jax
import numpy as np

from conftest import rel_l2
from ltx_jax.pipeline import LTXPipeline
from sharding_worker import CALL
from test_sharding import TOLERANCE, finish, repo, run_worker  # noqa: F401  (fixture)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(repo, tmp_path):  # noqa: F811
  address = f'localhost:{free_port()}'
  out = tmp_path / 'latents.npz'
  procs = [run_worker('process', repo, out, address, 2, i, devices=4) for i in range(2)]
  pipe = LTXPipeline.from_pretrained(repo, allow_custom=True)  # meanwhile, the reference
  with jax.default_matmul_precision('highest'):
    want = pipe(output_type='np', **CALL)
  for p in procs:
    finish(p)
  got = np.load(out)
  assert int(got['processes']) == 2 and int(got['devices']) == 8
  err = rel_l2(got['latents'], want.latents)
  print(f"two processes (data2 x fsdp2 x context2 over 8 devices): relative L2 {err:.2e}")
  assert err < TOLERANCE
  assert np.abs(got['frames'].astype(int) - want.frames.astype(int)).max() <= 1
