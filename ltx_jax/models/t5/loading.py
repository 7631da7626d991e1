"""Building a T5Encoder from transformers safetensors folders or llama.cpp GGUF files.

The model is built abstractly (`nnx.eval_shape`) and filled strictly by `load_params`, one tensor
at a time, through a declarative table from our module paths to each format's names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.models.t5.config import T5Config
from ltx_jax.models.t5.model import T5Encoder
from ltx_jax.weights.gguf_io import GGUFStore
from ltx_jax.weights import orbax_io
from ltx_jax.weights.loader import load_params, plan_from_table
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


def _abstract(cfg: T5Config, dtype, param_dtype, attention: str) -> T5Encoder:
  return nnx.eval_shape(lambda: T5Encoder(cfg, dtype=dtype, param_dtype=param_dtype,
                                          attention=attention, rngs=nnx.Rngs(0)))


def _hf_folder(path: Path) -> Path | None:
  for candidate in (path, path / 'text_encoder'):
    if (candidate / 'config.json').is_file() and any(candidate.glob('*.safetensors*')):
      return candidate
  return None


def load_text_encoder(source: str | os.PathLike, dtype=jnp.bfloat16, *, param_dtype=None,
                      attention: str = 'auto', mesh: jax.sharding.Mesh | None = None,
                      rules: sharding_lib.Rules | None = None) -> T5Encoder:
  """A T5 v1.1 encoder from a transformers folder (or the diffusers repo above it) or a GGUF file.

  dtype: compute dtype; param_dtype: storage dtype (defaults to dtype). Called as
  `te(input_ids [B, S], attention_mask [B, S]) -> [B, S, d_model]` in `dtype`.
  mesh, rules: place each parameter by its logical axis names (ltx_jax/sharding.py); default
    one device.
  """
  if orbax_io.is_orbax(source):  # a checkpoint converted by tools/convert.py
    return orbax_io.restore_component(source, 'text_encoder', dtype=dtype,
                                      param_dtype=param_dtype, attention=attention, mesh=mesh,
                                      rules=rules)
  path = Path(source)
  param_dtype = dtype if param_dtype is None else param_dtype
  if path.is_file() and path.suffix == '.gguf':
    store = GGUFStore(path, dtype=param_dtype)
    if 'token_embd.weight' not in store:
      raise ValueError(f"{path}: no token_embd.weight, not a llama.cpp T5 file")
    cfg = T5Config.from_gguf_metadata(store.get, store.shape('token_embd.weight')[0])
    table, ignore = GGUF_TABLE, GGUF_IGNORE
  else:
    folder = _hf_folder(path)
    if folder is None:
      raise FileNotFoundError(
          f"{path}: not a T5 text encoder; expected a .gguf file, a folder with config.json and "
          "model*.safetensors, or a diffusers repo folder holding text_encoder/")
    cfg = T5Config.from_hf_config(json.loads((folder / 'config.json').read_text()))
    store = open_safetensors(folder)
    # transformers ties `shared` and `encoder.embed_tokens`; files hold one or both.
    embed = 'shared' if 'shared.weight' in store else 'encoder.embed_tokens'
    table = (('embed', embed),) + HF_TABLE
    ignore = HF_IGNORE + ((r'encoder\.embed_tokens\.weight',) if embed == 'shared' else ())
  model = _abstract(cfg, dtype, param_dtype, attention)
  plan = plan_from_table(model, table)
  where = sharding_lib.sharding_fn(mesh, rules) if mesh is not None else None
  return load_params(model, store, plan, param_dtype, what=f'T5 encoder from {path}',
                     ignore=ignore, sharding=where)
