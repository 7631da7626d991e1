"""The denoising loop with host-side progress (ltx_jax/sampling/progress.py): one compiled step
per call gives the scanned loop's result, with every guidance, conditioning and cache switch;
the step program is compiled once per shape and holds no host callback (the persistent
compilation cache keeps it); off a terminal the steps are logged with rate and ETA."""

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx_jax import FirstBlockCache, smoke
from ltx_jax.sampling import blend_loop, progress
from ltx_jax.sampling import loop as loop_lib

CALL = dict(prompt=['a cat sits on the mat', 'waves on rocks'], negative_prompt='blurry',
            height=64, width=64, num_frames=9, frame_rate=8.0,
            timesteps=[1000.0, 700.0, 400.0, 100.0], guidance_scale=3.0,
            max_sequence_length=16, seed=3)


@pytest.fixture(scope='module')
def pipe():
  return smoke.build_pipeline()


def _both(pipe, plan):
  """(scanned, stepwise) packed latents and per-step `ran` of one plan."""
  graph, state = pipe._transformer_split
  args = (plan.latents, plan.sigmas, plan.context, plan.context_mask, plan.guidance,
          plan.coords, plan.cond_mask, plan.key, plan.cache)
  scan = loop_lib.denoise_jit(dataclasses.replace(plan.spec, progress=False), graph, state,
                              *args)
  steps = loop_lib.denoise_stepwise(pipe.transformer, dataclasses.replace(plan.spec,
                                                                         progress=True),
                                    graph, state, *args, report=progress.Reporter(bar=False))
  return scan, steps


@pytest.mark.slow
def test_stepwise_is_the_scanned_loop(pipe, highest_precision):
  """CFG, STG, stochastic sampling, the step cache and conditioned tokens (soft ones and
  appended hard ones, re-noised each step) at once: the same latents and cache decisions."""
  plan = pipe.prepare(**CALL, stg_scale=1.0, skip_block_list=[1], stochastic_sampling=True,
                      cache=FirstBlockCache(0.3), progress=False)
  per_frame = 4
  plan = dataclasses.replace(
      plan, spec=dataclasses.replace(plan.spec, conditioned=True, cond_noise_scale=0.15),
      latents=jnp.concatenate([plan.latents, plan.latents[:, :per_frame]], axis=1),
      coords=jnp.concatenate([plan.coords, plan.coords[:, :, :per_frame]], axis=2),
      cond_mask=jnp.concatenate([jnp.full((2, 8), 0.3), jnp.ones((2, per_frame))], axis=1))
  (scan, scan_ran), (steps, steps_ran) = _both(pipe, plan)
  np.testing.assert_allclose(np.asarray(steps), np.asarray(scan), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(steps_ran), np.asarray(scan_ran))


@pytest.mark.slow
def test_blended_stepwise_is_the_scanned_loop(pipe, highest_precision):
  plan = pipe.prepare(**dict(CALL, prompt='a cat'), progress=False)
  graph, state = pipe._transformer_split
  rng = np.random.default_rng(0)
  b, n, c = plan.latents.shape
  clean = jnp.asarray(rng.standard_normal((b, n, c)), jnp.float32)
  strength = jnp.asarray(rng.uniform(0, 1, (b, n)), jnp.float32)
  args = (plan.latents, clean, strength, plan.sigmas, plan.context, plan.context_mask,
          plan.guidance, plan.coords, jnp.float32(0.5), plan.key)
  spec = dataclasses.replace(plan.spec, progress=False)
  scan = blend_loop.denoise_blended_jit(spec, graph, state, *args)
  steps = blend_loop.denoise_blended_stepwise(pipe.transformer, spec, graph, state, *args,
                                              report=progress.Reporter(bar=False))
  np.testing.assert_allclose(np.asarray(steps), np.asarray(scan), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_one_compile_per_shape_and_log_lines(pipe, caplog):
  """A second video of the same shapes compiles nothing; log lines (off a terminal) give
  step, rate and ETA; the step program holds no host callback."""
  caplog.set_level(logging.INFO, logger='ltx_jax.progress')
  pipe(**CALL, output_type='latent', progress=True)
  compiles = sum('compiling' in r.getMessage() for r in caplog.records)
  caplog.clear()
  pipe(**dict(CALL, seed=4), output_type='latent', progress=True)
  lines = [r.getMessage() for r in caplog.records]
  assert compiles == 1 and not any('compiling' in m for m in lines), lines
  assert lines[0].startswith('denoising: step 1/4, ') and 's/step, ETA' in lines[0], lines
  assert lines[-1].startswith('denoising: step 4/4, '), lines
  programs = [p for p in progress._COMPILED.values()]
  assert programs and not any('callback' in p.as_text() for p in programs)
