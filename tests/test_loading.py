"""The loading front door: one dtype parser, one range-checked cast (through the loaders, a
converted checkpoint and tools/convert.py), one loader signature, and weights/ free of models."""

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from ltx_jax import (LoadError, UsageError, load_latent_upsampler, load_text_encoder,
                     load_transformer, load_vae)
from ltx_jax.models.transformer import DIFFUSERS_TABLE, TransformerConfig, abstract_transformer
from ltx_jax.sources import resolve_source
from ltx_jax.weights import orbax_io, plan_from_table, precision, write_safetensors
from ltx_jax.weights.convert import convert

ROOT = Path(__file__).resolve().parents[1]
FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
CONFIG = dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, in_channels=8,
              out_channels=8, cross_attention_dim=16, caption_channels=32)
BIG = 'transformer_blocks.1.attn1.to_q.weight'  # set to hold 1000.0 (> 448, fp8's max)


def _diffusers_transformer(root: Path, big: float | None = None) -> Path:
  """A tiny diffusers transformer folder, random weights made from our own name map (no torch)."""
  folder = root / 'transformer'
  folder.mkdir(parents=True)
  model = abstract_transformer(TransformerConfig.from_diffusers(CONFIG))
  rng = np.random.default_rng(0)
  tensors = {}
  values = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  for path, src in plan_from_table(model, DIFFUSERS_TABLE).items():
    want = values[path].get_value().shape[src.stack:]
    shape = [0] * len(want)
    for i, p in enumerate(src.perm or range(len(want))):
      shape[p] = want[i]
    for key in src.keys:
      tensors[key] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
  if big is not None:
    tensors[BIG][0, 0] = big
  write_safetensors(folder / 'diffusion_pytorch_model.safetensors', tensors)
  (folder / 'config.json').write_text(json.dumps(
      dict(CONFIG, _class_name='LTXVideoTransformer3DModel')))
  return root


# ------------------------------------------------------------------------------ dtype parser


@pytest.mark.parametrize('value,want', [
    ('f32', jnp.float32), ('float32', jnp.float32), ('bf16', jnp.bfloat16),
    ('bfloat16', jnp.bfloat16), ('fp16', jnp.float16), ('float16', jnp.float16),
    ('f16', jnp.float16), ('fp8', 'fp8'), (jnp.bfloat16, jnp.bfloat16),
    (np.float32, jnp.float32), (np.dtype('float16'), jnp.float16),
    (jnp.dtype('bfloat16'), jnp.bfloat16), (ml_dtypes.float8_e4m3fn, 'fp8'),
])
def test_parse(value, want):
  assert precision.parse(value) is want


def test_parse_refuses():
  with pytest.raises(UsageError, match=r"unknown weights dtype 'int4'; choose one of 'f32', "
                                       r"'bf16', 'fp16' or 'fp8'"):
    precision.parse('int4')
  with pytest.raises(UsageError, match="unknown weights dtype 'float64'"):
    precision.parse(np.float64)
  with pytest.raises(UsageError, match="'fp8' is a storage format"):
    precision.parse('fp8', what='compute')
  # The loaders parse first: nothing is opened (the path does not even exist).
  for load in (load_transformer, load_vae, load_text_encoder):
    with pytest.raises(UsageError, match="unknown compute dtype 'half'"):
      load('/nowhere', dtype='half')
    with pytest.raises(UsageError, match="unknown weights dtype 'int8'"):
      load('/nowhere', param_dtype=np.int8)


# -------------------------------------------------------------------------------------- cast


def test_cast_refuses_what_the_dtype_cannot_hold():
  a = np.array([[1.0, -1000.0], [0.5, np.nan]], np.float32)
  with pytest.raises(LoadError, match=r"^w\.x: weights up to 1000 in magnitude do not fit "
                                      r"float8_e4m3fn \(range \+-448\)"):
    precision.cast(a, FP8, name='w.x')
  with pytest.raises(LoadError, match=r"w: weights up to 70000 .* float16 \(range \+-65504\)"):
    precision.cast(np.array([70000.0], np.float32), np.float16, name='w')
  with pytest.raises(LoadError, match='float8_e4m3fn'):  # device arrays take the same check
    precision.cast(jnp.asarray(a), FP8, name='w')
  assert precision.cast(a, jnp.bfloat16, name='w').dtype == jnp.bfloat16  # bf16 has f32's range
  ok = precision.cast(np.array([448.0, np.nan], np.float32), FP8, name='w')
  assert ok[0] == 448 and np.isnan(ok[1])  # NaNs are not out of range
  fp8 = np.array([1.0, -448.0], FP8)
  assert precision.cast(fp8, np.float16, name='w').dtype == np.float16  # widening: no check


