"""Splash attention: JAX's Pallas flash-attention kernel for TPU, as an ltx_jax attention kernel.

Registered as `attention='splash'` (ltx_jax/nn/attention.py) and chosen by 'auto' on TPU. The
kernel walks [block_q, block_kv] tiles of the logits with an online softmax in f32, so the
[B, N, T, S] logits never exist in memory.

What it accepts, and how the inputs are made to fit the kernel:
- bias: None, or a key-padding bias broadcastable to [B, 1, 1, S] as the models build it from
  the text mask (0 keeps a key, -10000 drops it). Keys with bias > KEEP_ABOVE are kept, the
  others dropped exactly (the kernel's segment ids: queries carry id 1, kept keys 1, dropped
  keys 0). A row whose keys are all dropped attends to all of them, as the additive -10000
  bias does (it shifts every logit alike). Other biases (T5's relative positions) are refused.
- sequence lengths: padded up to a multiple of the block sizes; padded keys get segment id 0
  (never attended), padded query rows are cut off.
- head dims: 64 and multiples of 128 as they are; others are zero-padded to 64 (below 64) or
  the next multiple of 128, which leaves q.k and the output unchanged.
- block sizes (multiples of 128): `block_q`, `block_kv` given to `make_splash`, else
  `default_block` of each length (512, 256 or 128, whichever wastes little padding).

Pallas TPU kernels only compile for TPU. `interpret=True`, or the environment variable
LTX_JAX_PALLAS_INTERPRET=1, runs the same kernel through Pallas' interpreter on any backend
(slow: for tests on CPU). Anywhere else but a TPU without it, the call is refused.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from ltx_jax.errors import UsageError

INTERPRET_ENV = 'LTX_JAX_PALLAS_INTERPRET'
KEEP_ABOVE = -1000.0  # key-padding bias: above keeps the key, at or below drops it
LANES = 128           # block sizes are multiples of the TPU's 128 lanes
BLOCKS = (512, 256, LANES)  # default_block's candidates, largest first


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def default_block(length: int) -> int:
  """The block size for a sequence of `length` tokens: the largest of 512, 256, 128 that pads
  it by at most 1/16 more than 128 would (bigger tiles keep the TPU's matrix units busier;
  padded tokens are wasted work)."""
  base = _round_up(length, LANES)
  return next(b for b in BLOCKS if _round_up(length, b) <= base + base // 16)


def _padded_head_dim(h: int) -> int:
  return 64 if h <= 64 else _round_up(h, LANES)


def is_key_bias(bias: jax.Array | None) -> bool:
  """Whether the kernel takes this bias: None, or shaped [B|1, 1, 1, S] (a key-padding bias)."""
  return bias is None or (bias.ndim == 4 and bias.shape[1:3] == (1, 1))


def interpret_default() -> bool:
  return os.environ.get(INTERPRET_ENV, '') not in ('', '0')


def _splash():
  """JAX's splash module, imported on first use (Pallas adds ~0.3 s to `import ltx_jax`)."""
  from jax.experimental.pallas.ops.tpu import splash_attention
  return splash_attention


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, q_len: int, kv_len: int, block_q: int, block_kv: int, interpret: bool):
  splash = _splash()
  mask = splash.MultiHeadMask([splash.FullMask((q_len, kv_len))] * heads)
  blocks = splash.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv)
  with jax.ensure_compile_time_eval():  # concrete mask tables, safe to cache across traces
    return splash.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                                  save_residuals=True, interpret=interpret)


def _check_block(name: str, value: int | None) -> None:
  if value is not None and (value <= 0 or value % LANES):
    raise UsageError(f"splash attention {name}={value}: must be a positive multiple of {LANES}")


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None,
                     scale: float, *, block_q: int | None = None, block_kv: int | None = None,
                     interpret: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """q [B, T, N, H], k/v [B, S, N, H], bias None or [B|1, 1, 1, S]
  -> (out [B, T, N, H] in q's dtype, logsumexp [B, N, T] f32 of the scaled, masked logits)."""
  _check_block('block_q', block_q)
  _check_block('block_kv', block_kv)
  interpret = interpret_default() if interpret is None else interpret
  if not interpret and jax.default_backend() != 'tpu':
    raise UsageError(f"attention='splash' runs on TPU only (backend {jax.default_backend()!r}); "
                     f"set {INTERPRET_ENV}=1 to run it in Pallas interpret mode (slow, for tests)")
  if not is_key_bias(bias):
    raise UsageError(f"attention='splash' takes no bias or a key-padding bias [B|1, 1, 1, S], "
                     f"got bias {tuple(bias.shape)}; use attention='xla'")
  b, t, n, h = q.shape
  s = k.shape[1]
  bq = block_q or default_block(t)
  bkv = block_kv or default_block(s)
  tp, sp, hp = _round_up(t, bq), _round_up(s, bkv), _padded_head_dim(h)

  keep = jnp.ones((b, s), bool)
  if bias is not None:
    keep = jnp.broadcast_to(bias[:, 0, 0, :] > KEEP_ABOVE, (b, s))
    keep = keep | ~keep.any(axis=-1, keepdims=True)  # all dropped: the bias shifts all alike
  kv_ids = jnp.pad(keep.astype(jnp.int32), ((0, 0), (0, sp - s)))  # [B, Sp], padding 0
  q_ids = jnp.ones((b, tp), jnp.int32)  # [B, Tp]

  def heads_first(x, length):  # [B, L, N, H] -> [B, N, Lp, Hp]
    x = jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, hp - h)))
    return jnp.transpose(x, (0, 2, 1, 3))

  qs = (q.astype(jnp.float32) * scale).astype(q.dtype)  # the kernel does not scale
  kernel = _kernel(n, tp, sp, bq, bkv, bool(interpret))
  segments = _splash().SegmentIds
  out, (lse,) = jax.vmap(lambda q, k, v, qi, ki: kernel(q, k, v, segments(qi, ki)))(
      heads_first(qs, tp), heads_first(k, sp), heads_first(v.astype(q.dtype), sp), q_ids, kv_ids)
  # out [B, N, Tp, Hp], lse [B, N, Tp]
  return jnp.transpose(out[:, :, :t, :h], (0, 2, 1, 3)), lse[:, :, :t]


def make_splash(block_q: int | None = None, block_kv: int | None = None,
                interpret: bool | None = None):
  """(attention fn, attention-with-logsumexp fn) with these settings, for `register_attention`:

    register_attention('splash', *make_splash(block_q=1024, block_kv=512), per_device=True,
                       key_bias_only=True)
  """
  _check_block('block_q', block_q)
  _check_block('block_kv', block_kv)
  with_lse = functools.partial(splash_attention, block_q=block_q, block_kv=block_kv,
                               interpret=interpret)
  return (lambda q, k, v, bias, scale: with_lse(q, k, v, bias, scale)[0]), with_lse
