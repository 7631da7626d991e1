"""What trains: LoRA factors on chosen Dense layers, or the model's own parameters.

Layers and parameters are named as users name them: the module names of diffusers'
`LTXVideoTransformer3DModel` (`transformer_blocks.3.attn1.to_q`, `...ff.net.0.proj`), which the
official trainer's configs use, or the official checkpoint's (`patchify_proj`, `adaln_single`).
A list of names selects, as PEFT's `target_modules` does, every module whose name equals one
of them or ends in '.' + one of them; a string is a regular expression that must match a whole
name (PEFT's rule for a string). Selection is per layer of the stacked blocks: a layer not
selected keeps a zero scale (LoRA) and a zero mask (its slice never changes).

LoRA adapters are `ltx_jax.nn.lora.LowRank` modules with one adapter named 'train': `a` [(L,)
in, r] drawn as PEFT's default (Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in),
1/sqrt(in))), `b` [(L,) r, out] zero, and the scale alpha / r (alpha / sqrt(r) with rsLoRA)
held in the module's scale variable (so `b` trains unscaled, as PEFT's lora_B).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import UsageError
from ltx_jax.models.transformer.loading import DIFFUSERS_TABLE, OFFICIAL_TABLE
from ltx_jax.nn.layers import Dense
from ltx_jax.nn.lora import LoRAWeight, LowRank
from ltx_jax.weights.loader import plan_from_table

ADAPTER = 'train'
Path = tuple


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """A LoRA adapter to train (PEFT's LoraConfig: r, lora_alpha, target_modules, lora_dropout,
  use_rslora). Defaults: the official 2B LoRA config."""
  rank: int = 32
  alpha: float = 32.0
  dropout: float = 0.0
  rslora: bool = False
  targets: tuple[str, ...] | str = ('to_k', 'to_q', 'to_v', 'to_out.0')

  def __post_init__(self):
    if isinstance(self.targets, list):
      object.__setattr__(self, 'targets', tuple(self.targets))
    if isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank < 1:
      raise UsageError(f"LoRA rank={self.rank!r}; expected an integer >= 1")
    if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
      raise UsageError(f"LoRA alpha={self.alpha!r}; expected a finite number > 0")
    if not 0 <= self.dropout < 1:
      raise UsageError(f"LoRA dropout={self.dropout!r}; expected in [0, 1)")
    _check_targets(self.targets, 'LoRA targets')

  @property
  def factor(self) -> float:
    """The adapter's output scale: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


@dataclasses.dataclass(frozen=True)
class FullConfig:
  """Full fine-tuning: every parameter (targets None), or those of the modules named (a list,
  matched as LoRA targets are) or whose parameter names match a regular expression (a string,
  e.g. r'transformer_blocks\\.\\d+\\.attn1\\..*')."""
  targets: tuple[str, ...] | str | None = None

  def __post_init__(self):
    if isinstance(self.targets, list):
      object.__setattr__(self, 'targets', tuple(self.targets))
    if self.targets is not None:
      _check_targets(self.targets, 'full fine-tuning targets')


def _check_targets(targets, what: str) -> None:
  if isinstance(targets, str):
    try:
      re.compile(targets)
    except re.error as e:
      raise UsageError(f"{what} {targets!r} is no regular expression ({e})") from None
  elif (not isinstance(targets, tuple) or not targets
        or not all(isinstance(t, str) and t for t in targets)):
    raise UsageError(f"{what}={targets!r}; expected module names (a non-empty list of strings) "
                     "or one regular expression (a string)")


def _matches(targets, name: str) -> bool:
  if isinstance(targets, str):
    return re.fullmatch(targets, name) is not None
  return any(name == t or name.endswith('.' + t) for t in targets)


@dataclasses.dataclass(frozen=True)
class Target:
  """One selected slice: our variable path, its stacked index (None: not stacked), and the
  names of its module in diffusers' and the official checkpoint's naming."""
  path: Path
  index: int | None
  diffusers: str
  official: str


@dataclasses.dataclass(frozen=True)
class Selection:
  """What trains: `mode` ('lora' or 'full'), the selected slices, and per trainable variable
  path a mask (1 where it trains: [L, 1, ...] for stacked variables, else a scalar)."""
  mode: str
  targets: tuple[Target, ...]
  masks: dict
  lora: LoraConfig | None = None

  def is_trainable(self, path: Path, _=None) -> bool:
    return tuple(path) in self.masks


def _names(model: nnx.Module) -> dict[Path, list[tuple[int | None, str, str]]]:
  """Our variable path -> [(stacked index or None, diffusers key, official key)]."""
  diffusers = plan_from_table(model, DIFFUSERS_TABLE)
  official = plan_from_table(model, OFFICIAL_TABLE)
  out = {}
  for path, src in diffusers.items():
    keys, okeys = src.keys, official[path].keys
    out[path] = [(i if src.stack else None, k, o) for i, (k, o) in enumerate(zip(keys, okeys))]
  return out


def _module(key: str) -> str:
  return key.rpartition('.')[0]


def _generic(name: str) -> str:
  return re.sub(r'\.\d+\.', '.{i}.', name, count=1)


