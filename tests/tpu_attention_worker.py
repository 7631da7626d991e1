"""Splash attention (Pallas interpret mode) on 8 simulated CPU devices against XLA's reference
attention on one device: context parallel ('allgather', 'ring'), heads over 'tensor', rows over
the batch axes; self- and cross-attention (text padding mask); the whole tiny transformer.

Started by tests/test_tpu_attention.py with XLA_FLAGS=--xla_force_host_platform_device_count=8:

  python tests/tpu_attention_worker.py OUT.json

Writes {case: relative L2 error} as JSON.
"""

import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ['LTX_JAX_PALLAS_INTERPRET'] = '1'

MESHES = {  # name -> (data, fsdp, tensor, context, context attention)
    'fsdp2_tensor2_context2': (1, 2, 2, 2, 'allgather'),
    'tensor2_context4_ring': (1, 1, 2, 4, 'ring'),
    'data2_context4': (2, 1, 1, 4, 'allgather'),
}
GRID = (3, 4, 5)  # latent frames, height, width: 60 tokens, 15 per device on context 4


def rel_l2(a, b):
  import numpy as np
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def kernel_in_shard_map(jaxpr, inside=False) -> bool:
  """Whether a pallas_call sits inside a shard_map of this (closed) jaxpr, at any depth."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'pallas_call' and inside:
      return True
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else (p,)):
        if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None), 'eqns'):
          if kernel_in_shard_map(sub, inside or name == 'shard_map'):
            return True
  return False


def attention_cases(results):
  """attention(...) itself: self (sequence_sharded) and cross (padding mask)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from ltx_jax import sharding
  attention = sys.modules['ltx_jax.nn.attention'].attention
  ks = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(ks[0], (2, 200, 4, 64))  # [B, T, N, H]: 50 tokens per device on 4
  k, v = (jax.random.normal(kk, (2, 77, 4, 64)) for kk in ks[1:3])
  keep = np.arange(77)[None] < np.array([[30], [77]])
  bias = jnp.asarray((1.0 - keep) * -10000.0, jnp.float32)[:, None, None]  # [B, 1, 1, S]

  def run(name, part, self_attn):
    def f(q, k, v, bias):
      with sharding.activate(part):
        if self_attn:
          return attention(q, q * 0.5, q[..., ::-1], implementation=name, sequence_sharded=True)
        return attention(q, k, v, bias, implementation=name)
    if part is not None:  # the Pallas kernel runs per device, inside shard_map
      results['kernel_in_shard_map'] &= kernel_in_shard_map(jax.make_jaxpr(f)(q, k, v, bias))
    return jax.jit(f)(q, k, v, bias)

  with jax.default_matmul_precision('highest'):
    want = {s: run('xla', None, s) for s in (True, False)}
    for mesh_name, (d, f, t, c, mode) in MESHES.items():
      part = sharding.Partitioning.create(sharding.make_mesh(d, f, t, c), context_attention=mode)
      for s in (True, False):
        results[f"attention_{'self' if s else 'cross'}_{mesh_name}"] = rel_l2(
            run('splash', part, s), want[s])


def transformer_cases(results):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from ltx_jax import sharding, smoke
  from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig
  cfg = TransformerConfig(num_layers=2, num_heads=4, head_dim=16, in_channels=8, out_channels=8,
                          cross_attention_dim=64, caption_channels=24)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 60, 8)), jnp.float32)
  ctx = jnp.asarray(rng.standard_normal((2, 9, 24)), jnp.float32)
  mask = jnp.asarray(np.arange(9)[None] < np.array([[4], [9]]), jnp.float32)
  t = jnp.asarray([300.0, 700.0])

  def run(name, mesh, mode='allgather'):
    model = smoke.random_module(
        lambda: LTXVideoTransformer(cfg, attention=name, rngs=nnx.Rngs(0)), 0, jnp.float32)
    model = sharding.shard_module(model, mesh)
    graph, state = nnx.split(model)
    part = None if mesh is None else sharding.Partitioning.create(mesh, context_attention=mode)

    def f(state, x, ctx, t, mask):
      with sharding.activate(part):
        return nnx.merge(graph, state)(x, ctx, t, mask, num_frames=GRID[0], height=GRID[1],
                                       width=GRID[2])
    return jax.jit(f)(state, x, ctx, t, mask)

  with jax.default_matmul_precision('highest'):
    want = run('xla', None)
    results['transformer_single_device'] = rel_l2(run('splash', None), want)
    results['transformer_fsdp2_tensor2_context2'] = rel_l2(
        run('splash', sharding.make_mesh(1, 2, 2, 2)), want)
    results['transformer_tensor2_context4_ring'] = rel_l2(
        run('splash', sharding.make_mesh(1, 1, 2, 4), 'ring'), want)


def main(out):
  import jax
  assert jax.device_count() == 8, jax.devices()
  from ltx_jax import sharding
  results = {'kernel_in_shard_map': True, 'config_mesh': dict(sharding.mesh_from_config(
      {'data': 1, 'fsdp': 1, 'tensor': 1, 'context': 1}, num_tokens=27588).shape)}
  attention_cases(results)
  transformer_cases(results)
  with open(out, 'w') as fh:
    json.dump(results, fh, indent=1)


if __name__ == '__main__':
  main(sys.argv[1])
