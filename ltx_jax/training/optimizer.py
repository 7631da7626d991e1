"""The official trainer's optimizer in optax: torch.optim.AdamW, its learning-rate schedulers
and torch's clip_grad_norm_, stepped once per optimizer step (Accelerate's rule under gradient
accumulation with one process: the scheduler advances only when the optimizer steps).

AdamW: optax.adamw and torch.optim.AdamW compute the same update,
  p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p),
eps outside the square root in both, weight decay decoupled and scaled by the current lr in both.
Schedules (lr(k) = the rate of optimizer step k = 0, 1, ...; `steps` = the run's length):
  constant                 lr
  linear                   LinearLR(start_factor 1.0, end_factor 0.1, total_iters=steps)
  cosine                   CosineAnnealingLR(T_max=steps, eta_min=0)
  cosine_with_restarts     CosineAnnealingWarmRestarts(T_0=steps // 4, T_mult=1, eta_min=5e-5)
  polynomial               PolynomialLR(total_iters=steps, power=1.0)
  step                     StepLR(step_size=steps // 2, gamma=0.1)
`schedule_params` overrides those defaults by torch's names. `warmup` steps (0 by default, the
official trainer has none) ramp linearly from lr / warmup to lr, then the schedule starts.
Clipping: torch's rule, grads * min(1, max_norm / (||grads|| + 1e-6)); max_grad_norm 0: none.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from ltx_jax.errors import UsageError

SCHEDULES = ('constant', 'linear', 'cosine', 'cosine_with_restarts', 'polynomial', 'step')
_PARAMS = {
    'constant': {},
    'linear': {'start_factor': 1.0, 'end_factor': 0.1},
    'cosine': {'eta_min': 0.0},
    'cosine_with_restarts': {'T_0': None, 'T_mult': 1, 'eta_min': 5e-5},
    'polynomial': {'power': 1.0},
    'step': {'step_size': None, 'gamma': 0.1},
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with PyTorch's defaults, a schedule over `steps` optimizer steps, clipping."""
  learning_rate: float = 2e-4
  steps: int = 2000
  schedule: str = 'linear'
  schedule_params: tuple[tuple[str, Any], ...] = ()
  warmup: int = 0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0

  def __post_init__(self):
    if isinstance(self.schedule_params, Mapping):
      object.__setattr__(self, 'schedule_params', tuple(self.schedule_params.items()))
    lr = self.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr)
                                                                         and lr > 0):
      raise UsageError(f"learning_rate={lr!r}; expected a finite number > 0")
    if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
      raise UsageError(f"steps={self.steps!r}; expected an integer >= 1")
    if self.schedule not in SCHEDULES:
      raise UsageError(f"schedule={self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    unknown = sorted(set(dict(self.schedule_params)) - set(_PARAMS[self.schedule]))
    if unknown:
      raise UsageError(f"schedule_params {unknown} for schedule {self.schedule!r}; it takes "
                       f"{sorted(_PARAMS[self.schedule]) or 'none'}")
    if not isinstance(self.warmup, int) or self.warmup < 0:
      raise UsageError(f"warmup={self.warmup!r}; expected an integer >= 0")
    if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
      raise UsageError(f"betas ({self.b1}, {self.b2}); expected each in [0, 1)")
    if not self.eps >= 0 or not self.weight_decay >= 0 or not self.max_grad_norm >= 0:
      raise UsageError(f"eps={self.eps}, weight_decay={self.weight_decay}, max_grad_norm="
                       f"{self.max_grad_norm}; expected each >= 0")
    p = self.params
    if self.schedule == 'cosine_with_restarts' and p['T_0'] < 1:
      raise UsageError(f"cosine_with_restarts T_0={p['T_0']} (default steps // 4); expected >= 1")
    if self.schedule == 'step' and p['step_size'] < 1:
      raise UsageError(f"step schedule step_size={p['step_size']} (default steps // 2); "
                       "expected >= 1")

  @property
  def params(self) -> dict[str, Any]:
    """The schedule's parameters with the official defaults filled in."""
    p = {**_PARAMS[self.schedule], **dict(self.schedule_params)}
    if self.schedule == 'cosine_with_restarts' and p['T_0'] is None:
      p['T_0'] = self.steps // 4
    if self.schedule == 'step' and p['step_size'] is None:
      p['step_size'] = self.steps // 2
    return p


def schedule(config: OptimizerConfig) -> optax.Schedule:
  """k (optimizer steps taken) -> the learning rate of the next step."""
  lr, n, p = config.learning_rate, config.steps, config.params

  def main(k):
    k = jnp.asarray(k, jnp.float32)
    if config.schedule == 'constant':
      return jnp.full_like(k, lr)
    if config.schedule == 'linear':
      frac = jnp.minimum(k, n) / n
      return lr * (p['start_factor'] + (p['end_factor'] - p['start_factor']) * frac)
    if config.schedule == 'cosine':
      return p['eta_min'] + (lr - p['eta_min']) * (1 + jnp.cos(jnp.pi * k / n)) / 2
    if config.schedule == 'cosine_with_restarts':
      t0, mult = p['T_0'], p['T_mult']
      if mult == 1:
        cur, length = jnp.mod(k, t0), t0
      else:  # cycle i has length t0 * mult^i
        i = jnp.floor(jnp.log(k / t0 * (mult - 1) + 1) / math.log(mult))
        cur = k - t0 * (mult ** i - 1) / (mult - 1)
        length = t0 * mult ** i
      return p['eta_min'] + (lr - p['eta_min']) * (1 + jnp.cos(jnp.pi * cur / length)) / 2
    if config.schedule == 'polynomial':
      return lr * (1 - jnp.minimum(k, n) / n) ** p['power']
    return lr * p['gamma'] ** jnp.floor(k / p['step_size'])  # step

  if not config.warmup:
    return main
  w = config.warmup
  return lambda k: jnp.where(k < w, lr * (jnp.asarray(k, jnp.float32) + 1) / w, main(k - w))


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
  """torch.nn.utils.clip_grad_norm_: grads * min(1, max_norm / (||grads||_2 + 1e-6))."""

  def update(updates, state, params=None):
    del params
    norm = optax.global_norm(updates)
    coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
    return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """Clipping (when max_grad_norm > 0), then AdamW on the schedule."""
  adamw = optax.adamw(schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
                      weight_decay=config.weight_decay)
  if config.max_grad_norm > 0:
    return optax.chain(clip_by_global_norm_torch(config.max_grad_norm), adamw)
  return adamw
