"""The pipeline's stages (prepare -> GenerationPlan -> denoise -> decode) on the smoke model:
`__call__` is their composition, and plans changed by hand (fewer steps, new latents, a second
pass at another size, appended conditioning tokens) run as the stages promise."""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltx_jax import checks, smoke
from ltx_jax.errors import UsageError
from ltx_jax.pipeline import GenerationPlan
from ltx_jax.sampling import loop as loop_lib

CALL = dict(prompt=['a cat sits on the mat', 'waves on rocks'], negative_prompt='blurry',
            height=64, width=64, num_frames=9, frame_rate=8.0, timesteps=[1000.0, 700.0, 300.0],
            guidance_scale=3.0, max_sequence_length=16, seed=3, progress=False)
GRID = (2, 2, 2)


@pytest.fixture(scope='module')
def pipe():
  return smoke.build_pipeline()


@pytest.fixture(scope='module')
def plan(pipe):
  return pipe.prepare(**CALL)


def test_plan_shapes(pipe, plan):
  b, n, c = 2, 8, smoke.LATENT
  assert isinstance(plan, GenerationPlan) and plan.spec.grid == GRID == plan.grid
  assert plan.spec.cfg and not plan.spec.stg and plan.spec.groups == 2
  assert plan.latents.shape == (b, n, c) and plan.batch == b and plan.video_tokens == n
  assert plan.sigmas.shape == (4,) and plan.num_steps == 3
  np.testing.assert_allclose(plan.sigmas, [1.0, 0.7, 0.3, 0.0])
  assert all(g.shape[0] == 3 for g in plan.guidance)
  assert plan.context.shape == (2 * b, 16, smoke.TEXT_DIM)
  assert plan.context_mask.shape == (2 * b, 16) and plan.context_mask.dtype == jnp.float32
  assert plan.coords.shape == (1, 3, n) and plan.cond_mask is None
  # A pytree of its arrays (cond_mask None has no leaf), with the spec static.
  assert len(jax.tree.leaves(plan)) == 5 + len(plan.guidance) + 2
  assert jax.tree.map(lambda x: x, plan).spec is plan.spec
  # The last token: latent frame 1 (8 pixel frames at 8 fps: 1 s), y = x = 1 latent = 32 px.
  assert not pipe.transformer.config.causal_temporal_positioning
  np.testing.assert_allclose(plan.coords[0, :, -1], [1.0, 32.0, 32.0])


def test_call_is_prepare_denoise_decode(pipe, plan):
  seen = []

  class Timer:
    def __init__(self, stage):
      self.stage = stage

    def __enter__(self):
      seen.append(self.stage)

    def __exit__(self, *exc):
      return False

  default, pipe.timer = pipe.timer, Timer
  try:
    out = pipe(**CALL, decode_timestep=0.05, decode_noise_scale=0.025)
  finally:
    pipe.timer = default
  assert seen == ['prepare', 'text_encoding', 'text_encoding', 'denoise', 'decode'], seen
  latents = pipe.denoise(plan)
  assert latents.shape == (2, *GRID, smoke.LATENT)
  np.testing.assert_array_equal(out.latents, np.asarray(latents))
  frames = pipe.decode(latents, 0.05, 0.025, plan.decode_key)
  assert frames.shape == (2, 9, 64, 64, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(out.frames, frames)


def test_host_checks_come_before_the_text_encoder(pipe):
  seen = []
  default, pipe.timer = pipe.timer, lambda stage: seen.append(stage) or contextlib.nullcontext()
  try:
    with pytest.raises(UsageError, match=r'latents have shape \(1, 2, 2, 2, 16\); expected '
                                         r'\(2, 2, 2, 2, 16\)'):
      pipe.prepare(**dict(CALL, latents=np.zeros((1, *GRID, smoke.LATENT), np.float32)))
    with pytest.raises(UsageError, match='got 3 images for 2 prompts'):
      pipe.prepare(**dict(CALL, image=[np.zeros((64, 64, 3), np.uint8)] * 3))
    with pytest.raises(ValueError, match="cannot read image '/nonexistent.png'"):
      pipe.prepare(**dict(CALL, image='/nonexistent.png'))
  finally:
    pipe.timer = default
  assert seen == ['prepare'] * 3  # T5 never ran


def test_skip_steps_is_the_shorter_schedule(pipe, plan):
  start = plan.unpack(plan.latents)
  # Given latents are re-noised to a first timestep below 1000; the plan's are not.
  shorter = pipe.prepare(**dict(CALL, timesteps=[700.0, 300.0])).with_video_latents(start)
  got = pipe.denoise(plan.skip_steps(1))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(pipe.denoise(shorter)))
  with pytest.raises(UsageError, match=r'skip_steps\(3\).*3 steps'):
    plan.skip_steps(3)