def test_out_of_range_refused_by_the_loaders(tmp_path):
  repo = _diffusers_transformer(tmp_path / 'repo', big=1000.0)
  with pytest.raises(LoadError, match=rf"{BIG}: weights up to 1000 in magnitude do not fit "
                                      r"float8_e4m3fn \(range \+-448\)"):
    load_transformer(repo, param_dtype='fp8')
  model = load_transformer(repo, dtype='bf16')  # bf16 holds it
  assert model.blocks.attn1.to_q.kernel.dtype == jnp.bfloat16
  assert float(model.blocks.attn1.to_q.kernel[1, 0, 0]) == 1000.0

  # A converted f32 checkpoint restored as fp8: cast on device by the same function.
  ms = resolve_source(repo, allow_custom=True)
  convert(ms, tmp_path / 'ck', dtype='f32', components=['transformer'], progress=False,
          log=lambda s: None)
  with pytest.raises(LoadError, match=r"blocks\.attn1\.to_q\.kernel: weights up to 1000 in "
                                      r"magnitude do not fit float8_e4m3fn"):
    load_transformer(tmp_path / 'ck', param_dtype='fp8')
  restored = load_transformer(tmp_path / 'ck', dtype='f32', param_dtype='bf16')
  assert restored.blocks.attn1.to_q.kernel.dtype == jnp.bfloat16
  with pytest.raises(UsageError, match=r"is the transformer of a converted checkpoint, not its vae"):
    load_vae(tmp_path / 'ck' / 'transformer')


def test_out_of_range_refused_by_convert(tmp_path):
  repo = _diffusers_transformer(tmp_path / 'repo', big=1000.0)
  out = tmp_path / 'out' / 'ck'
  proc = subprocess.run(
      [sys.executable, str(ROOT / 'tools' / 'convert.py'), '--no-progress', '--source', str(repo),
       '--allow-custom', '--components', 'transformer', '--dtype', 'fp8', '--out', str(out)],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  assert lines[-1].startswith(f'error: {BIG}: weights up to 1000 in magnitude do not fit '
                              'float8_e4m3fn'), proc.stderr
  assert list((tmp_path / 'out').iterdir()) == []  # no output, no .partial folder
  proc = subprocess.run(
      [sys.executable, str(ROOT / 'tools' / 'convert.py'), '--no-progress', '--source', str(repo),
       '--allow-custom', '--dtype', 'int4', '--out', str(out)],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 2 and "unknown weights dtype 'int4'" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------- one loader shape


def test_loaders_share_one_signature():
  sigs = {f.__name__: inspect.signature(f).parameters
          for f in (load_transformer, load_vae, load_text_encoder, load_latent_upsampler)}
  shared = ('dtype', 'param_dtype', 'mesh', 'rules')
  for name, params in sigs.items():
    first, *rest = params.values()
    assert first.name == 'source' and first.kind == first.POSITIONAL_OR_KEYWORD, name
    assert all(p.kind == p.KEYWORD_ONLY for p in rest), name
    assert tuple(params)[1:5] == shared, name
  for key in shared:
    assert len({(p[key].kind, p[key].default, p[key].annotation) for p in sigs.values()}) == 1
  assert sigs['load_transformer']['dtype'].default is jnp.float32
  assert sigs['load_transformer']['attention'] == sigs['load_text_encoder']['attention']
  assert 'attention' not in sigs['load_vae']


def test_weights_import_no_model():
  """weights/ (the converter aside, which writes every component) imports no model, no source
  and no pipeline: at module level or inside functions."""
  offenders = []
  for path in sorted((ROOT / 'ltx_jax' / 'weights').glob('*.py')):
    if path.name == 'convert.py':
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      offenders += [f"{path.name}: {n}" for n in names
                    if n.startswith(('ltx_jax.models', 'ltx_jax.sources', 'ltx_jax.pipeline'))]
  assert offenders == []
  assert 'models' not in orbax_io.__dict__ and not hasattr(orbax_io, '_builders')