def _refuse_unmatched(targets, names: Sequence[str], what: str) -> None:
  known = sorted({_generic(n) for n in names})
  raise UsageError(f"{what} {targets!r} match no layer of this model; its names ({{i}} = "
                   f"block index): {', '.join(known)}")


def select_lora(model: nnx.Module, config: LoraConfig) -> tuple[Target, ...]:
  """The Dense layers (per stacked index) a LoRA config targets; refuses a config that matches
  none, listing the layer names that exist."""
  names = _names(model)
  layers = {p[:-1] for p in names if p[-1] == 'kernel'}
  found, every = [], []
  for path, node in nnx.iter_graph(model):
    if not isinstance(node, Dense) or tuple(path) not in layers:
      continue
    for index, key, okey in names[tuple(path) + ('kernel',)]:
      every.append(_module(key))
      if _matches(config.targets, _module(key)) or _matches(config.targets, _module(okey)):
        found.append(Target(tuple(path), index, _module(key), _module(okey)))
  if not found:
    _refuse_unmatched(config.targets, every, 'LoRA targets')
  return tuple(found)


def attach_lora(model: nnx.Module, config: LoraConfig, key: jax.Array, *, mesh=None,
                rules=None) -> Selection:
  """Puts a trainable LowRank adapter (f32 factors, PEFT's initialisation) on every Dense layer
  `config` targets. Returns the selection (the factors `a` and `b` train)."""
  if any(isinstance(m, LowRank) for _, m in nnx.iter_graph(model)):
    raise UsageError("this model already has runtime LoRA adapters; train on a model loaded "
                     "without them (or with lora_mode='merged')")
  targets = select_lora(model, config)
  by_layer: dict[Path, list[Target]] = {}
  for t in targets:
    by_layer.setdefault(t.path, []).append(t)
  masks = {}
  r = config.rank
  for n, (layer_path, chosen) in enumerate(by_layer.items()):
    dense = model
    for part in layer_path:
      dense = dense[part] if isinstance(part, int) else getattr(dense, part)
    kernel = dense.kernel
    shape = kernel.get_value().shape  # [(L,) in, out]
    stacked = chosen[0].index is not None
    lead, (d_in, d_out) = shape[:-2], shape[-2:]
    on = np.zeros(lead, np.float32)
    for t in chosen:
      on[t.index if stacked else ()] = 1
    bound = 1 / math.sqrt(d_in)  # kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3) * sqrt(3 / in)
    abstract = isinstance(kernel.get_value(), jax.ShapeDtypeStruct)  # an eval_shape'd model
    if abstract:
      a = jax.ShapeDtypeStruct(lead + (d_in, r), jnp.float32)
      b = jax.ShapeDtypeStruct(lead + (r, d_out), jnp.float32)
      scale = jax.ShapeDtypeStruct(lead + (1,), jnp.float32)
    else:
      a = jax.random.uniform(jax.random.fold_in(key, n), lead + (d_in, r), jnp.float32,
                             -bound, bound) * on[..., None, None]
      b = jnp.zeros(lead + (r, d_out), jnp.float32)
      scale = jnp.asarray(on[..., None] * config.factor, jnp.float32)  # [(L,) 1]
    kaxes = tuple(kernel.get_metadata().get('out_sharding') or (None,) * len(shape))
    axes = {'a': kaxes[:-1] + (None,), 'b': kaxes[:-2] + (None, kaxes[-1]),
            'scale': kaxes[:-2] + (None,)}
    layer = LowRank(a, b, scale, [0] * r, [ADAPTER], axes, dropout=config.dropout)
    for var in (layer.a, layer.b, layer.scale):
      if not abstract:
        var.set_value(jax.device_put(var.get_value(),
                                     sharding_lib.variable_sharding(var, mesh, rules)))
    dense.lora = nnx.data(layer)
    mask = jnp.asarray(on.reshape(lead + (1, 1)))
    masks[layer_path + ('lora', 'a')] = mask
    masks[layer_path + ('lora', 'b')] = mask
  return Selection('lora', targets, masks, config)


def select_full(model: nnx.Module, config: FullConfig) -> Selection:
  """The parameters a full fine-tune trains (per stacked slice); refuses targets matching
  none, listing the names that exist."""
  names = _names(model)
  targets, masks, every = [], {}, []
  for path, var in nnx.iter_graph(model):
    if not isinstance(var, nnx.Param) or isinstance(var, LoRAWeight):
      continue
    entries = names.get(tuple(path))
    if entries is None:
      raise UsageError(f"parameter {'.'.join(map(str, path))} has no checkpoint name")
    shape = var.get_value().shape
    stacked = entries[0][0] is not None
    on = np.zeros(shape[:1] if stacked else (), np.float32)
    for index, key, okey in entries:
      every.append(key)
      if config.targets is None or (
          _matches(config.targets, key) if isinstance(config.targets, str)
          else _matches(config.targets, _module(key)) or _matches(config.targets, _module(okey))):
        on[index if stacked else ()] = 1
        targets.append(Target(tuple(path), index, key, okey))
    if on.any():
      masks[tuple(path)] = jnp.asarray(on.reshape(on.shape + (1,) * (len(shape) - on.ndim)))
  if not targets:
    _refuse_unmatched(config.targets, every, 'full fine-tuning targets')
  return Selection('full', tuple(targets), masks)
