"""The step's own invariants on a tiny random model (full fine-tuning, f32 'highest'):
accumulating 4 micro-batches equals one batch of 4; remat on equals remat off and its compiled
memory plan is smaller; the randomness of step k is a function of (seed, k); and learning: the
loss on two fixed clips falls below 30% of its start within 50 steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import rel_l2
from ltx_jax.models.random import random_weights
from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig
from ltx_jax.training import (Draws, FullConfig, ObjectiveConfig, OptimizerConfig, TrainConfig,
                              Trainer, draw)

CONFIG = TransformerConfig(num_layers=2, num_heads=2, head_dim=16, in_channels=8,
                           out_channels=8, cross_attention_dim=32, caption_channels=16)
GRID = (3, 4, 4)
N = int(np.prod(GRID))


def trainer(**kw):
  model = random_weights(lambda: LTXVideoTransformer(CONFIG, rngs=nnx.Rngs(0)), seed=0, std=0.1)
  kw.setdefault('optimizer', OptimizerConfig(learning_rate=1e-2, steps=50, schedule='constant'))
  return Trainer(model, TrainConfig(FullConfig(), **kw))


def clips():
  """Two fixed clips (latents and captions), each twice: a batch of 4."""
  rng = np.random.default_rng(0)
  latents = rng.standard_normal((2, *GRID, 8)).astype(np.float32)
  context = rng.standard_normal((2, 4, 16)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.int32)
  take = [0, 1, 0, 1]
  return dict(latents=latents[take], context=context[take], context_mask=mask[take],
              frame_rate=np.array([25, 24, 25, 24], np.float32))


def fixed_draws():
  rng = np.random.default_rng(1)
  cond = np.zeros((4, N), bool)
  cond[:, :GRID[1] * GRID[2]] = True  # first-frame conditioning on the whole batch
  return Draws(rng.standard_normal((4, N, 8)).astype(np.float32),
               np.array([0.2, 0.5, 0.7, 0.9], np.float32), cond)


def flat(tree):
  return {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(tree)}


@pytest.fixture(scope='module')
def plain():
  return trainer()


@pytest.mark.slow
def test_accumulation_and_remat(plain, highest_precision):
  batch, draws = clips(), fixed_draws()
  state = plain.init_state()
  loss, grads = plain.loss_and_grads(state, plain.place(batch), draws)
  for other in (trainer(accumulation=4), trainer(remat='full')):
    got_loss, got = other.loss_and_grads(other.init_state(), other.place(batch), draws)
    assert abs(float(got_loss) - float(loss)) <= 1e-6 * abs(float(loss))
    errs = [rel_l2(g, w) for g, w in zip(flat(got).values(), flat(grads).values())]
    print(f'accumulation={other.config.accumulation} remat={other.config.remat}: loss rel '
          f'{abs(float(got_loss) - float(loss)) / float(loss):.1e}, worst grad {max(errs):.1e}')
    assert max(errs) <= 1e-6


@pytest.mark.slow
def test_remat_shrinks_the_memory_plan(highest_precision):
  batch = clips()
  sizes = {}
  for remat in ('none', 'full', 'dots'):
    t = trainer(remat=remat)
    state = t.abstract_state()
    abstract_batch = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                      for k, v in batch.items()}
    plan = t.lower(state, abstract_batch).compile().memory_analysis()
    sizes[remat] = plan.temp_size_in_bytes
  print('temp bytes', sizes)
  assert sizes['full'] < sizes['none'] and sizes['dots'] <= sizes['none']


def test_randomness_is_a_function_of_seed_and_step():
  """Step k's draws come from fold_in(key(seed), k): equal for equal (seed, step), different
  otherwise (the resume rule)."""
  objective = ObjectiveConfig(first_frame_p=0.5)
  latents = jnp.zeros((4, *GRID, 8))
  key = lambda seed, step: jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), 0)
  a, b, c = (draw(objective, key(*sk), latents) for sk in ((0, 5), (0, 5), (0, 6)))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.noise, c.noise) and not np.array_equal(a.sigmas, c.sigmas)


@pytest.mark.slow
def test_learns_two_clips(plain):
  batch, draws = plain.place(clips()), fixed_draws()
  state = plain.init_state()
  losses = []
  for _ in range(50):
    state, metrics = plain.step(state, batch, draws)
    losses.append(float(metrics['loss']))
  print(f'loss {losses[0]:.3f} -> {losses[-1]:.3f} ({losses[-1] / losses[0]:.1%})')
  assert losses[-1] < 0.3 * losses[0]
  assert int(state.step) == 50


def test_lora_dropout_as_peft():
  """PEFT's lora_dropout: inverted dropout on the adapter's input only, off without a key."""
  from ltx_jax.nn.lora import LoRAWeight, LowRank
  axes = {'a': (None, None), 'b': (None, None), 'scale': (None,)}
  eye = np.eye(64, dtype=np.float32)
  layer = LowRank(jnp.asarray(eye), jnp.asarray(eye), jnp.ones((1,)), [0] * 64, ['t'], axes,
                  dropout=0.25)
  x = jnp.ones((512, 64))
  np.testing.assert_array_equal(layer(x, jnp.float32), x)  # no key: no dropout
  layer.rng = nnx.data(LoRAWeight(jax.random.key_data(jax.random.key(0))))
  y = np.asarray(layer(x, jnp.float32))
  assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
  assert abs((y == 0).mean() - 0.25) < 0.01
