"""Step caches (ltx_jax/sampling/cache.py) in the scanned loop, step by step: First Block Cache
against diffusers' `FirstBlockCacheConfig` on its LTXPipeline; TeaCache against its published
rule run eagerly on diffusers' LTX modules and pipeline."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from builders import LATENT, tiny_repo
from conftest import rel_l2
from ltx_jax import FirstBlockCache, TeaCache
from ltx_jax.errors import UsageError
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import cache as cache_lib
from ltx_jax.sampling import loop as loop_lib
from test_pipeline import FRAMES, GRID, H, W, diffusers_kwargs, ours_kwargs, text_inputs

STEPS = 8
BATCH = 1
MARGIN = 0.02  # every recorded distance is this far (relatively) from the threshold


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
  root = tmp_path_factory.mktemp('ltx-tiny-cache')
  return root, tiny_repo(root)


@pytest.fixture(scope='module')
def pipe(repo):
  return LTXPipeline.from_pretrained(repo[0], allow_custom=True)


@pytest.fixture(scope='module')
def noise():
  n = torch.randn((BATCH, LATENT, *GRID), generator=torch.Generator().manual_seed(0))
  return n.permute(0, 2, 3, 4, 1)  # [B, F, H, W, C]


def _reference_run(repo, noise, threshold):
  """diffusers' LTXPipeline with First Block Cache -> (latents [B, F, H, W, C], per step: the
  relative distance it measured (None on the first) and whether it ran every block)."""
  from diffusers import LTXPipeline as Reference
  from diffusers.hooks import FirstBlockCacheConfig
  from diffusers.hooks.first_block_cache import FBCHeadBlockHook
  _, (transformer, vae, _, scheduler) = repo
  ref = Reference(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                  transformer=transformer)
  log = []
  decide = FBCHeadBlockHook._should_compute_remaining_blocks

  def spy(self, residual):
    prev = self.state_manager.get_state().head_block_residual
    distance = None if prev is None else ((residual - prev).abs().mean()
                                          / prev.abs().mean()).item()
    run = decide(self, residual)
    log.append((distance, run))
    return run

  transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
  FBCHeadBlockHook._should_compute_remaining_blocks = spy
  try:
    with torch.no_grad():
      latents = ref(latents=noise.reshape(BATCH, -1, LATENT), output_type='latent',
                    **dict(diffusers_kwargs(*text_inputs(BATCH)),
                           num_inference_steps=STEPS)).frames
  finally:
    FBCHeadBlockHook._should_compute_remaining_blocks = decide
    transformer.disable_cache()
  return latents.numpy().reshape(BATCH, *GRID, LATENT), log


def _kwargs(**kw):
  """`prepare`'s arguments of the run `_reference_run` makes."""
  out = dict(ours_kwargs(*text_inputs(BATCH)), num_inference_steps=STEPS, **kw)
  for decode_only in ('decode_timestep', 'decode_noise_scale'):
    del out[decode_only]
  return out


def _ours(pipe, noise, cache):
  """-> (latents [B, F, H, W, C], bool [S]: whether each step ran every block)."""
  return pipe._denoise(pipe.prepare(latents=noise.numpy(), **_kwargs(cache=cache)))


@pytest.fixture(scope='module')
def thresholds(repo, noise):
  """Thresholds that skip no step, some and all but the first: the uncached run's distances
  sorted, with the middle threshold in the widest gap between them."""
  _, log = _reference_run(repo, noise, 0.0)
  distances = np.sort([d for d, _ in log[1:]])
  gaps = distances[1:] / distances[:-1]
  i = int(np.argmax(gaps[:-1]))  # leave at least one step above it
  return [0.0, float(np.sqrt(distances[i] * distances[i + 1])), 100 * float(distances[-1])]


def test_first_block_cache_matches_diffusers(repo, pipe, noise, thresholds, highest_precision):
  skipped = []
  for threshold in thresholds:
    want, log = _reference_run(repo, noise, threshold)
    for distance, _ in log[1:]:  # decisions well away from float noise
      assert abs(distance / threshold - 1) > MARGIN if threshold else distance > 0, (
          threshold, log)
    got, ran = _ours(pipe, noise, FirstBlockCache(threshold))
    np.testing.assert_array_equal(ran, [run for _, run in log])
    err = rel_l2(np.asarray(got), want)
    print(f"threshold {threshold:.4g}: skipped {int(np.sum(~ran))}/{STEPS}, rel L2 {err:.2e}, "
          f"max |diff| {np.max(np.abs(np.asarray(got) - want)):.2e}")
    assert err < 1e-4, (threshold, err)
    skipped.append(int(np.sum(~ran)))
  assert skipped[0] == 0 and 0 < skipped[1] < STEPS - 1 and skipped[2] == STEPS - 1, skipped


