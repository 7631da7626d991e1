"""Step caches (ltx_jax/sampling/cache.py) in the scanned loop: First Block Cache against
diffusers' `FirstBlockCacheConfig` on its LTXPipeline, step by step; TeaCache's traced decisions
against the reference's rule replayed on the host."""

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


def _teacache_decisions(modulated: list[np.ndarray], threshold: float) -> list[bool]:
  """TeaCache4LTX-Video's rule on the host, from each step's modulated first-block input."""
  poly = np.poly1d(cache_lib.TEACACHE_LTX_COEFFICIENTS)
  acc, runs = 0.0, []
  for i, m in enumerate(modulated):
    if i in (0, len(modulated) - 1):
      run, acc = True, 0.0
    else:
      prev = modulated[i - 1]
      acc += poly(np.abs(m - prev).mean() / np.abs(prev).mean())
      run = acc >= threshold
      if run:
        acc = 0.0
    runs.append(run)
  return runs


def test_teacache_decisions_and_cached_residual(pipe, noise):
  """The traced TeaCache against its rule replayed from the modulated inputs the loop saw; a
  skipped step adds the residual of the last full step (blocks and final norm)."""
  seen = []
  forward = cache_lib.forward

  def spy(kind, model, stream, state, params, step, num_steps):
    out = forward(kind, model, stream, state, params, step, num_steps)
    jax.debug.callback(lambda m, r: seen.append((np.asarray(m), bool(r))), out[1].reference,
                       out[2], ordered=True)
    return out

  cache_lib.forward = spy
  try:
    plain, _ = _ours(pipe, noise, None)
    for threshold in (0.0, 1.0, 1e6):
      seen.clear()
      got, ran = jax.tree.map(np.asarray, _ours(pipe, noise, TeaCache(threshold)))
      assert [r for _, r in seen] == list(ran)
      assert list(ran) == _teacache_decisions([m for m, _ in seen], threshold)
      if threshold == 0.0:
        np.testing.assert_allclose(got, plain, atol=1e-5)
      else:
        assert not ran.all() and ran[0] and ran[-1]
  finally:
    cache_lib.forward = forward


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
