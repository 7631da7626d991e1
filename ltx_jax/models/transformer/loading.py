"""`load_transformer`: the DiT from a diffusers folder, an official single file or a converted
checkpoint, through the loading front door (`ltx_jax.weights.component`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.models.transformer.config import TransformerConfig
from ltx_jax.models.transformer.model import LTXVideoTransformer
from ltx_jax.weights import lora as lora_lib
from ltx_jax.weights import precision
from ltx_jax.weights.component import Checkpoint, Component, load_component
from ltx_jax.weights.loader import plan_from_table
from ltx_jax.weights.safetensors_io import official_config, open_safetensors

OFFICIAL_PREFIX = 'model.diffusion_model.'


def _table(official: bool) -> tuple[tuple[str, str], ...]:
  """(our module path, checkpoint key prefix); `{i}` is the stacked layer index.

  The official file differs from diffusers only in four names: patchify_proj, adaln_single,
  q_norm and k_norm.
  """
  blk = 'transformer_blocks.{i}'
  te = 'adaln_single' if official else 'time_embed'
  table = [
      ('', ''),  # caption_projection, scale_shift_table, proj_out: same names
      ('proj_in', 'patchify_proj' if official else 'proj_in'),
      ('time_embed.linear_1', f'{te}.emb.timestep_embedder.linear_1'),
      ('time_embed.linear_2', f'{te}.emb.timestep_embedder.linear_2'),
      ('time_embed.linear', f'{te}.linear'),
      ('blocks', blk),
      ('blocks.ff.proj_in', f'{blk}.ff.net.0.proj'),
      ('blocks.ff.proj_out', f'{blk}.ff.net.2'),
  ]
  for attn in ('attn1', 'attn2'):
    table.append((f'blocks.{attn}.to_out', f'{blk}.{attn}.to_out.0'))
    if official:
      table.append((f'blocks.{attn}.norm_q', f'{blk}.{attn}.q_norm'))
      table.append((f'blocks.{attn}.norm_k', f'{blk}.{attn}.k_norm'))
  return tuple(table)


DIFFUSERS_TABLE = _table(official=False)
OFFICIAL_TABLE = _table(official=True)  # keys below OFFICIAL_PREFIX


def abstract_transformer(config: TransformerConfig, *, dtype: precision.DTypeLike = jnp.float32,
                         param_dtype: precision.DTypeLike | None = None,
                         attention: str = 'auto') -> LTXVideoTransformer:
  """The DiT with shapes only (no memory, no random init), as the loaders fill it.

  param_dtype: storage dtype (defaults to dtype), or 'fp8': block linear weights in
  float8_e4m3fn, everything else bf16 (weights/precision.py).
  """
  dtype = precision.parse(dtype, what='compute')
  param_dtype = dtype if param_dtype is None else precision.parse(param_dtype)
  model = nnx.eval_shape(lambda: LTXVideoTransformer(
      config, dtype=dtype, param_dtype=precision.base_dtype(param_dtype), attention=attention,
      rngs=nnx.Rngs(0)))
  return precision.apply(model, param_dtype, precision.is_block_kernel)


def open_checkpoint(path: Path) -> Checkpoint:
  """A diffusers repo folder (or its transformer/ folder) or an official single file: config,
  tensors and name map."""
  if not path.exists():
    raise FileNotFoundError(f"transformer source {str(path)!r} does not exist; pass a diffusers "
                            "folder (with transformer/) or an official .safetensors file")
  what = f'transformer from {path}'
  if path.is_dir():
    folder = path / 'transformer' if (path / 'transformer').is_dir() else path
    cfg_file = folder / 'config.json'
    if not cfg_file.exists():
      raise FileNotFoundError(f"{folder}: no config.json; expected a diffusers transformer folder")
    config = TransformerConfig.from_diffusers(json.loads(cfg_file.read_text()))
    return Checkpoint(config, open_safetensors(folder),
                      lambda model: plan_from_table(model, DIFFUSERS_TABLE), what=what)
  store = open_safetensors(path)
  config = TransformerConfig.from_official(official_config(store, 'transformer'))
  if any(k.startswith(OFFICIAL_PREFIX) for k in store.keys()):
    store = store.with_prefix(OFFICIAL_PREFIX)
  return Checkpoint(config, store, lambda model: plan_from_table(model, OFFICIAL_TABLE),
                    what=what)


def lora_plans(model: LTXVideoTransformer):
  """The names LoRA files use for the DiT's layers: diffusers' (first) and the official ones."""
  return [plan_from_table(model, DIFFUSERS_TABLE), plan_from_table(model, OFFICIAL_TABLE)]


COMPONENT = Component('transformer', TransformerConfig, abstract_transformer, open_checkpoint,
                      lora_plans=lora_plans)


def load_transformer(source: str | os.PathLike, *, dtype: precision.DTypeLike = jnp.float32,
                     param_dtype: precision.DTypeLike | None = None,
                     mesh: jax.sharding.Mesh | None = None,
                     rules: sharding_lib.Rules | None = None,
                     attention: str = 'auto',
                     allow_nonfinite: bool = False, loras=None, lora_mode: str = 'merged',
                     lora_strict: bool = True) -> LTXVideoTransformer:
  """Loads the DiT strictly: every parameter from the file, every file tensor used.

  source: a diffusers repo folder (or its transformer/ subfolder), an official single file, or a
    checkpoint converted by tools/convert.py (its folder or its transformer/ folder).
  dtype: compute dtype. param_dtype: storage dtype (defaults to dtype), or 'fp8': block linear
    weights stored as float8_e4m3fn and upcast per matmul, everything else bfloat16. Each is
    'f32', 'bf16', 'fp16', 'fp8' or a dtype (`ltx_jax.weights.precision`).
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py); default
    one device.
  allow_nonfinite: load weights holding NaN or Inf (refused by default, naming the tensor).
  attention: 'auto', 'xla', 'cudnn' or a registered implementation name.
  loras: LoRA adapters, `[path | (path, scale), ...]` (diffusers / PEFT, official trainer /
    ComfyUI and kohya layouts; `ltx_jax.weights.lora`). lora_mode: 'merged' (added to the
    weights while they load) or 'runtime' (factors kept beside the weights; scales changed by
    `ltx_jax.set_lora_scales` without recompiling). lora_strict=False skips (with a warning)
    LoRA modules that match no layer or do not fit, instead of refusing the file.
  """
  return load_component(source, COMPONENT, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                        rules=rules, attention=attention, allow_nonfinite=allow_nonfinite,
                        loras=loras, lora_mode=lora_mode, lora_strict=lora_strict)


def add_loras(model: LTXVideoTransformer, loras, *, lora_mode: str = 'merged',
              lora_strict: bool = True, mesh: jax.sharding.Mesh | None = None,
              rules: sharding_lib.Rules | None = None) -> LTXVideoTransformer:
  """Adds LoRA adapters to a DiT already in memory (as `load_transformer(..., loras=...)` does
  while loading): 'merged' changes its weights in place, 'runtime' attaches the factors.
  mesh, rules: where runtime factors go (the model's own mesh)."""
  lora_lib.apply_loras(model, lora_plans(model), loras, mode=lora_mode, strict=lora_strict, mesh=mesh,
              rules=rules, what='transformer')
  return model