def test_threshold_zero_is_the_uncached_loop_bitwise_and_one_compile(pipe, noise):
  plain, ran = _ours(pipe, noise, None)
  assert ran.all()
  before = loop_lib.denoise_jit._cache_size()
  runs = [_ours(pipe, noise, FirstBlockCache(t)) for t in (0.0, 0.3, 1e6)]
  assert loop_lib.denoise_jit._cache_size() == before + 1  # the threshold is traced
  np.testing.assert_array_equal(np.asarray(runs[0][0]), np.asarray(plain))
  assert runs[0][1].all() and (~runs[2][1]).sum() == STEPS - 1


def test_first_block_cache_under_stg(pipe, noise):
  """With three row groups and layer-perturbed rows the cached loop still runs."""
  kw = dict(stg_scale=1.0, skip_block_list=[1])
  plan = pipe.prepare(latents=noise.numpy(), **_kwargs(**kw))
  cached = pipe.prepare(latents=noise.numpy(), **_kwargs(**kw, cache=FirstBlockCache(0.0)))
  np.testing.assert_array_equal(np.asarray(pipe.denoise(cached)),
                                np.asarray(pipe.denoise(plan)))


def _teacache_forward(model, threshold: float, log: list):
  """TeaCache4LTX-Video's forward over diffusers' LTX transformer modules, written from its
  published rule: the first block's modulated input is compared with the previous call's; the
  relative L1 distance, rescaled by the LTX polynomial, accumulates; every block and the final
  norm are skipped (their residual of the last full call added) while the sum stays under the
  threshold; the first and last of STEPS calls always run. log gets (the sum, ran) per call."""
  state = dict(step=0, sum=0.0, previous=None, residual=None)
  poly = np.poly1d(cache_lib.TEACACHE_LTX_COEFFICIENTS)

  def forward(hidden_states, encoder_hidden_states, timestep, encoder_attention_mask,
              num_frames=None, height=None, width=None, rope_interpolation_scale=None,
              video_coords=None, attention_kwargs=None, return_dict=True):
    b = hidden_states.shape[0]
    rope = model.rope(hidden_states, num_frames, height, width, rope_interpolation_scale,
                      video_coords)
    bias = ((1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)
    x = model.proj_in(hidden_states)
    temb, embedded = model.time_embed(timestep.flatten(), batch_size=b, hidden_dtype=x.dtype)
    temb, embedded = temb.view(b, -1, temb.shape[-1]), embedded.view(b, -1, x.shape[-1])
    context = model.caption_projection(encoder_hidden_states).view(b, -1, x.shape[-1])
    first = model.transformer_blocks[0]
    ada = first.scale_shift_table[None, None] + temb.reshape(b, temb.shape[1], 6, -1)
    modulated = first.norm1(x) * (1 + ada[:, :, 1]) + ada[:, :, 0]
    if state['step'] in (0, STEPS - 1):
      ran, state['sum'] = True, 0.0
    else:
      prev = state['previous']
      state['sum'] += poly(((modulated - prev).abs().mean() / prev.abs().mean()).item())
      ran = state['sum'] >= threshold
    log.append((state['sum'], ran))
    if ran:
      state['sum'] = 0.0
      h = x
      for block in model.transformer_blocks:
        h = block(hidden_states=h, encoder_hidden_states=context, temb=temb,
                  image_rotary_emb=rope, encoder_attention_mask=bias)
      table = model.scale_shift_table[None, None] + embedded[:, :, None]
      y = model.norm_out(h) * (1 + table[:, :, 1]) + table[:, :, 0]
      state['residual'] = y - x
    else:
      y = x + state['residual']
    state['previous'], state['step'] = modulated, state['step'] + 1
    return (model.proj_out(y),)

  return forward


def _teacache_reference(repo, noise, threshold):
  from diffusers import LTXPipeline as Reference
  _, (transformer, vae, _, scheduler) = repo
  ref = Reference(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None,
                  transformer=transformer)
  log = []
  transformer.forward = _teacache_forward(transformer, threshold, log)
  try:
    with torch.no_grad():
      latents = ref(latents=noise.reshape(BATCH, -1, LATENT), output_type='latent',
                    **dict(diffusers_kwargs(*text_inputs(BATCH)),
                           num_inference_steps=STEPS)).frames
  finally:
    del transformer.forward
  return latents.numpy().reshape(BATCH, *GRID, LATENT), log


def test_teacache_matches_its_reference(repo, pipe, noise, highest_precision):
  """TeaCache against its rule run eagerly on diffusers' modules and pipeline, step by step,
  for thresholds that skip none, some and all but the first and last steps."""
  _, log = _teacache_reference(repo, noise, 0.0)
  rescaled = np.sort([v for v, _ in log[1:-1]])  # each step's own rescaled distance
  middle = float(2.5 * np.median(rescaled))
  skipped = []
  for threshold in (0.0, middle, 1e3 * float(rescaled[-1]) * STEPS):
    want, log = _teacache_reference(repo, noise, threshold)
    if threshold:  # decisions well away from float noise
      assert all(abs(v / threshold - 1) > MARGIN for v, _ in log[1:-1]), (threshold, log)
    got, ran = _ours(pipe, noise, TeaCache(threshold))
    np.testing.assert_array_equal(ran, [r for _, r in log])
    err = rel_l2(np.asarray(got), want)
    print(f"TeaCache {threshold:.4g}: skipped {int(np.sum(~ran))}/{STEPS}, rel L2 {err:.2e}")
    assert err < 1e-4, (threshold, err)
    skipped.append(int(np.sum(~ran)))
  assert skipped[0] == 0 and 0 < skipped[1] < STEPS - 2 and skipped[2] == STEPS - 2, skipped


@pytest.mark.parametrize('cache, message', [
    ('fbc', r"cache='fbc'; pass None"),
    (FirstBlockCache(-0.1), r'threshold must be a finite number >= 0'),
    (TeaCache(float('nan')), r'threshold must be a finite number >= 0'),
])
def test_bad_cache_is_refused(pipe, cache, message):
  with pytest.raises(UsageError, match=message):
    pipe.prepare(**_kwargs(cache=cache))


def test_plan_cache_must_match_spec(pipe, noise):
  plan = pipe.prepare(latents=noise.numpy(), **_kwargs(cache=FirstBlockCache(0.1)))
  with pytest.raises(UsageError, match='plan.cache must be set exactly when'):
    pipe.denoise(dataclasses.replace(plan, cache=None))
  assert isinstance(plan.cache.threshold, jax.Array) and plan.cache.threshold.dtype == jnp.float32


def test_cli_cache_keys_and_sidecar(tmp_path):
  import json
  from test_cli import generate
  _, err, rc = generate(f'--config.output_dir={tmp_path}', '--config.cache.kind=first_block',
                        '--config.cache.threshold=1e6', '--config.progress=False')
  assert rc == 0, err
  (sidecar,) = tmp_path.glob('*.json')
  meta = json.loads(sidecar.read_text())
  # 4 steps: the first runs every block, the others reuse its residual.
  assert meta['cache'] == {'kind': 'first_block', 'threshold': 1e6, 'skipped_steps': 3}


@pytest.mark.parametrize('kind, threshold, message', [
    ('fbc', 0.05, "config.cache.kind='fbc'; choose '' (none) or one of first_block, teacache"),
    ('teacache', -1.0, 'config.cache: TeaCache(threshold=-1.0): the threshold must be'),
])
def test_cli_cache_refusals(kind, threshold, message):
  from ltx_jax.cli import config as config_lib
  c = config_lib.base_config(preset='')
  c.cache.kind, c.cache.threshold = kind, threshold
  with pytest.raises(UsageError, match=re.escape(message)):
    config_lib.check(c)


_MESH_SCRIPT = """
import sys
import numpy as np
from ltx_jax import FirstBlockCache, sharding, smoke
mesh = None if sys.argv[1] == 'none' else sharding.make_mesh(data=2, context=2)
pipe = smoke.build_pipeline(mesh=mesh)
plan = pipe.prepare('a cat', height=64, width=96, num_frames=9, num_inference_steps=6,
                    num_videos_per_prompt=2, progress=False, cache=FirstBlockCache(0.3))
latents, ran = pipe._denoise(plan)
np.savez(sys.argv[2], latents=np.asarray(latents), ran=ran)
"""


def test_first_block_cache_under_a_mesh(tmp_path):
  """data=2 x context=2 over 4 simulated CPU devices: the same decisions and latents as one
  device (both runs in subprocesses at once)."""
  import os
  import subprocess
  import sys
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  procs = {mode: subprocess.Popen([sys.executable, '-c', _MESH_SCRIPT, mode,
                                   str(tmp_path / f'{mode}.npz')], env=env,
                                  stderr=subprocess.PIPE, text=True)
           for mode in ('none', 'mesh')}
  for proc in procs.values():
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
  single, mesh = (np.load(tmp_path / f'{mode}.npz') for mode in ('none', 'mesh'))
  assert 0 < single['ran'].sum() < single['ran'].size, single['ran']  # some steps skipped
  np.testing.assert_array_equal(mesh['ran'], single['ran'])
  np.testing.assert_allclose(mesh['latents'], single['latents'], atol=1e-5)
