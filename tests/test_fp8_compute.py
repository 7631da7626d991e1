"""fp8 compute: `set_matmul(model, 'fp8')` multiplies fp8 kernels with fp8-quantised
activations (one per-tensor scale); the maths equals a numpy emulation, a tiny fp8
transformer stays close to its storage-only (upcast) run, and the HLO we emit has the form XLA's
GPU GEMM rewriter turns into cuBLASLt fp8 GEMMs (checked here on CPU, on a GPU in test_gpu)."""

import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from conftest import rel_l2
from test_fp8 import fp8_file, run  # noqa: F401  (the module fixture and the forward pass)
from ltx_jax import UsageError, load_transformer
from ltx_jax.nn import layers
from ltx_jax.nn import FP8_COMPILER_OPTIONS, compiler_options, fp8_matmul, set_matmul

FP8 = ml_dtypes.float8_e4m3fn


def test_fp8_matmul_equals_numpy_emulation():
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((3, 7, 64)) * 3).astype(np.float32)
  w = (rng.standard_normal((64, 32)) * 0.1).astype(FP8)
  with jax.default_matmul_precision('highest'):
    got = np.asarray(fp8_matmul(jnp.asarray(x), jnp.asarray(w), jnp.float32))
  scale = np.float32(np.abs(x).max()) / np.float32(448)
  xq = np.clip(x / scale, -448, 448).astype(FP8).astype(np.float32) * scale
  want = xq.astype(np.float64) @ w.astype(np.float64)
  assert rel_l2(got, want) < 1e-6
  exact = x.astype(np.float64) @ w.astype(np.float64)
  err = rel_l2(got, exact)
  print(f"fp8 activation quantisation error of one GEMM: rel L2 {err:.2e}")
  assert 1e-4 < err < 5e-2  # the activations really are quantised, and stay close

  # bf16 compute: the scale the GEMM applies is rounded to bf16 (on GPUs cuBLASLt's f32 a_scale)
  xb = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)
  got = np.asarray(fp8_matmul(jnp.asarray(xb, jnp.bfloat16), jnp.asarray(w), jnp.bfloat16),
                   np.float64)
  scale = np.float32(np.abs(xb).max()) / np.float32(448)
  xq = np.clip(xb / scale, -448, 448).astype(FP8).astype(np.float64)
  want = (xq @ w.astype(np.float64)) * float(jnp.bfloat16(scale))
  assert rel_l2(got, want) < (1e-6 if jax.default_backend() == 'cpu' else 5e-3)


def test_fp8_compute_transformer_close_to_upcast(fp8_file, highest_precision):  # noqa: F811
  path, _ = fp8_file
  model = load_transformer(path, dtype=jnp.bfloat16, param_dtype='fp8')
  upcast = run(model)
  assert compiler_options(model) == {}
  assert set_matmul(model, 'fp8') == 10  # q/k/v/out of both attentions + the FFN's two, stacked
  assert compiler_options(model) == FP8_COMPILER_OPTIONS
  fp8 = run(model)
  err = rel_l2(fp8, upcast)
  print(f"tiny transformer, bf16 compute: fp8 GEMMs vs upcast fp8 weights: rel L2 {err:.2e}")
  # e4m3 keeps 3 mantissa bits: each quantised GEMM input carries ~3% relative rounding error.
  assert 0 < err < 5e-2
  set_matmul(model, 'default')
  assert np.array_equal(run(model), upcast)


# -- the HLO form of fp8_matmul against XLA's GPU GEMM rewriter ----------------------------
# A Python transcription of the fp8 operand matching in openxla/xla
# xla/service/gpu/transforms/gemm_rewriter.cc: `FindF8SubgraphRecursive` walks from a dot
# operand to an fp8 instruction through single-operand ops, operand 0 of divide / dynamic-slice /
# pad and either operand of multiply / select; `MatchFp8Param` then wants convert(fp8), optionally
# multiplied (or divided) by broadcast(scalar) -- the dequantisation -- followed only by ops that
# commute with it; `CreateF8CustomCall` wants one contracting dimension per operand, operands of
# rank batch + 2 where the walk ends, e4m3fn or e5m2 inputs (not both e5m2) and a bf16 / f16 /
# f32 / fp8 output.

_F8 = ('f8e4m3fn', 'f8e5m2')
_COMMUTING = ('bitcast', 'broadcast', 'copy', 'dynamic-slice', 'pad', 'reshape', 'select',
              'slice', 'transpose')
_INSTR = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\]\S* ([\w\-]+)\((.*?)\)(.*)$')


def _instructions(hlo: str) -> dict:
  """name -> (element type, dims, opcode, operand names, attributes) of every array instruction."""
  out = {}
  for line in hlo.splitlines():
    if m := _INSTR.match(line):
      name, ty, dims, op, args, attrs = m.groups()
      operands = [a.split()[-1].lstrip('%') for a in args.split(',') if a.strip()]
      out[name] = (ty, tuple(int(d) for d in dims.split(',') if d), op, operands, attrs)
  return out


