"""Parameter helpers and the two parametric layers every model here uses.

Every parameter carries logical axis names in its `out_sharding` metadata (for example
`('embed', 'mlp')`); `ltx_jax.sharding` maps them to mesh axes. Parameters are stored in
`param_dtype` and computed in `dtype`. A `torch_names` class attribute tells the weight loader
how each of our leaves is called, and laid out, in PyTorch state dicts.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax.errors import UsageError
from ltx_jax.nn.norms import rms_norm

Axes = tuple[str | None, ...]


def param(init: Callable, key: jax.Array, shape: tuple[int, ...], dtype, axes: Axes) -> nnx.Param:
  """A parameter with logical axis names; sharding is applied later, from one rules table."""
  assert len(axes) == len(shape), (shape, axes)
  return nnx.Param(init(key, shape, dtype), out_sharding=axes, eager_sharding=False)


def stacked(make: Callable[[nnx.Rngs], nnx.Module], num: int, rngs: nnx.Rngs,
            axis_name: str = 'layers') -> nnx.Module:
  """Builds `num` copies of a module as one module whose parameters have a leading `num` axis."""

  @nnx.split_rngs(splits=num)
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: axis_name})
  def _make(rngs):
    return make(rngs)

  return _make(rngs)


def cpu_half_precision(dtype) -> bool:
  """Whether a 16-bit matmul runs on XLA's CPU backend, which is ~1.6x faster when asked for an
  f32 result (its bf16 GEMM accumulates in f32 either way; tools/bench.py, transformer case).
  GPUs keep the 16-bit output their GEMMs write directly."""
  return jnp.dtype(dtype).itemsize == 2 and jax.default_backend() == 'cpu'


FP8 = jnp.float8_e4m3fn
FP8_MAX = float(jnp.finfo(FP8).max)  # 448
MATMULS = ('default', 'fp8')

# XLA options for a program whose Dense layers multiply in fp8 (`compiler_options`). XLA's GPU
# compiler (gpu_compiler.cc, OptimizeHloPostLayoutAssignment) runs GemmFusion, which wraps every
# dot with fusible producers -- here the fp8 -> bf16 convert and the scale multiply -- into a
# Triton GEMM fusion, before the GemmRewriter passes that turn the dequantise -> dot pattern
# into a cuBLASLt fp8 GEMM (`__cublas$lt$matmul$f8`); the fusion goes back to cuBLAS only when
# its autotuner prefers it, and on an H200 it kept all 13B GEMMs in Triton (bf16 MMAs on
# upcast operands, no fp8 speed). Without the Triton GEMM emitter the rewriter sees every dot.
FP8_COMPILER_OPTIONS = {'xla_gpu_enable_triton_gemm': False}


def compiler_options(model: nnx.Module) -> dict[str, bool]:
  """XLA compiler options for jitted programs that run `model`: `FP8_COMPILER_OPTIONS` when one
  of its `Dense` layers multiplies in fp8 (`set_matmul(model, 'fp8')`), else none. Pass them as
  `jax.jit(..., compiler_options=compiler_options(model))`; backends other than GPU ignore
  them."""
  fp8 = any(isinstance(m, Dense) and m.matmul == 'fp8' for _, m in nnx.iter_graph(model))
  return dict(FP8_COMPILER_OPTIONS) if fp8 else {}


def fp8_matmul(x: jax.Array, kernel: jax.Array, dtype) -> jax.Array:
  """x [..., I] @ kernel [I, O] (float8_e4m3fn) as an fp8 x fp8 product, output in `dtype`
  (f32 on the CPU for 16-bit dtypes, see `cpu_half_precision`; `Dense` casts it).

  The activations are quantised on the fly with one per-tensor scale (max |x| / 448, in f32);
  the weights carry scale 1 (the official fp8 files are plain casts). Written as the
  dequantise -> dot pattern that XLA's GPU GemmRewriter (gemm_rewriter.cc, `MatchFp8Param` /
  `CreateF8CustomCall`) turns into a cuBLASLt fp8 GEMM on GPUs with fp8 tensor cores (compute
  capability 8.9+, CUDA 12+), with the scale as its f32 a_scale and f32 accumulation, when the
  program is compiled with `FP8_COMPILER_OPTIONS`. Other backends run the same maths as written,
  an exact emulation. tests/test_fp8_compute.py checks the HLO against the rewriter's rules:
  - each dot operand reaches an fp8 value through `convert` to a wider type, optionally
    `multiply` by `broadcast` of a scalar (the scale), then only bitcast / broadcast / copy /
    dynamic-slice / pad / reshape / select / slice / transpose;
  - one contracting dimension per operand and exactly one non-contracting one besides the
    batch dimensions (so the batch dimensions of x are flattened away here, giving a 2-D dot);
  - output bf16, f16, f32 or fp8. Operand layouts need no care: the rewriter transposes a
    column-major A / row-major B itself and pads dimensions to multiples of 16.
  """
  lead, i = x.shape[:-1], x.shape[-1]
  xf = x.reshape(-1, i).astype(jnp.float32)  # [M, I]
  scale = jnp.maximum(jnp.max(jnp.abs(xf)), jnp.finfo(jnp.float32).tiny) / FP8_MAX
  xq = jnp.clip(xf / scale, -FP8_MAX, FP8_MAX).astype(FP8)
  # The barrier keeps the fp8 tensor: XLA's SimplifyFPConversions folds any chain of two float
  # converts (f32 -> fp8 -> bf16 becomes f32 -> bf16) and would drop the quantisation. It does
  # not hide the fp8 value from the rewriter, whose walk from the dot stops at the first fp8
  # instruction: the barrier itself.
  xq = jax.lax.optimization_barrier(xq)
  # Dequantise (convert, multiply by a scalar) in the GEMM's operand dtype. The rewriter takes
  # the scale -- rounded to `dtype` -- as cuBLASLt's f32 a_scale, applied to the f32 sums of the
  # exact fp8 products; on the CPU the operands are f32, where fp8 value x rounded scale is
  # exact too, so both compute scale * sum(xq * w) with f32 accumulation.
  scale = scale.astype(dtype)
  dq = jnp.float32 if cpu_half_precision(dtype) else dtype
  lhs = xq.astype(dq) * scale.astype(dq)  # [M, I]
  rhs = kernel.astype(dq)  # [I, O]
  y = jax.lax.dot_general(lhs, rhs, (((1,), (0,)), ((), ())))  # [M, O]
  return y.reshape(*lead, kernel.shape[1])  # [..., O]


class Dense(nnx.Module):
  """y = x @ kernel + bias with kernel [in, out].

  `lora`: runtime LoRA adapters added to the product (None without; `ltx_jax.nn.lora`).
  Weights may be stored in fp8: by default they are upcast to the compute dtype inside each
  matmul (storage only); with `matmul='fp8'` (see `set_matmul`) fp8 kernels multiply fp8
  activations (`fp8_matmul`).
  """

  torch_names = {'kernel': ('weight', (1, 0)), 'bias': ('bias', None)}

  def __init__(self, in_features: int, out_features: int, *, axes: Axes = ('embed', 'mlp'),
               use_bias: bool = True, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.matmul = 'default'
    self.lora = None  # runtime LoRA adapters (ltx_jax/nn/lora.py LowRank), attached by loaders
    self.kernel = param(nnx.initializers.lecun_normal(), rngs.params(),
                        (in_features, out_features), param_dtype, axes)
    self.bias = (param(nnx.initializers.normal(0.02), rngs.params(), (out_features,),
                       param_dtype, axes[1:]) if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.matmul == 'fp8' and self.kernel.dtype == FP8:
      y = fp8_matmul(x, self.kernel[...], self.dtype)
    else:
      kernel = self.kernel[...].astype(self.dtype)  # fp8 / bf16 storage -> compute dtype
      acc = jnp.float32 if cpu_half_precision(self.dtype) else None
      y = jnp.einsum('...i,io->...o', x.astype(self.dtype), kernel, preferred_element_type=acc)
    if self.lora is not None:
      y = y + self.lora(x, self.dtype).astype(y.dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(y.dtype)
    return y.astype(self.dtype)


def set_matmul(model: nnx.Module, matmul: str) -> int:
  """Sets how every `Dense` of `model` with an fp8 kernel multiplies: 'fp8' (fp8 x fp8 GEMMs,
  `fp8_matmul`) or 'default' (upcast the kernel to the compute dtype). Returns how many layers
  have fp8 kernels; 'fp8' on a model without any is refused (load it with param_dtype='fp8')."""
  if matmul not in MATMULS:
    raise UsageError(f"matmul={matmul!r}; choose one of {', '.join(MATMULS)}")
  layers = [m for _, m in nnx.iter_graph(model)
            if isinstance(m, Dense) and m.kernel.dtype == FP8]
  if matmul == 'fp8' and not layers:
    raise UsageError("matmul='fp8' needs fp8 weights; load the model with param_dtype='fp8' "
                     "(or an official -fp8 file)")
  for layer in layers:
    layer.matmul = matmul
  return len(layers)


class RMSNorm(nnx.Module):
  """RMS norm with a learned scale, computed in f32 and cast back."""

  torch_names = {'scale': ('weight', None)}

  def __init__(self, dim: int, *, eps: float, axis_name: str = 'embed',
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(nnx.initializers.ones, rngs.params(), (dim,), param_dtype, (axis_name,))

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, self.eps, self.scale[...])
