"""Storage dtypes of parameters, fp8 included.

`param_dtype` arguments of the loaders take a dtype (every parameter stored in it) or the string
'fp8': the linear weights of the transformer blocks (attention q/k/v/out, FFN in/out; ~99% of
the parameters) are stored as float8_e4m3fn, as in the official `-fp8` checkpoints, and every
other parameter in bfloat16. fp8 kernels stay fp8 on the device; `Dense` upcasts them to its
compute dtype inside each matmul. Converting to fp8 is a plain round-to-nearest cast (no scales),
like the official files; values beyond the e4m3 range (+-448) are refused, not saturated.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
FP8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448
NAMES = {'f32': jnp.float32, 'bf16': jnp.bfloat16, 'fp8': 'fp8'}

Path = tuple[Any, ...]


def parse(name: str | Any) -> Any:
  """'f32' | 'bf16' | 'fp8' | a dtype -> a dtype or 'fp8'."""
  if isinstance(name, str) and name in NAMES:
    return NAMES[name]
  if isinstance(name, str):
    raise ValueError(f"unknown weights dtype {name!r}; choose one of {sorted(NAMES)}")
  return name


def name_of(param_dtype: Any) -> str:
  if isinstance(param_dtype, str):
    return param_dtype
  return {np.dtype(jnp.float32): 'f32', np.dtype(jnp.bfloat16): 'bf16'}.get(
      np.dtype(param_dtype), np.dtype(param_dtype).name)


def is_block_kernel(path: Path) -> bool:
  """The fp8 set: Dense kernels inside the stacked transformer blocks."""
  return str(path[0]) == 'blocks' and str(path[-1]) == 'kernel'


def base_dtype(param_dtype: Any) -> Any:
  """The dtype of the parameters outside the fp8 set."""
  return jnp.bfloat16 if isinstance(param_dtype, str) and param_dtype == 'fp8' else param_dtype


def apply(model: nnx.Module, param_dtype: Any,
          fp8_set: Callable[[Path], bool] = is_block_kernel) -> nnx.Module:
  """Marks the fp8 set of an abstract model (`nnx.eval_shape`) as float8_e4m3fn; others untouched.

  The model must have been built with `base_dtype(param_dtype)`. A no-op unless param_dtype is
  'fp8'.
  """
  if not (isinstance(param_dtype, str) and param_dtype == 'fp8'):
    return model
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and fp8_set(path):
      value = var.get_value()
      var.set_value(jax.ShapeDtypeStruct(value.shape, FP8))
  return model


def cast(a: np.ndarray, dtype: Any) -> np.ndarray:
  """a.astype(dtype), except that a cast to fp8 refuses values it cannot hold."""
  return to_fp8(a) if np.dtype(dtype) == FP8 else a.astype(dtype)


def to_fp8(a: np.ndarray) -> np.ndarray:
  """Round-to-nearest cast to float8_e4m3fn, refusing values it cannot hold."""
  if a.dtype == FP8:
    return a
  peak = float(np.max(np.abs(a.astype(np.float32)))) if a.size else 0.0
  if not peak <= FP8_MAX:
    raise ValueError(f"weights up to {peak:g} do not fit float8_e4m3fn (max {FP8_MAX:g}); "
                     "keep this model in bf16")
  return a.astype(FP8)