def _dims(attrs: str, key: str) -> list[str]:
  m = re.search(rf'{key}=\{{([\d,]*)\}}', attrs)
  return m.group(1).split(',') if m and m.group(1) else []


def _fp8_path(ins: dict, name: str, seen: set) -> list | None:
  """FindF8SubgraphRecursive: [fp8 instruction, ..., name] or None."""
  if name in seen or name not in ins:
    return None
  seen.add(name)
  ty, _, op, operands, _ = ins[name]
  if ty in _F8:
    return [name]
  if len(operands) == 1 or op in ('divide', 'dynamic-slice', 'pad'):
    tried = operands[:1]
  elif op in ('multiply', 'select'):
    tried = operands[:2] if op == 'multiply' else operands[1:3]
  else:
    return None
  for operand in tried:
    if (path := _fp8_path(ins, operand, seen)) is not None:
      return path + [name]
  return None


def _rewritable_operand(ins: dict, name: str) -> str:
  """MatchFp8Param on one dot operand: the reason it fails, or '' when it matches."""
  path = _fp8_path(ins, name, set())
  if path is None:
    return f'{name}: no fp8 instruction reachable'
  if len(path) == 1:
    return ''
  _, _, op1, ops1, _ = ins[path[1]]
  dequant = 0
  if len(path) > 2 and ins[path[2]][2] in ('multiply', 'divide'):
    a, b = ins[path[2]][3][:2]
    if ins[path[2]][2] == 'multiply' and ins[a][2] != 'convert':
      a, b = b, a
    if (ins[a][2] == 'convert' and ins[a][3] == [path[0]] and ins[b][2] == 'broadcast'
        and ins[ins[b][3][0]][1] == ()):
      dequant = 2  # convert, multiply by broadcast(scalar)
  if not dequant and op1 == 'convert' and ops1 == [path[0]]:
    dequant = 1
  if not dequant:
    return f'{name}: {path[1]} is no dequantisation of {path[0]}'
  for step in path[1 + dequant:]:
    if ins[step][2] not in _COMMUTING:
      return f'{name}: {step} ({ins[step][2]}) does not commute with the dequantisation'
  return ''


def _rewritable_dots(hlo: str) -> tuple[list[str], list[str]]:
  """(dots that CreateF8CustomCall accepts, why each other dot with an fp8 operand does not)."""
  ins = _instructions(hlo)
  ok, why = [], []
  for name, (ty, dims, op, operands, attrs) in ins.items():
    if op != 'dot':
      continue
    reasons = [r for r in (_rewritable_operand(ins, o) for o in operands[:2]) if r]
    if len(reasons) == 2 and all('no fp8' in r for r in reasons):
      continue  # a plain dot
    batch = len(_dims(attrs, 'lhs_batch_dims'))
    if len(_dims(attrs, 'lhs_contracting_dims')) != 1 or len(_dims(attrs, 'rhs_contracting_dims')) != 1:
      reasons.append(f'{name}: not one contracting dimension per operand')
    for o in operands[:2]:
      path = _fp8_path(ins, o, set()) or [o]
      if len(ins[path[-1]][1]) != batch + 2:
        reasons.append(f'{name}: operand {path[-1]} has rank {len(ins[path[-1]][1])}, '
                       f'not batch + 2 = {batch + 2}')
    if ty not in ('bf16', 'f16', 'f32') + _F8:
      reasons.append(f'{name}: output {ty}')
    (why if reasons else ok).append('; '.join(reasons) if reasons else name)
  return ok, why


@pytest.fixture
def gpu_trace(monkeypatch):
  """Traces as for a GPU: without the CPU's f32 GEMM operands (`cpu_half_precision`)."""
  monkeypatch.setattr(layers, 'cpu_half_precision', lambda dtype: False)


