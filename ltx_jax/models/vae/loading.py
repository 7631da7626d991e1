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
from ltx_jax.models.vae.config import VAEConfig
from ltx_jax.models.vae.diffusers_config import diffusers_layout
from ltx_jax.models.vae.model import VideoAutoencoder
from ltx_jax.weights import precision
from ltx_jax.weights.component import Checkpoint, Component, load_component
from ltx_jax.weights.loader import Plan, plan_from_table
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


def abstract_vae(config: VAEConfig, *, dtype: precision.DTypeLike = jnp.float32,
                 param_dtype: precision.DTypeLike | None = None) -> VideoAutoencoder:
  """The VAE with shapes only (no memory, no random init), as the loaders fill it.

  param_dtype: storage dtype (defaults to dtype); 'fp8' stores the VAE in bf16 (it has no fp8
  set). The latent statistics stay f32.
  """
  dtype = precision.parse(dtype, what='compute')
  param_dtype = dtype if param_dtype is None else precision.parse(param_dtype)
  param_dtype = precision.base_dtype(param_dtype)
  return nnx.eval_shape(lambda: VideoAutoencoder(config, dtype=dtype, param_dtype=param_dtype,
                                                 rngs=nnx.Rngs(0)))


def _diffusers_folder(path: Path) -> Path | None:
  for folder in (path / 'vae', path):
    cfg = folder / 'config.json'
    if cfg.exists() and json.loads(cfg.read_text()).get('_class_name') == 'AutoencoderKLLTXVideo':
      return folder
  return None


def open_checkpoint(path: Path) -> Checkpoint:
  """A diffusers `vae/` folder (or the repo folder above it) or an official single file (`vae.*`
  tensors, architecture in metadata `config` -> `vae`): config, tensors and name map."""
  if path.is_dir():
    folder = _diffusers_folder(path)
    if folder is None:
      raise FileNotFoundError(f"{path}: no AutoencoderKLLTXVideo config.json here or in vae/")
    cfg = json.loads((folder / 'config.json').read_text())
    _, enc, dec = diffusers_layout(cfg)
    table = diffusers_table(enc, dec)
    return Checkpoint(VAEConfig.from_diffusers(cfg), open_safetensors(folder),
                      lambda model: make_plan(model, table, DIFFUSERS_RENAMES),
                      what=f'VAE from {path}')
  store = open_safetensors(path, prefix='vae.')
  config = VAEConfig.from_official(official_config(store, 'vae'))
  return Checkpoint(config, store,
                    lambda model: make_plan(model, official_table(config), OFFICIAL_RENAMES),
                    ignore=OFFICIAL_IGNORE, what=f'VAE from {path}')


COMPONENT = Component('vae', VAEConfig, abstract_vae, open_checkpoint)


def load_vae(source: str | os.PathLike, *, dtype: precision.DTypeLike = jnp.float32,
             param_dtype: precision.DTypeLike | None = None,
             mesh: jax.sharding.Mesh | None = None, rules: sharding_lib.Rules | None = None,
             allow_nonfinite: bool = False) -> VideoAutoencoder:
  """Loads the VAE strictly: every parameter from the file, every file tensor used.

  source: a diffusers `vae/` folder (or the repo folder above it), an official single file, or a
    checkpoint converted by tools/convert.py (its folder or its vae/ folder).
  dtype: compute dtype; param_dtype: storage dtype (defaults to dtype; 'fp8' means bf16 here),
    each 'f32', 'bf16', 'fp16', 'fp8' or a dtype (`ltx_jax.weights.precision`).
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py; the VAE's
    names are replicated by the default rules); default one device.
  allow_nonfinite: load weights holding NaN or Inf (refused by default, naming the tensor).
  """
  return load_component(source, COMPONENT, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                        rules=rules, allow_nonfinite=allow_nonfinite)
