"""A mesh from `jax.make_mesh` (Explicit axis types in current JAX) runs the pipeline: the smoke
pipeline on a (2, 2, 2, 1) mesh of 8 simulated devices equals one device; a mesh whose axis
names the rules do not know is refused up front with one line."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

from ltx_jax import sharding
from ltx_jax.errors import UsageError

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from ltx_jax import smoke
    call = dict(prompt='a cat', height=32, width=32, num_frames=9, num_inference_steps=2,
                guidance_scale=3.0, max_sequence_length=16, seed=0, progress=False,
                output_type='latent')
    with jax.default_matmul_precision('highest'):
      one = np.asarray(smoke.build_pipeline()(**call).latents)
      mesh = jax.make_mesh((2, 2, 2, 1), ('data', 'fsdp', 'tensor', 'context'))
      assert mesh.axis_types[0] == jax.sharding.AxisType.Explicit, mesh.axis_types
      pipe = smoke.build_pipeline(mesh=mesh)
      many = np.asarray(jax.device_get(pipe(**call).latents))
    err = float(np.linalg.norm(many - one) / np.linalg.norm(one))
    assert err < 1e-5, err
    print('REL_L2', err)
""")


def test_make_mesh_pipeline_equals_one_device():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8',
             PYTHONPATH=str(Path(__file__).parents[1]))
  proc = subprocess.run([sys.executable, '-c', SCRIPT], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and 'REL_L2' in proc.stdout, (proc.stdout + proc.stderr)[-4000:]


def test_explicit_mesh_becomes_auto():
  mesh = jax.make_mesh((1,), ('fsdp',), axis_types=(jax.sharding.AxisType.Explicit,))
  got = sharding.accept_mesh(mesh)
  assert got.axis_names == ('fsdp',) and got.axis_types == (jax.sharding.AxisType.Auto,)
  assert sharding.accept_mesh(got) is got


def test_unknown_axis_names_refused_in_one_line():
  mesh = jax.make_mesh((1,), ('x',))
  with pytest.raises(UsageError, match=r"'x'.*ltx_jax\.sharding\.make_mesh") as e:
    sharding.accept_mesh(mesh)
  assert '\n' not in str(e.value)
  with pytest.raises(UsageError, match='jax.sharding.Mesh'):
    sharding.accept_mesh('data')
