"""Building a T5Encoder from transformers safetensors folders, llama.cpp GGUF files or converted
checkpoints, through the loading front door (`ltx_jax.weights.component`).

The model is built abstractly (`nnx.eval_shape`) and filled strictly, one tensor at a time,
through a declarative table from our module paths to each format's names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import CheckpointFormatError
from ltx_jax.models.t5.config import T5Config
from ltx_jax.models.t5.model import T5Encoder
from ltx_jax.weights import precision
from ltx_jax.weights.component import Checkpoint, Component, load_component
from ltx_jax.weights.gguf_io import GGUFStore
from ltx_jax.weights.loader import plan_from_table
from ltx_jax.weights.safetensors_io import open_safetensors

_LAYER = 'encoder.block.{i}.layer'
HF_TABLE = (
    ('rel_bias', 'encoder.block.0.layer.0.SelfAttention.relative_attention_bias'),
    ('layers.attn_norm', f'{_LAYER}.0.layer_norm'),
    ('layers.attn', f'{_LAYER}.0.SelfAttention'),
    ('layers.ffn_norm', f'{_LAYER}.1.layer_norm'),
    ('layers.ffn', f'{_LAYER}.1.DenseReluDense'),
    ('final_norm', 'encoder.final_layer_norm'),
)
# Source keys present in full T5 checkpoints that an encoder deliberately leaves unused.
HF_IGNORE = (r'decoder\..*', r'lm_head\.weight')

_BLK = 'enc.blk.{i}'
GGUF_TABLE = (
    ('embed', 'token_embd'),
    ('rel_bias', 'enc.blk.0.attn_rel_b'),
    ('layers.attn_norm', f'{_BLK}.attn_norm'),
    ('layers.attn.q', f'{_BLK}.attn_q'),
    ('layers.attn.k', f'{_BLK}.attn_k'),
    ('layers.attn.v', f'{_BLK}.attn_v'),
    ('layers.attn.o', f'{_BLK}.attn_o'),
    ('layers.ffn_norm', f'{_BLK}.ffn_norm'),
    ('layers.ffn.wi_0', f'{_BLK}.ffn_gate'),
    ('layers.ffn.wi_1', f'{_BLK}.ffn_up'),
    ('layers.ffn.wo', f'{_BLK}.ffn_down'),
    ('final_norm', 'enc.output_norm'),
)
# llama.cpp's T5 (encoder-decoder) files also hold the decoder and LM head.
GGUF_IGNORE = (r'dec\..*', r'output\.weight')


def abstract_text_encoder(config: T5Config, *, dtype: precision.DTypeLike = jnp.float32,
                          param_dtype: precision.DTypeLike | None = None,
                          attention: str = 'auto') -> T5Encoder:
  """The encoder with shapes only (no memory, no random init), as the loaders fill it.

  param_dtype: storage dtype (defaults to dtype); 'fp8' stores T5 in bf16 (it has no fp8 set).
  """
  dtype = precision.parse(dtype, what='compute')
  param_dtype = dtype if param_dtype is None else precision.parse(param_dtype)
  return nnx.eval_shape(lambda: T5Encoder(config, dtype=dtype,
                                          param_dtype=precision.base_dtype(param_dtype),
                                          attention=attention, rngs=nnx.Rngs(0)))


def _hf_folder(path: Path) -> Path | None:
  for candidate in (path, path / 'text_encoder'):
    if (candidate / 'config.json').is_file() and any(candidate.glob('*.safetensors*')):
      return candidate
  return None


def open_checkpoint(path: Path) -> Checkpoint:
  """A llama.cpp T5 GGUF file, or a transformers folder (or the diffusers repo folder above its
  text_encoder/): config, tensors and name map."""
  what = f'T5 encoder from {path}'
  if path.is_file() and path.suffix == '.gguf':
    store = GGUFStore(path)
    if 'token_embd.weight' not in store:
      raise CheckpointFormatError(f"{path}: no token_embd.weight, not a llama.cpp T5 file")
    config = T5Config.from_gguf(store.get, store.shape('token_embd.weight')[0])
    return Checkpoint(config, store, lambda model: plan_from_table(model, GGUF_TABLE),
                      ignore=GGUF_IGNORE, what=what)
  folder = _hf_folder(path)
  if folder is None:
    raise FileNotFoundError(
        f"{path}: not a T5 text encoder; expected a .gguf file, a folder with config.json and "
        "model*.safetensors, or a diffusers repo folder holding text_encoder/")
  config = T5Config.from_hf(json.loads((folder / 'config.json').read_text()))
  store = open_safetensors(folder)
  # transformers ties `shared` and `encoder.embed_tokens`; files hold one or both.
  embed = 'shared' if 'shared.weight' in store else 'encoder.embed_tokens'
  table = (('embed', embed),) + HF_TABLE
  ignore = HF_IGNORE + ((r'encoder\.embed_tokens\.weight',) if embed == 'shared' else ())
  return Checkpoint(config, store, lambda model: plan_from_table(model, table), ignore=ignore,
                    what=what)


COMPONENT = Component('text_encoder', T5Config, abstract_text_encoder, open_checkpoint)


def load_text_encoder(source: str | os.PathLike, *, dtype: precision.DTypeLike = jnp.float32,
                      param_dtype: precision.DTypeLike | None = None,
                      mesh: jax.sharding.Mesh | None = None,
                      rules: sharding_lib.Rules | None = None,
                      attention: str = 'auto',
                      allow_nonfinite: bool = False) -> T5Encoder:
  """A T5 v1.1 encoder, loaded strictly: every parameter from the file, every file tensor used.

  source: a transformers folder (or the diffusers repo folder above its text_encoder/), a
    llama.cpp GGUF file, or a checkpoint converted by tools/convert.py (its folder or its
    text_encoder/ folder).
  dtype: compute dtype; param_dtype: storage dtype (defaults to dtype; 'fp8' means bf16 here),
    each 'f32', 'bf16', 'fp16', 'fp8' or a dtype (`ltx_jax.weights.precision`). Called as
    `te(input_ids [B, S], attention_mask [B, S]) -> [B, S, d_model]` in `dtype`.
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py); default
    one device.
  allow_nonfinite: load weights holding NaN or Inf (refused by default, naming the tensor).
  attention: 'auto', 'xla', 'cudnn' or a registered implementation name.
  """
  return load_component(source, COMPONENT, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                        rules=rules, attention=attention, allow_nonfinite=allow_nonfinite)