def test_fp8_matmul_hlo_has_the_form_xlas_gemm_rewriter_matches(gpu_trace):
  x = jax.ShapeDtypeStruct((2, 16, 64), jnp.bfloat16)  # batch dims, as a Dense sees them
  w = jax.ShapeDtypeStruct((64, 32), jnp.float8_e4m3fn)
  hlo = jax.jit(lambda a, b: fp8_matmul(a, b, jnp.bfloat16)).lower(x, w).as_text(dialect='hlo')
  ins = _instructions(hlo)
  (dot,), (why) = _rewritable_dots(hlo)
  assert why == []
  ty, dims, _, (lhs, rhs), attrs = ins[dot]
  assert ty == 'bf16' and ins[lhs][0] == ins[rhs][0] == 'bf16'
  assert dims == (32, 32) and 'lhs_contracting_dims={1}, rhs_contracting_dims={0}' in attrs
  assert 'batch_dims' not in attrs  # the batch dims of x were flattened away: a 2-D dot
  lhs_path = _fp8_path(ins, lhs, set())
  # the quantised activations: opt-barrier(fp8) -> convert -> multiply by broadcast(scalar)
  assert [ins[n][2] for n in lhs_path] == ['opt-barrier', 'convert', 'multiply']
  assert ins[ins[lhs_path[0]][3][0]][:3] == ('f8e4m3fn', (32, 64), 'convert')  # x quantised
  assert [ins[n][2] for n in _fp8_path(ins, rhs, set())] == ['parameter', 'convert']  # scale 1

  # The matcher itself rejects what it should: a dequantisation through an op that does not
  # commute with it, and a non-scalar scale.
  sq = jax.ShapeDtypeStruct((64, 64), jnp.float8_e4m3fn)
  plain = jax.jit(lambda a, b, s: (a.astype(jnp.bfloat16) * s[0]) @ b.astype(jnp.bfloat16))
  s = jax.ShapeDtypeStruct((64,), jnp.bfloat16)
  assert len(_rewritable_dots(plain.lower(sq, sq, s).as_text(dialect='hlo'))[0]) == 1
  bad = jax.jit(lambda a, b: jnp.tanh(a.astype(jnp.bfloat16)) @ b.astype(jnp.bfloat16))
  assert _rewritable_dots(bad.lower(sq, sq).as_text(dialect='hlo'))[0] == []
  vec = jax.jit(lambda a, b, s: (a.astype(jnp.bfloat16) * s) @ b.astype(jnp.bfloat16))
  assert _rewritable_dots(vec.lower(sq, sq, s).as_text(dialect='hlo'))[0] == []


def test_fp8_transformer_block_hlo_every_gemm_rewritable(fp8_file, gpu_trace):  # noqa: F811
  """All ten Dense GEMMs of the scanned block body (q/k/v/out of both attentions, the FFN's
  two) are in the rewriter's form inside the layer scan."""
  path, _ = fp8_file
  model = load_transformer(path, dtype=jnp.bfloat16, param_dtype='fp8')
  set_matmul(model, 'fp8')
  graph, state = nnx.split(model)
  fn = jax.jit(lambda s, x, c, t: nnx.merge(graph, s)(x, c, t, None, num_frames=2, height=3,
                                                      width=2))
  hlo = fn.lower(state, jnp.zeros((2, 12, 8), jnp.bfloat16), jnp.zeros((2, 5, 32), jnp.bfloat16),
                 jnp.zeros((2,), jnp.float32)).as_text(dialect='hlo')
  ok, why = _rewritable_dots(hlo)
  assert why == [] and len(ok) == 10, (ok, why)


def test_set_matmul_refusals(fp8_file):  # noqa: F811
  path, _ = fp8_file
  model = load_transformer(path, dtype=jnp.float32)
  with pytest.raises(UsageError, match="matmul='fp8' needs fp8 weights"):
    set_matmul(model, 'fp8')
  with pytest.raises(UsageError, match="matmul='int4'; choose one of default, fp8"):
    set_matmul(model, 'int4')


def test_from_pretrained_refuses_fp8_matmul_without_fp8_weights(tmp_path):
  from ltx_jax import LTXPipeline
  with pytest.raises(UsageError, match="pass param_dtype='fp8' too"):
    LTXPipeline.from_pretrained(tmp_path, matmul='fp8')
  with pytest.raises(UsageError, match="matmul='int8'; choose one of default, fp8"):
    LTXPipeline.from_pretrained(tmp_path, matmul='int8')


def test_cli_config_refuses_fp8_matmul_without_fp8_storage(tmp_path):
  from ltx_jax.cli import config as config_lib
  c = config_lib.base_config()
  c.model.source = str(tmp_path)
  c.output_dir = str(tmp_path / 'out')
  c.model.matmul = 'fp8'
  with pytest.raises(UsageError, match="set config.model.param_dtype='fp8'"):
    config_lib.check(c)
  c.model.param_dtype = 'fp4'
  with pytest.raises(UsageError, match="config.model.param_dtype='fp4'"):
    config_lib.check(c)


def test_loops_compile_fp8_models_with_the_fp8_options(fp8_file):  # noqa: F811
  """The denoising loops pick the program compiled with FP8_COMPILER_OPTIONS exactly when the
  transformer multiplies in fp8."""
  from ltx_jax.sampling import blend_loop, loop
  model = load_transformer(fp8_file[0], dtype=jnp.bfloat16, param_dtype='fp8')
  assert loop.denoise_program(model) is loop.denoise_jit
  assert blend_loop.denoise_blended_program(model) is blend_loop.denoise_blended_jit
  set_matmul(model, 'fp8')
  assert loop.denoise_program(model) is loop.denoise_fp8_jit
  assert blend_loop.denoise_blended_program(model) is blend_loop.denoise_blended_fp8_jit
