"""Loading the VAE from a diffusers folder or an official single-file checkpoint, strictly and lazily.

Our module tree follows the official `CausalVideoAutoencoder` names (encoder.down_blocks.i,
decoder.up_blocks.i, res_blocks.j, last_time_embedder, ...). Each format is one declarative table
of (our module prefix, checkpoint prefix) pairs plus a few key renames for leaves whose naming
differs; `plan_from_table` / `load_params` do the rest and refuse partial or mis-shaped files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.models.vae.config import VAEConfig, from_official
from ltx_jax.models.vae.diffusers_config import diffusers_layout
from ltx_jax.models.vae.model import Statistic, VideoAutoencoder
from ltx_jax.weights import orbax_io
from ltx_jax.weights.loader import Plan, load_params, plan_from_table
from ltx_jax.weights.safetensors_io import official_config, open_safetensors

# Leaf renames shared by both formats: PixArt's embedder nests its MLP one level deeper.
_COMMON_RENAMES = ((r'time_embedder\.linear_', 'time_embedder.timestep_embedder.linear_'),)

OFFICIAL_RENAMES = _COMMON_RENAMES + (
    (r'\.conv_shortcut\.conv\.', '.conv_shortcut.'),  # a plain Conv3d there, not a CausalConv3d
    (r'\.norm3\.(weight|bias)$', r'.norm3.norm.\1'),  # wrapped nn.LayerNorm
    (r'^latents_mean$', 'per_channel_statistics.mean-of-means'),
    (r'^latents_std$', 'per_channel_statistics.std-of-means'),
)
# Known and unused: statistics the official code never reads.
OFFICIAL_IGNORE = (r'per_channel_statistics\.(channel|mean-of-stds|std-of-stds|mean-of-stds_over_std-of-means)',)

DIFFUSERS_RENAMES = _COMMON_RENAMES + (
    (r'^decoder\.last_scale_shift_table$', 'decoder.scale_shift_table'),
)


def official_table(config: VAEConfig) -> list[tuple[str, str]]:
  del config  # our names are the official ones
  return [('', '')]


def diffusers_table(enc_prefixes: list[str], dec_prefixes: list[str]) -> list[tuple[str, str]]:
  """Block i of our encoder / decoder -> its diffusers stage member."""
  table = [('', ''), ('decoder.last_time_embedder', 'decoder.time_embedder')]
  for side, ours, prefixes in (('encoder', 'down_blocks', enc_prefixes),
                               ('decoder', 'up_blocks', dec_prefixes)):
    for i, p in enumerate(prefixes):
      table.append((f'{side}.{ours}.{i}', f'{side}.{p}'))
      table.append((f'{side}.{ours}.{i}.res_blocks', f'{side}.{p}.resnets'))
  return table


def make_plan(model: VideoAutoencoder, table, renames) -> Plan:
  """Table plan, then leaf renames; noise scales are stored [C, 1, 1], ours are [C]."""
  plan = plan_from_table(model, table)
  for path, src in plan.items():
    keys = src.keys
    for pattern, repl in renames:
      keys = tuple(re.sub(pattern, repl, k) for k in keys)
    reshape = None
    if str(path[-1]).startswith('per_channel_scale'):
      reshape = tuple(_parent_value(model, path).shape)
    plan[path] = dataclasses.replace(src, keys=keys, reshape=reshape)
  return plan


def _parent_value(model, path):
  node = model
  for p in path:
    node = node[p] if isinstance(p, int) else getattr(node, p)
  return node.get_value()


def abstract_vae(config: VAEConfig, *, dtype=jnp.float32, param_dtype=jnp.float32):
  """The model with shapes only (no memory, no random init)."""
  return nnx.eval_shape(lambda: VideoAutoencoder(config, dtype=dtype, param_dtype=param_dtype,
                                                 rngs=nnx.Rngs(0)))


def _fill(model, store, plan: Plan, param_dtype, what: str, ignore, sharding=None
          ) -> VideoAutoencoder:
  """Parameters in param_dtype, statistics in f32; both checked strictly against the file."""
  stats = {p: s for p, s in plan.items() if isinstance(_var(model, p), Statistic)}
  params = {p: s for p, s in plan.items() if p not in stats}
  stat_keys = [re.escape(k) for s in stats.values() for k in s.keys]
  load_params(model, store, params, param_dtype, what=what, ignore=list(ignore) + stat_keys,
              sharding=sharding)
  load_params(model, store, stats, jnp.float32, what=what, ignore=['.*'], sharding=sharding)
  return model


def _var(model, path):
  node = model
  for p in path[:-1]:
    node = node[p] if isinstance(p, int) else getattr(node, p)
  return getattr(node, path[-1])


def _diffusers_folder(path: Path) -> Path | None:
  for folder in (path / 'vae', path):
    cfg = folder / 'config.json'
    if cfg.exists() and json.loads(cfg.read_text()).get('_class_name') == 'AutoencoderKLLTXVideo':
      return folder
  return None


def load_vae(source: str | os.PathLike, *, dtype=jnp.float32, param_dtype=None,
             mesh: jax.sharding.Mesh | None = None, rules: sharding_lib.Rules | None = None
             ) -> VideoAutoencoder:
  """Loads the VAE from a diffusers `vae/` folder (or the repo folder above it) or an official
  single-file checkpoint (`vae.*` tensors, architecture in metadata `config` -> `vae`).

  dtype: compute dtype; param_dtype: storage dtype (defaults to dtype).
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py; the VAE's
    names are replicated by the default rules); default one device.
  """
  if orbax_io.is_orbax(source):  # a checkpoint converted by tools/convert.py
    return orbax_io.restore_component(source, 'vae', dtype=dtype, param_dtype=param_dtype,
                                      mesh=mesh, rules=rules)
  path = Path(source)
  param_dtype = dtype if param_dtype is None else param_dtype
  if path.is_dir():
    folder = _diffusers_folder(path)
    if folder is None:
      raise FileNotFoundError(f"{path}: no AutoencoderKLLTXVideo config.json here or in vae/")
    config, enc, dec = diffusers_layout(json.loads((folder / 'config.json').read_text()))
    store = open_safetensors(folder)
    table, renames, ignore = diffusers_table(enc, dec), DIFFUSERS_RENAMES, ()
  else:
    store = open_safetensors(path, prefix='vae.')
    config = from_official(official_config(store, 'vae'))
    table, renames, ignore = official_table(config), OFFICIAL_RENAMES, OFFICIAL_IGNORE
  model = abstract_vae(config, dtype=dtype, param_dtype=param_dtype)
  plan = make_plan(model, table, renames)
  where = sharding_lib.sharding_fn(mesh, rules) if mesh is not None else None
  return _fill(model, store, plan, param_dtype, f'VAE from {path}', ignore, where)
