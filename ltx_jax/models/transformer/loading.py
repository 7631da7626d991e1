"""`load_transformer`: the DiT from a diffusers folder, an official single file or a converted
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib

from ltx_jax.models.transformer import config as config_lib
from ltx_jax.models.transformer.model import LTXVideoTransformer
from ltx_jax.weights import (load_params, official_config, open_safetensors, orbax_io,
                             plan_from_table, precision)

OFFICIAL_PREFIX = 'model.diffusion_model.'


def _table(official: bool) -> list[tuple[str, str]]:
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
  return table


def _resolve(source: str | Path):
  """-> (config, tensor store, whether the names are official), from a folder or a file."""
  path = Path(source)
  if not path.exists():
    raise FileNotFoundError(f"transformer source {str(path)!r} does not exist; pass a diffusers "
                            "folder (with transformer/) or an official .safetensors file")
  if path.is_dir():
    folder = path / 'transformer' if (path / 'transformer').is_dir() else path
    cfg_file = folder / 'config.json'
    if not cfg_file.exists():
      raise FileNotFoundError(f"{folder}: no config.json; expected a diffusers transformer folder")
    cfg = config_lib.from_diffusers(json.loads(cfg_file.read_text()))
    return cfg, open_safetensors(folder), False
  store = open_safetensors(path)
  entry = official_config(store, 'transformer')
  if any(k.startswith(OFFICIAL_PREFIX) for k in store.keys()):
    store = store.with_prefix(OFFICIAL_PREFIX)
  return config_lib.from_official(entry), store, True


def transformer_plan(source: str | Path, dtype=jnp.float32, *, param_dtype=None,
                     attention: str = 'auto'):
  """-> (abstract model, tensor store, plan, description): everything `load_params` needs.

  Used by `load_transformer` and by the streaming checkpoint converter.
  """
  cfg, store, official = _resolve(source)
  param_dtype = dtype if param_dtype is None else precision.parse(param_dtype)
  model = nnx.eval_shape(lambda: LTXVideoTransformer(
      cfg, dtype=dtype, param_dtype=precision.base_dtype(param_dtype), attention=attention,
      rngs=nnx.Rngs(0)))
  precision.apply(model, param_dtype)
  return model, store, plan_from_table(model, _table(official)), f"transformer from {source}"


def load_transformer(source: str | Path, dtype=jnp.float32, *, param_dtype=None,
                     attention: str = 'auto', mesh: jax.sharding.Mesh | None = None,
                     rules: sharding_lib.Rules | None = None) -> LTXVideoTransformer:
  """Loads the DiT strictly: every parameter from the file, every file tensor used.

  source: a diffusers repo folder (or its transformer/ subfolder), an official single file, or a
    checkpoint converted by tools/convert.py (its folder or its transformer/ folder).
  dtype: compute dtype.
  param_dtype: storage dtype (defaults to dtype), or 'fp8': block linear weights stored as
    float8_e4m3fn and upcast per matmul, everything else bfloat16 (see weights/precision.py).
  attention: 'auto', 'xla', 'cudnn' or a registered implementation name.
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py); default
    one device.
  """
  if orbax_io.is_orbax(source):
    return orbax_io.restore_component(source, 'transformer', dtype=dtype, param_dtype=param_dtype,
                                      mesh=mesh, rules=rules, attention=attention)
  model, store, plan, what = transformer_plan(source, dtype, param_dtype=param_dtype,
                                              attention=attention)
  where = sharding_lib.sharding_fn(mesh, rules) if mesh is not None else None
  return load_params(model, store, plan, None, what=what, sharding=where)
