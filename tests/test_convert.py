"""Conversion to orbax: bitwise round trips from every source kind, the manifest, atomic output,
and tools/convert.py's one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from source_layouts import fake_hub_cache, layouts
from ltx_jax import load_transformer
from ltx_jax.weights.convert import convert
from ltx_jax.models.t5 import load_text_encoder, load_tokenizer
from ltx_jax.models.vae import load_vae
from ltx_jax.sources import SourceError, resolve_source
from ltx_jax.sources.resolve import sha256
from ltx_jax.weights import orbax_io

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  return layouts(tmp_path_factory.getbasetemp() / 'layouts')


@nnx.jit
def transformer_out(model, x, ctx, t, mask):
  return model(x, ctx, t, mask, num_frames=2, height=3, width=2)


def run_transformer(model):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 12, 8)).astype(np.float32)
  ctx = rng.standard_normal((1, 5, 32)).astype(np.float32)
  return np.asarray(transformer_out(model, x, ctx, np.array([500.0], np.float32),
                                    np.ones((1, 5), np.float32)))


@nnx.jit
def vae_decode(model, z):
  return model.decode(z, timestep=jnp.array([0.05]))


@nnx.jit
def t5_out(model, ids, mask):
  return model(ids, mask)


def run_vae(model):
  z = np.random.default_rng(1).standard_normal((1, 2, 3, 2, 8)).astype(np.float32)
  return np.asarray(vae_decode(model, z))


def run_t5(model):
  ids = np.array([[5, 9, 3, 1, 0, 0]], np.int32)
  return np.asarray(t5_out(model, ids, (ids > 0).astype(np.int32)))


def assert_bitwise(a, b):
  assert a.dtype == b.dtype and a.shape == b.shape
  assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize('layout', ['diffusers', 'single', 'single_override', 'hub'])
def test_round_trip_bitwise(folders, layout, tmp_path):
  if layout == 'hub':
    fake_hub_cache(tmp_path / 'hub', 'someone/LTX-Video-tiny', folders['diffusers'])
    ms = resolve_source('someone/LTX-Video-tiny', offline=True, cache_dir=str(tmp_path / 'hub'),
                        allow_custom=True)
  else:
    ms = resolve_source(folders[layout], allow_custom=True)
  out = tmp_path / 'ckpt'
  manifest = convert(ms, out, dtype='f32', progress=False, log=lambda s: None)
  restored = resolve_source(out)
  assert restored.kind == 'orbax' and restored.release == ms.release
  for f, digest in manifest['sha256'].items():
    assert sha256(Path(f)) == digest
  assert set(manifest['components']) == {'transformer', 'vae', 'text_encoder'}

  kw = dict(dtype=jnp.float32)
  assert_bitwise(run_transformer(load_transformer(ms.transformer, **kw)),
                 run_transformer(load_transformer(out, **kw)))
  if layout == 'hub':
    return  # the same files as 'diffusers'
  if layout == 'diffusers':  # the component folder is an entry point too
    assert_bitwise(run_transformer(load_transformer(ms.transformer, **kw)),
                   run_transformer(load_transformer(out / 'transformer', **kw)))
  assert_bitwise(run_vae(load_vae(ms.vae, **kw)), run_vae(load_vae(out, **kw)))
  assert_bitwise(run_t5(load_text_encoder(ms.text_encoder, **kw)),
                 run_t5(load_text_encoder(out, **kw)))
  prompt = 'a cat sits on the mat'
  want = load_tokenizer(ms.tokenizer)([prompt], max_length=8)
  got = load_tokenizer(out)([prompt], max_length=8)
  assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_dtypes_components_and_mesh(folders, tmp_path):
  ms = resolve_source(folders['diffusers'], allow_custom=True)
  out = tmp_path / 'bf16'
  manifest = convert(ms, out, dtype='bf16', components=['transformer'], progress=False,
                     log=lambda s: None)
  assert manifest['components']['transformer']['param_dtype'] == 'bf16'
  want = load_transformer(ms.transformer, dtype=jnp.bfloat16)
  got = load_transformer(out, dtype=jnp.bfloat16)
  assert got.proj_in.kernel.dtype == jnp.bfloat16
  assert_bitwise(run_transformer(want), run_transformer(got))
  with pytest.raises(SourceError, match='no vae'):
    resolve_source(out).require('vae')
  # A mesh places each parameter by its logical names (one CPU device here: the rules run,
  # every axis has size 1).
  mesh = jax.make_mesh((1,), ('model',), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = load_transformer(out, dtype=jnp.bfloat16, mesh=mesh, rules={'heads': 'model'})
  spec = sharded.blocks.attn1.to_q.kernel.get_value().sharding.spec
  assert tuple(spec) == (None, None, 'model')
  for a, b in zip(jax.tree.leaves(nnx.state(want)), jax.tree.leaves(nnx.state(sharded))):
    assert_bitwise(np.asarray(a), np.asarray(b))


def test_no_partial_output_on_error(folders, tmp_path, monkeypatch):
  ms = resolve_source(folders['diffusers'], allow_custom=True)
  calls = []

  def fail(self, path, value):
    calls.append(path)
    raise RuntimeError('disk full')

  monkeypatch.setattr(orbax_io.ComponentWriter, 'add', fail)
  with pytest.raises(RuntimeError, match='disk full'):
    convert(ms, tmp_path / 'out', progress=False, log=lambda s: None)
  assert calls and list(tmp_path.iterdir()) == []
  with pytest.raises(FileExistsError):
    convert(ms, folders['diffusers'], progress=False)


def _cli(args, **env):
  return subprocess.Popen(
      [sys.executable, str(ROOT / 'tools' / 'convert.py'), '--no-progress', *map(str, args)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu', **env))


def test_cli(folders, tmp_path):
  """Four broken sources and one good one, run concurrently as real subprocesses."""
  single = folders['single'] / 'ltxv-tiny.safetensors'
  data = single.read_bytes()
  cases = {}
  (tmp_path / 'truncated').mkdir()
  (tmp_path / 'truncated' / 'ltxv-tiny.safetensors').write_bytes(data[:len(data) // 2])
  cases['truncated'] = ([tmp_path / 'truncated', '--allow-custom'], 'truncated')
  (tmp_path / 'corrupt').mkdir()
  n = int.from_bytes(data[:8], 'little')
  (tmp_path / 'corrupt' / 'ltxv-tiny.safetensors').write_bytes(
      data[:8] + b'{"oops' + data[14:8 + n] + data[8 + n:])
  cases['corrupt'] = ([tmp_path / 'corrupt', '--allow-custom'], 'corrupt safetensors header')
  (tmp_path / 'missing').mkdir()
  (tmp_path / 'missing' / 'ltxv-tiny.safetensors').symlink_to(single)
  cases['missing'] = ([tmp_path / 'missing', '--allow-custom'], 'no text_encoder in this')
  cases['unknown'] = ([folders['single']], 'matches no LTX-Video release')
  cases['hub'] = (['nobody/no-such-ltx-model'], 'pass that local folder DIR as the source')
  procs = {}
  for name, (src, _) in cases.items():
    procs[name] = _cli(['--source', src[0], *src[1:], '--out', tmp_path / f'out_{name}'],
                       HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'))
  good = _cli(['--source', folders['single_override'], '--allow-custom', '--dtype', 'fp8',
               '--out', tmp_path / 'good'])
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 1, (name, stderr)
    assert lines[-1].startswith('error: ') and cases[name][1] in lines[-1], (name, stderr)
    assert 'Traceback' not in stderr, stderr
    assert not (tmp_path / f'out_{name}').exists()
  stdout, stderr = good.communicate(timeout=120)
  assert good.returncode == 0, stderr
  assert 'transformer: 40 parameters' in stdout and 'wrote' in stdout
  manifest = json.loads((tmp_path / 'good' / orbax_io.MANIFEST).read_text())
  assert manifest['components']['transformer']['param_dtype'] == 'fp8'
  assert manifest['components']['vae']['param_dtype'] == 'bf16'
  assert not [p for p in tmp_path.iterdir() if p.name.endswith('.partial')]
