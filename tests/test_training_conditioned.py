"""Conditioned training strategies (ltx_jax.training.conditioned).

- IC-LoRA (ReferenceVideo): one step's loss and LoRA gradients against diffusers'
  LTXVideoTransformer3DModel + PEFT with LTX-Video-Trainer's ReferenceVideoTrainingStrategy
  formulas (tests/conditioned_reference.py); the joined sequence's coordinates equal the
  official trainer's.
- Prefix / Suffix: tokens, timesteps and mask equal what inference's combine_conditions builds
  for the same Condition at strength 1 (and the coordinates its non-causal placement gives).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import rel_l2
from conditioned_reference import official_coords, reference_video_loss
from ltx_jax.errors import UsageError
from ltx_jax.pipeline.conditioning import (EncodedCondition, combine_conditions,
                                           extra_noise_shape, token_timesteps)
from ltx_jax.training import Draws, LoraConfig, ObjectiveConfig, TrainConfig, Trainer
from ltx_jax.training import conditioned
from ltx_jax.training.conditioned import Prefix, ReferenceVideo, Suffix
from training_reference import peft_factor_paths

GRID = (3, 2, 3)
N = int(np.prod(GRID))


def make_batch(seed=0, rows=2, grid=GRID, channels=8, fps=25.0):
  rng = np.random.default_rng(seed)
  mask = np.ones((rows, 6), np.int32)
  mask[0, 4:] = 0
  return dict(latents=rng.standard_normal((rows, *grid, channels)).astype(np.float32),
              reference_latents=rng.standard_normal((rows, *grid, channels)).astype(np.float32),
              context=rng.standard_normal((rows, 6, 24)).astype(np.float32),
              context_mask=mask, frame_rate=np.full((rows,), fps, np.float32))


def make_draws(seed=1, rows=2, first_frame=False):
  rng = np.random.default_rng(seed)
  cond = np.zeros((rows, N), bool)
  if first_frame:
    cond[:, :GRID[1] * GRID[2]] = True
  return Draws(rng.standard_normal((rows, N, 8)).astype(np.float32),
               rng.uniform(0.05, 0.95, rows).astype(np.float32), cond)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  from test_training import config
  from conftest import randomize_torch_module
  from diffusers import LTXVideoTransformer3DModel
  tmp = tmp_path_factory.mktemp('cond')
  ref = LTXVideoTransformer3DModel(**config()).eval()
  randomize_torch_module(ref, seed=5, std=0.1)
  ref.save_pretrained(tmp / 'transformer')
  return tmp


@pytest.mark.slow
def test_reference_video_step_matches_official(model_dir, highest_precision):
  from test_training import flat, lora_trainer, peft_reference
  ref = peft_reference(model_dir, seed=9)
  trainer, state = lora_trainer(model_dir, ref, strategy=ReferenceVideo(),
                                objective=ObjectiveConfig(first_frame_p=0.2))
  batch = make_batch(3, fps=24.0)
  modules = dict(ref.named_modules())
  for first_frame in (False, True):
    draws = make_draws(4, first_frame=first_frame)
    ref.zero_grad()
    want = reference_video_loss(ref, batch['latents'], batch['reference_latents'],
                                batch['context'], batch['context_mask'], batch['frame_rate'],
                                *draws)
    want.backward()
    loss, grads = trainer.loss_and_grads(state, trainer.place(batch), draws)
    err = abs(float(loss) - want.item()) / want.item()
    assert err <= 1e-6, (float(loss), want.item())
    got = flat(grads)
    worst = 0.0
    for pa, pb, index, name in peft_factor_paths(trainer):
      for path, layer in ((pa, modules[name].lora_A), (pb, modules[name].lora_B)):
        g = got[path] if index is None else got[path][index]
        e = rel_l2(g, layer['default'].weight.grad.numpy().T)
        worst = max(worst, e)
        assert e <= 1e-5, (name, path[-1], e)
    print(f'IC-LoRA first_frame={first_frame}: loss rel err {err:.2e}, worst LoRA grad rel L2 '
          f'{worst:.2e}')
  # the reference changes the loss: it is seen by the model
  other = dict(batch, reference_latents=np.zeros_like(batch['reference_latents']))
  loss2, _ = trainer.loss_and_grads(state, trainer.place(other), make_draws(4))
  assert abs(float(loss2) - float(loss)) > 1e-4


@pytest.mark.parametrize('grid,fps', [(GRID, 25.0), ((2, 3, 1), 24.0)])
def test_reference_video_positions_equal_official(grid, fps):
  batch = make_batch(0, rows=2, grid=grid, fps=fps)
  f, h, w = grid
  n = f * h * w
  draws = Draws(np.zeros((2, n, 8), np.float32), np.array([0.3, 0.7], np.float32),
                np.zeros((2, n), bool))
  x = conditioned.inputs(ReferenceVideo(), jax.tree.map(jnp.asarray, batch), draws)
  np.testing.assert_array_equal(np.asarray(x.coords), official_coords(f, h, w, 2, fps).numpy())
  np.testing.assert_array_equal(np.asarray(x.tokens[:, :n]),
                                batch['reference_latents'].reshape(2, n, 8))
  np.testing.assert_array_equal(np.asarray(x.timesteps[:, :n]), 0)
  np.testing.assert_array_equal(np.asarray(x.timesteps[:, n:]), [[300] * n, [700] * n])


def inference_inputs(latents, noisy, sigma, item_of, fps):
  """Per row: combine_conditions on the row's noised latents with the row's Condition (or
  none), -> tokens, timesteps (x1000, rounded as training's), mask, coords in seconds."""
  out = []
  for row in range(latents.shape[0]):
    items = item_of(latents[row:row + 1])
    noise = [None if extra_noise_shape(i) is None else np.zeros(extra_noise_shape(i), np.float32)
             for i in items]
    c = combine_conditions(noisy[row:row + 1], items, noise, causal=False)
    t = np.asarray(token_timesteps(jnp.float32(sigma[row]), c.mask))
    coords = c.coords.copy()
    coords[:, 0] = coords[:, 0] * np.float32(1.0 / fps)
    out.append((c.latents[0], np.round(t[0] * 1000.0), c.mask[0], coords[0]))
  return [np.stack(a) for a in zip(*out)]


@pytest.mark.parametrize('strategy,grid', [
    (Prefix(frames=1, p=0.5), (3, 2, 2)),      # image-to-video, per-sample draws
    (Prefix(frames=2, p=0.7), (4, 1, 3)),      # extension forward
    (Suffix(frames=1), (3, 2, 2)),             # a last image
    (Suffix(frames=2), (4, 2, 1)),             # a 9-frame end segment: two extra frames
    (Suffix(frames=3), (5, 1, 2)),             # 17 frames: two extra, one in place
])
def test_prefix_inputs_equal_inference_condition(strategy, grid):
  rows, c, fps = 6, 4, 24.0
  rng = np.random.default_rng(3)
  latents = rng.standard_normal((rows, *grid, c)).astype(np.float32)
  batch = {'latents': jnp.asarray(latents), 'frame_rate': jnp.full((rows,), fps)}
  draws = conditioned.draw(strategy, ObjectiveConfig(), jax.random.key(2), batch['latents'])
  x = conditioned.inputs(strategy, batch, draws)
  f, h, w = grid
  sigma = np.asarray(draws.sigmas)
  x0 = latents.reshape(rows, -1, c)
  noisy = ((1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * np.asarray(draws.noise))
  noisy = noisy.reshape(latents.shape)
  on = np.asarray(draws.conditioning).any(axis=1)
  if isinstance(strategy, Prefix):
    assert 0 < on.sum() < rows  # the test sees both kinds of rows
    k = strategy.frames
    item_of = lambda lat: ([EncodedCondition(lat[:, :k], 0, 1.0)]
                           if on[item_of.row] else [])
  else:
    s = f - strategy.frames
    item_of = lambda lat: [EncodedCondition(lat[:, s:], s * 8, 1.0)]
  rows_out = []
  for row in range(rows):
    item_of.row = row
    rows_out.append(inference_inputs(latents[row:row + 1], noisy[row:row + 1], sigma[row:row + 1],
                                     item_of, fps))
  tokens, t, mask, coords = [np.concatenate(a) for a in zip(*rows_out)]
  np.testing.assert_allclose(np.asarray(x.tokens), tokens, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(x.mask), mask)
  np.testing.assert_array_equal(np.asarray(x.timesteps), t)
  np.testing.assert_allclose(np.asarray(x.coords), coords, rtol=1e-6)
  n = f * h * w
  np.testing.assert_array_equal(np.asarray(x.keep), np.asarray(x.mask[:, -n:]) == 0)


def test_refusals():
  with pytest.raises(UsageError, match='frames=0'):
    Prefix(frames=0)
  with pytest.raises(UsageError, match='p=1.5'):
    Prefix(p=1.5)
  with pytest.raises(UsageError, match='strategy='):
    TrainConfig(strategy='reference_video')
  batch = make_batch()
  bad = dict(batch, reference_latents=batch['reference_latents'][:, :2])
  with pytest.raises(UsageError, match='do not match'):
    conditioned.check_batch(ReferenceVideo(), bad)


def test_the_training_config_picks_the_strategy(tmp_path):
  from train_common import load_train_config, smoke_config
  from ltx_jax.cli import train_config, train_run
  c = load_train_config('smoke', 'ic_lora')
  c.output_dir = str(tmp_path)
  train_config.check(c)
  assert train_run.train_config_of(c).strategy == ReferenceVideo()
  c = smoke_config(tmp_path)
  assert train_run.train_config_of(c).strategy is None
  c.conditioning.mode, c.conditioning.latent_frames, c.conditioning.prefix_p = 'prefix', 2, 0.3
  train_config.check(c)
  assert train_run.train_config_of(c).strategy == Prefix(frames=2, p=0.3)
  c.conditioning.mode = 'suffix'
  assert train_run.train_config_of(c).strategy == Suffix(frames=2)
  c.conditioning.latent_frames = 0
  with pytest.raises(UsageError, match='conditioning.latent_frames=0'):
    train_config.check(c)
  c.conditioning.mode, c.conditioning.latent_frames = 'inpaint', 1
  with pytest.raises(UsageError, match="conditioning.mode='inpaint'"):
    train_config.check(c)
  with pytest.raises(UsageError, match='unknown variant'):
    load_train_config('smoke', 'depth')


@pytest.mark.parametrize('strategy', [Prefix(frames=3), Suffix(frames=3), Prefix(frames=1)])
def test_clips_too_short_stay_unconditioned(strategy):
  """Clips of no more than `frames` latent frames (an image bucket) are trained as plain
  text-to-video, as the official first-frame rule treats single-frame clips."""
  latents = jnp.asarray(np.random.default_rng(0).standard_normal((2, 1 if strategy.frames == 1
                                                                   else 3, 2, 2, 4)), jnp.float32)
  draws = conditioned.draw(strategy, ObjectiveConfig(), jax.random.key(0), latents)
  x = conditioned.inputs(strategy, {'latents': latents, 'frame_rate': jnp.full((2,), 24.0)},
                         draws)
  assert not np.asarray(draws.conditioning).any()
  assert x.tokens.shape[1] == latents.shape[1] * 4 and not np.asarray(x.mask).any()
