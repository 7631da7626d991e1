"""Dtypes of parameters: the one parser of dtype arguments, the fp8 storage set, the one cast.

Every loader and the converter take `dtype` (compute) and `param_dtype` (storage) as a dtype
(`jnp.bfloat16`, `np.float32`, ...) or a name: 'f32' / 'float32', 'bf16' / 'bfloat16',
'fp16' / 'f16' / 'float16', and for storage only 'fp8'. `parse` turns any of them into a jnp
scalar type, or the string 'fp8', and refuses everything else with a UsageError.

param_dtype 'fp8': the component's fp8 set (the transformer's block linear weights: attention
q/k/v/out, FFN in/out, ~99% of its parameters) is stored as float8_e4m3fn, as in the official
`-fp8` checkpoints, and every other parameter in bfloat16; components without an fp8 set (VAE,
T5) store everything in bfloat16. fp8 kernels stay fp8 on the device; `Dense` upcasts them to
its compute dtype inside each matmul.

Every weight that changes dtype on its way into a model or a converted checkpoint goes through
`cast`, a plain round-to-nearest cast (no scales, like the official files) that refuses values
the target cannot hold (beyond +-448 for float8_e4m3fn, +-65504 for float16) instead of turning
them into NaN or inf. bfloat16 has float32's range and is never refused.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from ltx_jax.errors import LoadError, UsageError

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
FP8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448

# Accepted names -> dtype ('fp8' stays a name: it is a storage scheme, not one dtype).
NAMES = {'f32': jnp.float32, 'float32': jnp.float32, 'bf16': jnp.bfloat16,
         'bfloat16': jnp.bfloat16, 'fp16': jnp.float16, 'f16': jnp.float16,
         'float16': jnp.float16, 'fp8': 'fp8'}
_SHORT = {np.dtype(jnp.float32): 'f32', np.dtype(jnp.bfloat16): 'bf16',
          np.dtype(jnp.float16): 'fp16'}
_ALLOWED = "'f32', 'bf16', 'fp16' or 'fp8' (or 'float32' etc., or a numpy / jax dtype of those)"

# Largest finite magnitude of the dtypes whose range is narrower than float32's.
_RANGE = {np.dtype(np.float16): float(np.finfo(np.float16).max), FP8: FP8_MAX,
          np.dtype(ml_dtypes.float8_e5m2): float(ml_dtypes.finfo(ml_dtypes.float8_e5m2).max)}

Path = tuple[Any, ...]
DTypeLike = Any  # a name in NAMES, a numpy / jax dtype, or a scalar type such as jnp.bfloat16


def parse(value: DTypeLike, *, what: str = 'weights') -> Any:
  """A dtype argument -> jnp.float32 | jnp.bfloat16 | jnp.float16 | 'fp8'.

  what: 'weights' (a param_dtype: 'fp8' allowed) or 'compute' (a dtype: 'fp8' refused).
  """
  if isinstance(value, str):
    if value not in NAMES:
      raise UsageError(f"unknown {what} dtype {value!r}; choose one of {_ALLOWED}")
    out = NAMES[value]
  else:
    try:
      dt = np.dtype(value)
    except TypeError:
      raise UsageError(f"unknown {what} dtype {value!r}; choose one of {_ALLOWED}") from None
    if dt == FP8:
      out = 'fp8'
    elif dt in _SHORT:
      out = NAMES[_SHORT[dt]]
    else:
      raise UsageError(f"unknown {what} dtype {dt.name!r}; choose one of {_ALLOWED}")
  if out == 'fp8' and what == 'compute':
    raise UsageError("dtype 'fp8' is a storage format; pass param_dtype='fp8' with a compute "
                     "dtype of 'f32', 'bf16' or 'fp16'")
  return out


def name_of(param_dtype: Any) -> str:
  """'f32' | 'bf16' | 'fp16' | 'fp8' for a parsed dtype (as recorded in manifests)."""
  parsed = parse(param_dtype)
  return parsed if isinstance(parsed, str) else _SHORT[np.dtype(parsed)]


def is_fp8(param_dtype: Any) -> bool:
  return isinstance(param_dtype, str) and param_dtype == 'fp8'


def is_block_kernel(path: Path) -> bool:
  """The transformer's fp8 set: Dense kernels inside the stacked transformer blocks."""
  return str(path[0]) == 'blocks' and str(path[-1]) == 'kernel'


