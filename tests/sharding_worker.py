"""Runs sharded generations in a fresh process with several (simulated CPU) devices.

Started by tests/test_sharding*.py with XLA_FLAGS=--xla_force_host_platform_device_count=N
(the pytest process itself has already initialised JAX with one device):

  python tests/sharding_worker.py meshes REPO OUT.json          # 8 devices: every mesh
  python tests/sharding_worker.py process REPO OUT.npz ADDR N I  # process I of N (4 devices each)

Writes its measurements as JSON (meshes) or the final latents as .npz (process 0 only).
"""

import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

MESHES = {  # name -> (data, fsdp, tensor, context, context attention)
    'data2_fsdp2_tensor2': (2, 2, 2, 1, 'allgather'),
    'fsdp2_context4': (1, 2, 1, 4, 'allgather'),
    'data2_context4': (2, 1, 1, 4, 'allgather'),
    'fsdp2_context4_ring': (1, 2, 1, 4, 'ring'),
}
CALL = dict(prompt=['a cat sits on the mat', 'waves crash on rocks at sunset'],
            negative_prompt='blurry', height=32, width=32, num_frames=9, num_inference_steps=3,
            guidance_scale=3.0, max_sequence_length=16, seed=0, progress=False)


def rel_l2(a, b):
  import numpy as np
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def generate(repo, mesh, context_attention='allgather', output_type='latent'):
  import jax
  from ltx_jax.pipeline import LTXPipeline
  pipe = LTXPipeline.from_pretrained(repo, allow_custom=True, mesh=mesh,
                                     context_attention=context_attention)
  with jax.default_matmul_precision('highest'):
    return pipe, pipe(output_type=output_type, **CALL)


def sharding_report(model, mesh):
  """Per parameter: whether its sharding is the rules' and its per-device bytes are its size
  over the mesh axes it is split on."""
  import math
  from flax import nnx
  from ltx_jax import sharding
  bad, split = [], 0
  for path, var in nnx.iter_graph(model):
    if not isinstance(var, nnx.Variable):
      continue
    x = var.get_value()
    want = sharding.spec_for(x.shape, sharding.variable_names(var), dict(mesh.shape))
    ways = math.prod(dict(mesh.shape)[a] for s in want if s
                     for a in ((s,) if isinstance(s, str) else s))
    per_device = {s.device: s.data.nbytes for s in x.addressable_shards}
    ok = (x.sharding.spec == want or tuple(x.sharding.spec) == tuple(want)) and all(
        b * ways == x.nbytes for b in per_device.values()) and len(per_device) == mesh.size
    if not ok:
      bad.append(f"{'.'.join(map(str, path))}: {x.sharding.spec} vs {want}")
    split += ways > 1
  return bad, split


def memory_check():
  """fsdp=8: per-device bytes of a transformer wide enough that biases do not matter."""
  import jax
  from flax import nnx
  from ltx_jax import sharding
  from ltx_jax.models.random import random_weights
  from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig
  cfg = TransformerConfig(num_layers=2, num_heads=4, head_dim=64, in_channels=16,
                          out_channels=16, cross_attention_dim=256, caption_channels=64)
  model = random_weights(lambda: LTXVideoTransformer(cfg, rngs=nnx.Rngs(0)), 0)
  total = sharding.placed_bytes(model)
  mesh = sharding.make_mesh(fsdp=-1)
  sharding.shard_module(model, mesh)
  per_device = sharding.device_bytes(model)
  return {'total_bytes': total, 'per_device_bytes': sorted(per_device.values()),
          'devices': len(per_device), 'fallbacks': sharding.fallbacks(model, dict(mesh.shape)),
          'max_fraction': max(per_device.values()) / total,
          'jax_devices': jax.device_count()}


def tiled_decode(vae):
  """A tiled decode (noise injection on) with its tiles spread over all 8 devices against the
  same decode one tile at a time."""
  import jax
  import numpy as np
  from ltx_jax import sharding
  from ltx_jax.models.vae.tiling import TilingConfig
  z = np.random.default_rng(0).standard_normal((1, 3, 5, 6, vae.config.latent_channels))
  z = jax.numpy.asarray(z, jax.numpy.float32)
  tiling = TilingConfig(spatial_tile=3, spatial_overlap=1, temporal_tile=2, temporal_overlap=1)
  kw = dict(timestep=jax.numpy.full((1,), 0.05), key=jax.random.key(1), tiling=tiling)
  with jax.default_matmul_precision('highest'):
    want = vae.decode(z, **kw)
    got = vae.decode(z, mesh=sharding.make_mesh(data=-1), **kw)
  return {'rel_l2': rel_l2(got, want), 'shape': list(got.shape)}


def meshes(repo, out):
  import jax
  import numpy as np
  from flax import nnx
  from ltx_jax import sharding
  single, ref = generate(repo, None, output_type='np')
  result = {'meshes': {}, 'tiled_decode': tiled_decode(single.vae)}
  for name, (d, f, t, c, attn) in MESHES.items():
    mesh = sharding.make_mesh(d, f, t, c)
    pipe, got = generate(repo, mesh, attn, output_type='np' if name == 'data2_context4'
                         else 'latent')
    entry = {'rel_l2': rel_l2(got.latents, ref.latents)}
    if got.frames is not None:
      diff = np.abs(got.frames.astype(int) - ref.frames.astype(int))
      entry['frames_max_diff'] = int(diff.max())
    if name == 'data2_fsdp2_tensor2':
      for part in ('transformer', 'text_encoder', 'vae'):
        bad, split = sharding_report(getattr(pipe, part), mesh)
        entry[part] = {'bad': bad, 'split_params': split,
                       'per_device_bytes': sorted(set(
                           sharding.device_bytes(getattr(pipe, part)).values())),
                       'model_bytes': sum(x.nbytes for x in jax.tree.leaves(
                           nnx.state(getattr(pipe, part))))}
      q = pipe.transformer.blocks.attn1.to_q.kernel.get_value()
      entry['to_q_spec'] = [s if s is None or isinstance(s, str) else list(s)
                            for s in q.sharding.spec]
    result['meshes'][name] = entry
  result['memory'] = memory_check()
  np.save(out.replace('.json', '_ref.npy'), ref.latents)
  with open(out, 'w') as fh:
    json.dump(result, fh, indent=1)


def process(repo, out, address, n, i):
  from ltx_jax import distributed
  distributed.initialize(address, int(n), int(i))
  import jax
  import numpy as np
  from ltx_jax import sharding
  mesh = sharding.make_mesh(data=2, fsdp=2, context=-1)  # spans both processes
  _, got = generate(repo, mesh, output_type='np')
  if distributed.is_main_process():
    np.savez(out, latents=got.latents, frames=got.frames, devices=jax.device_count(),
             processes=jax.process_count())


if __name__ == '__main__':
  {'meshes': meshes, 'process': process}[sys.argv[1]](*sys.argv[2:])
