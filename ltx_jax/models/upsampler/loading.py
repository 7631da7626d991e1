"""Loading a latent upsampler from an official file or a diffusers folder, strictly and lazily,
through the weights front door (`ltx_jax.weights.load_component`).

Both formats name the tensors alike (`initial_conv.weight`, `res_blocks.0.norm1.bias`,
`upsampler.0.weight`, ...; no prefix), so one table serves both; only the config differs
(official: flat JSON in the `config` metadata; diffusers: `config.json`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import CheckpointFormatError, SourceError
from ltx_jax.models.upsampler.config import UpsamplerConfig
from ltx_jax.models.upsampler.model import LatentUpsampler
from ltx_jax.weights import precision
from ltx_jax.weights.component import Checkpoint, Component, load_component
from ltx_jax.weights.loader import plan_from_table
from ltx_jax.weights.safetensors_io import official_config, open_safetensors

DIFFUSERS_CLASS = 'LTXLatentUpsamplerModel'
DIFFUSERS_FOLDER = 'latent_upsampler'
# Our module prefix -> the checkpoint's: the upsampling conv is the first of a torch Sequential.
TABLE = (('', ''), ('upsampler', 'upsampler.0'))


def abstract_upsampler(config: UpsamplerConfig, *, dtype: precision.DTypeLike = jnp.float32,
                       param_dtype: precision.DTypeLike | None = None) -> LatentUpsampler:
  """The model with shapes only (no memory, no random init), as the loader fills it.

  param_dtype: storage dtype (defaults to dtype); 'fp8' stores the upsampler in bf16 (no
  released fp8 upsampler exists).
  """
  dtype = precision.parse(dtype, what='compute')
  param_dtype = dtype if param_dtype is None else precision.parse(param_dtype)
  param_dtype = precision.base_dtype(param_dtype)
  return nnx.eval_shape(lambda: LatentUpsampler(config, dtype=dtype, param_dtype=param_dtype,
                                                rngs=nnx.Rngs(0)))


def diffusers_folder(path: Path) -> Path | None:
  """`path` or `path/latent_upsampler` when it holds an LTXLatentUpsamplerModel config.json."""
  for folder in (path / DIFFUSERS_FOLDER, path):
    cfg = folder / 'config.json'
    if cfg.is_file() and json.loads(cfg.read_text()).get('_class_name') == DIFFUSERS_CLASS:
      return folder
  return None


def read_config(path: Path) -> tuple[UpsamplerConfig, Path]:
  """(config, tensor file or folder) of an official upsampler file or a diffusers folder."""
  if path.is_dir():
    folder = diffusers_folder(path)
    if folder is None:
      raise SourceError(f"{path}: no {DIFFUSERS_CLASS} config.json here or in "
                        f"{DIFFUSERS_FOLDER}/; pass a diffusers latent_upsampler folder or an "
                        "official ltxv-*-upscaler-*.safetensors file")
    cfg_file = folder / 'config.json'
    return UpsamplerConfig.from_diffusers(json.loads(cfg_file.read_text()),
                                          where=str(cfg_file)), folder
  if not path.is_file():
    raise SourceError(f"{path}: no such file or folder")
  cfg = official_config(open_safetensors(path))
  fields = ('in_channels', 'mid_channels', 'num_blocks_per_stage', 'dims', 'spatial_upsample',
            'temporal_upsample')
  if not isinstance(cfg, dict) or not any(k in cfg for k in fields):
    raise CheckpointFormatError(f"{path}: the 'config' metadata names none of {', '.join(fields)}"
                                "; not a latent upsampler file")
  return UpsamplerConfig.from_official(cfg, where=str(path)), path


def open_checkpoint(path: Path) -> Checkpoint:
  """An official upsampler file or a diffusers folder: config, tensors and name map."""
  config, tensors = read_config(path)
  return Checkpoint(config, open_safetensors(tensors), lambda model: plan_from_table(model, TABLE),
                    what=f'latent upsampler from {path}')


COMPONENT = Component('latent_upsampler', UpsamplerConfig, abstract_upsampler, open_checkpoint)


def load_latent_upsampler(source: str | os.PathLike, *,
                          dtype: precision.DTypeLike = jnp.float32,
                          param_dtype: precision.DTypeLike | None = None,
                          mesh: jax.sharding.Mesh | None = None,
                          rules: sharding_lib.Rules | None = None) -> LatentUpsampler:
  """Loads a latent upsampler strictly: every parameter from the file, every file tensor used.

  source: an official `ltxv-spatial-upscaler-*.safetensors` / `ltxv-temporal-upscaler-*.safetensors`
    file, a diffusers `latent_upsampler/` folder, or the repo folder above it.
  dtype: compute dtype; param_dtype: storage dtype (defaults to dtype; 'fp8' means bf16 here),
    each 'f32', 'bf16', 'fp16', 'fp8' or a dtype (`ltx_jax.weights.precision`).
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py; replicated
    by the default rules); default one device.
  """
  return load_component(source, COMPONENT, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                        rules=rules)
