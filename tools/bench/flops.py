"""FLOP counts: closed forms for the transformer and T5, a jaxpr walk for anything else.

Only matrix products count (2 FLOPs per multiply-add); norms, activations and softmax are a few
percent at these sizes and are left out, as MFU conventions do.
"""

from __future__ import annotations

import math

import jax

from ltx_jax.models.t5.config import T5Config
from ltx_jax.models.transformer.config import TransformerConfig


def transformer_flops(cfg: TransformerConfig, batch: int, tokens: int, text_tokens: int) -> int:
  """One forward of the DiT: batch x tokens latent tokens, text_tokens caption tokens."""
  d, b, n, s = cfg.dim, batch, tokens, text_tokens
  dense = lambda rows, i, o: 2 * rows * i * o
  total = dense(b * n, cfg.in_channels, d)  # proj_in
  total += dense(b, 256, d) + dense(b, d, d) + dense(b, d, 6 * d)  # timestep embedding
  total += dense(b * s, cfg.caption_channels, d) + dense(b * s, d, d)  # caption projection
  layer = (dense(b * n, d, 3 * d) + 2 * 2 * b * n * n * d + dense(b * n, d, d)  # self-attention
           + dense(b * n, d, d) + dense(b * s, cfg.cross_attention_dim, 2 * d)  # cross q, k, v
           + 2 * 2 * b * n * s * d + dense(b * n, d, d)  # cross-attention, out
           + dense(b * n, d, 4 * d) + dense(b * n, 4 * d, d))  # FFN
  total += cfg.num_layers * layer
  return total + dense(b * n, d, cfg.out_channels)  # proj_out


def t5_flops(cfg: T5Config, batch: int, tokens: int) -> int:
  """One forward of the T5 encoder stack."""
  inner, rows = cfg.num_heads * cfg.head_dim, batch * tokens
  layer = (2 * rows * cfg.d_model * inner * 4 + 2 * 2 * batch * tokens * tokens * inner
           + 2 * rows * cfg.d_model * cfg.d_ff * 3)
  return cfg.num_layers * layer


def _subjaxprs(params):
  for v in params.values():
    for item in (v if isinstance(v, (list, tuple)) else (v,)):
      if hasattr(item, 'eqns'):
        yield item
      elif hasattr(item, 'jaxpr') and hasattr(item.jaxpr, 'eqns'):
        yield item.jaxpr


def _walk(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
    elif name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape
      out_feature_dim = eqn.params['dimension_numbers'].rhs_spec[0]
      per_output = math.prod(rhs) // rhs[out_feature_dim]  # in-features x window
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * per_output
    subs = [_walk(j) for j in _subjaxprs(eqn.params)]
    if name == 'cond':
      total += max(subs, default=0)
    else:
      total += sum(subs) * (eqn.params['length'] if name == 'scan' else 1)
  return total


def traced_flops(fn, *args) -> int:
  """Matmul and convolution FLOPs of `fn(*args)`, counted from shapes in its jaxpr (no run)."""
  return _walk(jax.make_jaxpr(fn)(*args).jaxpr)
