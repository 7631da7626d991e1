"""Conditioning items and IC-LoRA guides on sharded meshes (4 simulated CPU devices in a fresh
process) equal one device. The appended tokens change the token count the context axis splits:
64x96 gives 48 tokens per row (split over context=2); 96x96 gives 54, which context=4 does not
divide, so the sharding rules keep that sequence whole (ltx_jax/sharding.py's fallback) and
the result is the single-device one exactly."""

import json
import os
import subprocess
import sys

SCRIPT = r'''
import json, sys
import jax, numpy as np
from ltx_jax import Condition, Guide, smoke
from ltx_jax.sharding import make_mesh
rng = np.random.default_rng(0)
out = {}
CASES = (('fsdp2_context2', (64, 96), dict(fsdp=2, context=2), 'allgather'),
         ('context4_ring_odd', (96, 96), dict(context=4), 'ring'))
for name, (h, w), mesh_kw, ca in CASES:
  img = rng.integers(0, 255, (h, w, 3), np.uint8)
  clip = rng.integers(0, 255, (9, h, w, 3), np.uint8)
  call = dict(prompt=['a red fox', 'a boat'], height=h, width=w, num_frames=17,
              num_inference_steps=2, guidance_scale=3.0, max_sequence_length=16, seed=0,
              output_type='latent', progress=False,
              conditions=[Condition(image=img),
                          Condition(image=img, frame_index=16, strength=0.8)],
              guides=[Guide(video=clip, frame_index=8)])
  with jax.default_matmul_precision('highest'):
    want = np.asarray(smoke.build_pipeline()(**call).latents)
    pipe = smoke.build_pipeline(mesh=make_mesh(**mesh_kw), context_attention=ca)
    got = np.asarray(pipe(**call).latents)
  out[name] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
json.dump(out, open(sys.argv[1], 'w'))
'''


def test_conditions_and_guides_on_meshes(tmp_path):
  out = tmp_path / 'errors.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  proc = subprocess.run([sys.executable, '-c', SCRIPT, str(out)], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  errors = json.loads(out.read_text())
  print(errors)
  assert set(errors) == {'fsdp2_context2', 'context4_ring_odd'}
  assert all(e < 1e-5 for e in errors.values()), errors
