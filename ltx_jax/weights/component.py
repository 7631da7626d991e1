"""The loading front door: one model component from any supported format, the same way for all.

Each model package describes its component once, as a `Component`: the name of its folder in a
converted checkpoint, its config dataclass, its abstract model builder, and `open`, which reads a
source's config and tensor headers (safetensors single file, diffusers folder with or without a
sharded index, GGUF) into a `Checkpoint`: the parsed config, a lazy tensor store and the name map
from the model's parameters to the store's keys. `load_component` then

  1. parses `dtype` / `param_dtype` (`precision.parse`: 'f32', 'bf16', 'fp16', 'fp8' or dtypes);
  2. builds the model abstractly (`nnx.eval_shape`: no memory, no random init) in those dtypes;
  3. fills it strictly (every parameter from the checkpoint, every checkpoint tensor used, shapes
     equal; otherwise one LoadError listing them all), one tensor at a time, each cast by
     `precision.cast` and placed on `mesh` by its logical axis names under `rules`.

Checkpoints written by tools/convert.py (orbax, see orbax_io.py) take the same path, with the
config from the manifest and orbax reading each device's shard.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import UsageError
from ltx_jax.weights import lora as lora_lib
from ltx_jax.weights import orbax_io, precision, values
from ltx_jax.weights.loader import Plan, TensorStore, load_params


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A PyTorch-named checkpoint opened for one component; only configs and headers read."""
  config: Any  # the component's config dataclass
  store: TensorStore
  plan: Callable[[nnx.Module], Plan]  # the name map, applied to the abstract model
  ignore: tuple[str, ...] = ()  # regexes of checkpoint keys known and deliberately unused
  what: str = 'model'  # for messages, e.g. 'transformer from /models/ltxv'


@dataclasses.dataclass(frozen=True)
class Component:
  """What the front door needs to know about one model component."""
  name: str  # its folder in a converted checkpoint: 'transformer', 'vae' or 'text_encoder'
  config_type: type  # its config dataclass (rebuilt from a converted checkpoint's manifest)
  build: Callable[..., nnx.Module]  # (config, *, dtype, param_dtype, **options) -> abstract model
  open: Callable[[Path], Checkpoint]  # a safetensors / GGUF source -> Checkpoint
  # The name maps LoRA files may use for this component (first: the one updates are made in);
  # None: the component takes no LoRA.
  lora_plans: Callable[[nnx.Module], Sequence[Plan]] | None = None


def load_component(source: str | os.PathLike, component: Component, *,
                   dtype: precision.DTypeLike = jnp.float32,
                   param_dtype: precision.DTypeLike | None = None,
                   mesh: jax.sharding.Mesh | None = None,
                   rules: sharding_lib.Rules | None = None, allow_nonfinite: bool = False,
                   loras: Any = None, lora_mode: str = 'merged', lora_strict: bool = True,
                   **options) -> nnx.Module:
  """`component` loaded from `source`: a file or folder its `open` reads, or a checkpoint
  converted by tools/convert.py (its folder or the component's folder inside it).

  dtype: compute dtype. param_dtype: storage dtype (defaults to dtype), or 'fp8' (see
    precision.py). Either as a name ('f32', 'bf16', 'fp16', 'fp8', 'float32', ...) or a dtype.
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py; rules
    default to its RULES); default one device.
  allow_nonfinite: load weights holding NaN or Inf (by default a LoadError names the first
    such tensor, before anything runs).
  options: model options for `component.build` (e.g. attention='auto').
  loras: LoRA adapters (components with `lora_plans`): a .safetensors path, (path, scale), or a
    list of those, in any layout `ltx_jax.weights.lora` reads. lora_mode: 'merged' adds them to
    the weights as they load; 'runtime' keeps their factors beside the weights with scales that
    `ltx_jax.nn.set_lora_scales` changes without recompiling. lora_strict: a LoRA module that
    matches no layer, or does not fit it, is refused (False: warned about and skipped).
    The loaded adapters are listed in the model's `lora_adapters` (file, sha256, scale).
  """
  dtype = precision.parse(dtype, what='compute')
  param_dtype = dtype if param_dtype is None else precision.parse(param_dtype)
  lora_lib.check_mode(lora_mode)
  if lora_lib.parse_loras(loras) and component.lora_plans is None:
    raise UsageError(f"the {component.name} takes no LoRA adapters (loras={loras!r})")
  ckpt = None
  if orbax_io.is_orbax(source):
    model, folder, what = _open_orbax(source, component, dtype, param_dtype, options)
  else:
    with values.in_file(source):
      ckpt = component.open(Path(source))
    model = component.build(ckpt.config, dtype=dtype, param_dtype=param_dtype, **options)
    what = ckpt.what
  adapters = (None if component.lora_plans is None else lora_lib.open_adapters(
      model, component.lora_plans(model), loras, strict=lora_strict, what=what))
  merged = adapters is not None and lora_mode == 'merged'
  if adapters is not None and not merged:
    lora_lib.check_runtime(adapters)  # before the weights load
  if ckpt is None:  # a converted checkpoint: orbax reads each device's shard, adapters after
    with values.in_file(folder):
      orbax_io.restore_model(model, folder, what=what, mesh=mesh, rules=rules,
                             allow_nonfinite=allow_nonfinite)
    if merged:
      lora_lib.merge_loaded(model, adapters)
  else:
    plan = ckpt.plan(model)
    store = lora_lib.MergedStore(ckpt.store, plan, adapters) if merged else ckpt.store
    where = sharding_lib.sharding_fn(mesh, rules) if mesh is not None else None
    load_params(model, store, plan, what=what, ignore=ckpt.ignore, sharding=where,
                allow_nonfinite=allow_nonfinite)
  if adapters is not None and lora_mode == 'runtime':
    lora_lib.attach_runtime(model, adapters, mesh=mesh, rules=rules)
  if component.lora_plans is not None:
    model.lora_adapters = adapters.records if adapters is not None else ()
  return model


def _open_orbax(source, component, dtype, param_dtype, options):
  """(abstract model, its folder, what) of a converted checkpoint."""
  with values.in_file(source):
    root, _ = orbax_io.read_manifest(source)
    if Path(source).resolve() != root.resolve() and Path(source).name != component.name:
      raise UsageError(f"{source} is the {Path(source).name} of a converted checkpoint, not its "
                       f"{component.name}; pass {root} or {root / component.name}")
    config = orbax_io.component_config(root, component.name, component.config_type)
  model = component.build(config, dtype=dtype, param_dtype=param_dtype, **options)
  return model, root / component.name, f'{component.name} from {root}'