def base_dtype(param_dtype: Any) -> Any:
  """The dtype of the parameters outside the fp8 set."""
  return jnp.bfloat16 if is_fp8(param_dtype) else param_dtype


def apply(model: nnx.Module, param_dtype: Any,
          fp8_set: Callable[[Path], bool] = is_block_kernel) -> nnx.Module:
  """Marks the fp8 set of an abstract model (`nnx.eval_shape`) as float8_e4m3fn; others untouched.

  The model must have been built with `base_dtype(param_dtype)`. A no-op unless param_dtype is
  'fp8'.
  """
  if not is_fp8(param_dtype):
    return model
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and fp8_set(path):
      value = var.get_value()
      var.set_value(jax.ShapeDtypeStruct(value.shape, FP8))
  return model


def cast(value: np.ndarray | jax.Array, dtype: Any, *, name: str) -> np.ndarray | jax.Array:
  """`value.astype(dtype)` for one weight named `name` (a host or a device array), refusing
  with a LoadError any value the target cannot hold (NaNs pass through as NaNs)."""
  dtype = np.dtype(dtype)
  if value.dtype == dtype:
    return value
  limit = _RANGE.get(dtype)
  source_max = _RANGE.get(np.dtype(value.dtype), np.inf)
  if limit is not None and source_max > limit and value.size:
    peak = _peak(value)
    if peak > limit:
      raise LoadError(f"{name}: weights up to {peak:g} in magnitude do not fit {dtype.name} "
                      f"(range +-{limit:g}); load or convert it in bf16 or f32")
  return value.astype(dtype)


def first_nonfinite(value: np.ndarray | jax.Array, chunk: int = 1 << 22) -> int | None:
  """The flat index of the first NaN or Inf of a float array (host or device), else None; on
  the host in f32 chunks, so a bf16 / fp8 tensor costs one upcast pass and no full copy."""
  if not jnp.issubdtype(value.dtype, jnp.floating) or not value.size:
    return None
  if isinstance(value, jax.Array):
    bad = ~jnp.isfinite(value)
    return int(jnp.argmax(bad.ravel())) if bool(bad.any()) else None
  flat = np.ravel(value)
  for i in range(0, flat.size, chunk):
    ok = np.isfinite(flat[i:i + chunk].astype(np.float32))
    if not ok.all():
      return i + int(np.argmin(ok))
  return None


def check_finite(value: np.ndarray | jax.Array, *, name: str, where: str) -> None:
  """A LoadError naming tensor `name` of `where` when it holds NaN or Inf."""
  if first_nonfinite(value) is not None:
    raise LoadError(f"{where}: tensor {name} holds NaN or Inf: the file is damaged or was "
                    "saved from a diverged model; pass "
                    "allow_nonfinite=True (--config.model.allow_nonfinite) to load it anyway")


def _peak(value: np.ndarray | jax.Array, chunk: int = 1 << 22) -> float:
  """max |value| over the non-NaN entries (-inf or NaN when all are NaN), in f32 chunks on the host:
  numpy's reductions over bf16 / fp8 are ~30x slower than an upcast followed by f32 ones."""
  if isinstance(value, jax.Array):
    return float(jnp.maximum(jnp.nanmax(value), -jnp.nanmin(value)))
  flat = np.ravel(value)  # a view for the contiguous arrays the stores hand out
  hi, lo = -np.inf, np.inf
  for i in range(0, flat.size, chunk):
    part = flat[i:i + chunk].astype(np.float32)
    hi, lo = np.fmax(hi, np.fmax.reduce(part)), np.fmin(lo, np.fmin.reduce(part))
  return float(max(hi, -lo))
