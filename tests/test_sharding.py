"""Sharded generation on 8 simulated CPU devices equals the single-device result; the rules
place every parameter as they say; the released sizes shard without fallbacks.

The mesh runs happen in one subprocess (tests/sharding_worker.py) started with
XLA_FLAGS=--xla_force_host_platform_device_count=8: this pytest process already has JAX on one
device.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from filelock import FileLock
from flax import nnx
from jax.sharding import PartitionSpec as P

from builders import tiny_repo
from ltx_jax import sharding
from ltx_jax.models.t5 import T5Config, T5Encoder
from ltx_jax.models.transformer import LTXV_13B, LTXV_2B, LTXVideoTransformer

WORKER = Path(__file__).with_name('sharding_worker.py')
TOLERANCE = 1e-5  # relative L2, f32, matmul precision 'highest'


def run_worker(*args, devices: int, timeout: int = 240):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout: int = 240) -> None:
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]


def shared_dir(tmp_path_factory) -> Path:
  """A folder all pytest-xdist workers of this session share (so the work runs once)."""
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
  path = root / 'sharding'
  path.mkdir(exist_ok=True)
  return path


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
  root = shared_dir(tmp_path_factory)
  with FileLock(root / 'repo.lock'):
    if not (root / 'repo' / 'model_index.json').exists():
      tiny_repo(root / 'repo')
  return root / 'repo'


@pytest.fixture(scope='module')
def results(repo):
  out = repo.parent / 'meshes.json'
  with FileLock(repo.parent / 'meshes.lock'):
    if not out.exists():
      finish(run_worker('meshes', repo, out, devices=8))
  return json.loads(out.read_text())


@pytest.mark.parametrize('mesh', ['data2_fsdp2_tensor2', 'fsdp2_context4', 'data2_context4',
                                  'fsdp2_context4_ring'])
def test_sharded_latents_equal_single_device(results, mesh):
  err = results['meshes'][mesh]['rel_l2']
  print(f"{mesh}: relative L2 {err:.2e}")
  assert err < TOLERANCE


def test_sharded_decode_equals_single_device(results):
  # data2 x context4: 2 prompts, the decode's rows split over 'data'.
  assert results['meshes']['data2_context4']['frames_max_diff'] <= 1


def test_tiles_spread_over_devices_equal_sequential(results):
  # 2 x 2 x 3 = 12 tiles, 8 at a time (one per device; the last round padded).
  err = results['tiled_decode']['rel_l2']
  print(f"tile-parallel decode: relative L2 {err:.2e}")
  assert err < TOLERANCE


@pytest.mark.parametrize('part', ['transformer', 'text_encoder', 'vae'])
def test_parameters_sharded_as_the_rules_say(results, part):
  entry = results['meshes']['data2_fsdp2_tensor2']
  report = entry[part]
  assert report['bad'] == []  # each spec is the rules' and each device holds 1/ways of it
  assert report['split_params'] > 0
  assert entry['to_q_spec'] == [None, 'fsdp', 'tensor']  # ('layers', 'embed', 'heads')
  if part != 'vae':  # the VAE is (nearly) replicated by the rules
    per_device, = report['per_device_bytes']  # the same on every device
    assert per_device < 0.5 * report['model_bytes']


def test_fsdp8_holds_an_eighth_per_device(results):
  mem = results['memory']
  print(f"fsdp=8: {mem['per_device_bytes'][0]} of {mem['total_bytes']} bytes per device "
        f"({mem['max_fraction']:.4f})")
  assert mem['devices'] == 8 and mem['fallbacks'] == []
  assert 0.125 <= mem['max_fraction'] < 0.13


@pytest.mark.parametrize('mesh', [dict(fsdp=8), dict(fsdp=4, tensor=2), dict(tensor=8),
                                  dict(data=2, fsdp=8, tensor=4, context=4)])
@pytest.mark.parametrize('name', ['2b', '13b', 't5'])
def test_released_sizes_shard_without_fallback(name, mesh):
  make = {'2b': lambda: LTXVideoTransformer(LTXV_2B, rngs=nnx.Rngs(0)),
          '13b': lambda: LTXVideoTransformer(LTXV_13B, rngs=nnx.Rngs(0)),
          't5': lambda: T5Encoder(T5Config(), rngs=nnx.Rngs(0))}[name]
  model = nnx.eval_shape(make)
  shape = {a: mesh.get(a, 1) for a in sharding.MESH_AXES}
  assert sharding.fallbacks(model, shape) == []


def test_spec_fallback_rule():
  mesh = {'data': 2, 'fsdp': 4, 'tensor': 2, 'context': 1}
  assert sharding.spec_for((8, 16), ('batch', 'embed'), mesh) == P(('data', 'fsdp'), None)
  assert sharding.spec_for((2, 16), ('batch', 'embed'), mesh) == P('data', 'fsdp')
  assert sharding.spec_for((3, 6), ('batch', 'mlp'), mesh) == P(None, 'tensor')
  assert sharding.spec_for((4, 4), ('embed', 'embed'), mesh) == P('fsdp', None)
  assert sharding.spec_for((4,), ('conv_in',), mesh) == P(None)  # unlisted: replicated
  # Where every size divides, the rules alone decide.
  assert sharding.spec_for((4, 16, 8), ('layers', 'embed', 'mlp'), mesh) == P(None, 'fsdp', 'tensor')


def test_make_mesh_sizes():
  mesh = sharding.make_mesh(fsdp=-1)  # one device here
  assert mesh.axis_names == sharding.MESH_AXES and mesh.devices.shape == (1, 1, 1, 1)
  with pytest.raises(ValueError, match='needs 4 devices'):
    sharding.make_mesh(data=2, tensor=2)
  with pytest.raises(ValueError, match='at most one may be -1'):
    sharding.make_mesh(data=-1, fsdp=-1)
  assert sharding.mesh_from_config({'data': 1, 'fsdp': 1, 'tensor': 1, 'context': 1}) is None
  assert jax.device_count() == 1


@pytest.mark.parametrize('key, value, message', [
    ('fsdp', 0, 'must be integers'), ('tensor', -1, None), ('context', -2, 'must be integers'),
    ('context_attention', 'tree', 'choose one of')])
def test_cli_mesh_config_checks(key, value, message):
  from ltx_jax.cli import config as config_lib
  c = config_lib.base_config('')
  c.mesh[key] = value
  if message is None:
    config_lib.check_mesh(c)
    c.mesh.data = -1
    message = 'at most one'
  with pytest.raises(config_lib.UsageError, match=message):
    config_lib.check_mesh(c)