def test_given_latents_and_a_second_pass_at_another_size(pipe, plan):
  first = pipe.denoise(plan)  # [2, 2, 2, 2, C]
  up = jnp.repeat(jnp.repeat(first, 2, axis=2), 2, axis=3)  # [2, 2, 4, 4, C]
  second = pipe.prepare(**dict(CALL, height=128, width=128, timesteps=[700.0, 300.0],
                               latents=up))
  assert second.grid == (2, 4, 4) and second.latents.shape == (2, 32, smoke.LATENT)
  out = pipe.denoise(second)
  assert out.shape == (2, 2, 4, 4, smoke.LATENT) and bool(jnp.all(jnp.isfinite(out)))
  # Preparing with latents is replacing a plan's latents by them re-noised to t0 = 0.7 with
  # the plan's own noise.
  again = pipe.prepare(**dict(CALL, height=128, width=128, timesteps=[700.0, 300.0]))
  renoised = 0.7 * again.unpack(again.latents) + 0.3 * up
  np.testing.assert_allclose(np.asarray(second.latents),
                             np.asarray(renoised).reshape(second.latents.shape), atol=1e-6)
  np.testing.assert_allclose(np.asarray(pipe.denoise(again.with_video_latents(renoised))),
                             np.asarray(out), atol=1e-5)
  with pytest.raises(UsageError, match=r'latents have shape .*expects \(2, 2, 4, 4, 16\)'):
    again.with_video_latents(first)


def test_appended_conditioning_tokens(pipe, plan):
  """Given tokens after the grid (a clean copy of latent frame 0 at its coordinates): the loop
  keeps them and attends to them; `denoise` returns the grid only."""
  per_frame = 4
  extra = plan.latents[:, :per_frame]  # [B, 4, C]
  cond = dataclasses.replace(
      plan, spec=dataclasses.replace(plan.spec, conditioned=True),
      latents=jnp.concatenate([plan.latents, extra], axis=1),
      coords=jnp.concatenate([plan.coords, plan.coords[:, :, :per_frame]], axis=2),
      cond_mask=jnp.concatenate([jnp.zeros((2, 8)), jnp.ones((2, per_frame))], axis=1))
  got = pipe.denoise(cond)
  assert got.shape == (2, *GRID, smoke.LATENT)
  assert not np.allclose(np.asarray(got), np.asarray(pipe.denoise(plan)))
  # The given tokens come back unchanged from the loop itself.
  graph, state = pipe._transformer_split
  packed, _ = loop_lib.denoise_jit(cond.spec, graph, state, cond.latents, cond.sigmas,
                                   cond.context, cond.context_mask, cond.guidance, cond.coords,
                                   cond.cond_mask, cond.key)
  np.testing.assert_array_equal(np.asarray(packed[:, 8:]), np.asarray(extra))


@pytest.mark.parametrize('change, message', [
    (dict(sigmas=jnp.array([1.0, 0.5, 0.0])), r'plan.guidance.scale \(3,\) must have 2 rows'),
    (dict(coords=jnp.zeros((1, 3, 7))), r'plan.coords \(1, 3, 7\) must be \[1, 3, 8\]'),
    (dict(cond_mask=jnp.zeros((2, 8))), r'plan.cond_mask must be \[2, 8\] exactly when'),
    (dict(latents=jnp.zeros((2, 6, 16))), r'plan.latents have 6 tokens'),
])
def test_inconsistent_plans_are_refused_before_compiling(pipe, plan, change, message):
  before = loop_lib.denoise_jit._cache_size()
  with pytest.raises(UsageError, match=message):
    pipe.denoise(dataclasses.replace(plan, **change))
  assert loop_lib.denoise_jit._cache_size() == before


def test_one_copy_of_the_checks(pipe, tmp_path):
  """The pipeline and the CLI refuse the same values with the same message."""
  import importlib.util
  from pathlib import Path
  from ltx_jax.cli import config as config_lib
  spec = importlib.util.spec_from_file_location(
      'smoke_config', Path(__file__).resolve().parents[1] / 'configs' / 'smoke.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cases = {'frame_rate': 1e-4, 'decode_timestep': 1.5, 'guidance_rescale': 2.0,
           'stg_rescale': -0.5, 'num_inference_steps': 0, 'timesteps': (300.0, 700.0),
           'guidance_timesteps': (0.0,)}
  for key, value in cases.items():
    with pytest.raises(UsageError) as library:
      kw = dict(CALL, **{key: list(value) if isinstance(value, tuple) else value})
      if key == 'num_inference_steps':
        kw.pop('timesteps')
      pipe(**kw)
    c = module.get_config()
    c.output_dir = str(tmp_path)
    c[key] = value
    with pytest.raises(UsageError) as cli:
      config_lib.check(c)
    assert str(cli.value) == f"config.{library.value}", (key, str(cli.value))
  assert checks.MIN_FRAME_RATE == 1e-3
