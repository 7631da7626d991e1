"""The training step: loss, gradients (accumulated over micro-batches in one scan), clipping,
AdamW, all in one jitted, donated program per batch shape, laid out on a mesh by the package's
sharding rules.

    trainer = Trainer(model, TrainConfig(...), mesh=mesh)   # LoRA attached / parameters chosen
    state = trainer.init_state()
    for batch in loader:
      state, metrics = trainer.step(state, trainer.place(batch))

Randomness: step k of a run seeded s draws everything (sigmas, noise, first-frame conditioning,
LoRA dropout) from fold_in(fold_in(key(s), k), micro-batch), so a resumed run draws what an
uninterrupted one draws. `step(..., draws=...)` takes them explicitly instead (comparisons).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ltx_jax import sharding as sharding_lib
from ltx_jax.errors import UsageError
from ltx_jax.models.transformer.model import REMAT_POLICIES
from ltx_jax.nn.lora import LoRAWeight, lora_layers
from ltx_jax.nn.layers import compiler_options
from ltx_jax.training import objective, optimizer as optimizer_lib
from ltx_jax.training.objective import Draws, ObjectiveConfig
from ltx_jax.training.optimizer import OptimizerConfig
from ltx_jax.training.trainable import (FullConfig, LoraConfig, Selection, attach_lora,
                                        select_full)
from ltx_jax.weights import precision

BATCH_KEYS = ('latents', 'context', 'context_mask', 'frame_rate')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What trains (`LoraConfig` or `FullConfig`), the objective, the optimizer.

  accumulation: micro-batches per optimizer step (a batch of B rows is split into
    `accumulation` micro-batches of B / accumulation rows: rows i, i + A, i + 2A, ...).
  remat: gradient checkpointing of each transformer block: 'none', 'full' or 'dots'.
  master_dtype: the trainable parameters' and optimizer state's dtype ('f32' default); the
    model computes in its own dtype (load it with dtype='bf16' for bf16 compute).
  seed: the run's randomness (with the step number).
  """
  trainable: LoraConfig | FullConfig = LoraConfig()
  objective: ObjectiveConfig = ObjectiveConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  accumulation: int = 1
  remat: str = 'none'
  master_dtype: str = 'f32'
  seed: int = 0

  def __post_init__(self):
    if not isinstance(self.trainable, (LoraConfig, FullConfig)):
      raise UsageError(f"trainable={self.trainable!r}; expected a LoraConfig or FullConfig")
    if isinstance(self.accumulation, bool) or not isinstance(self.accumulation, int) or (
        self.accumulation < 1):
      raise UsageError(f"accumulation={self.accumulation!r}; expected an integer >= 1")
    if self.remat not in REMAT_POLICIES:
      raise UsageError(f"remat={self.remat!r}; choose one of {', '.join(REMAT_POLICIES)}")
    precision.parse(self.master_dtype, what='master')
    if not isinstance(self.seed, int):
      raise UsageError(f"seed={self.seed!r}; expected an integer")


class TrainState(NamedTuple):
  """What a step changes (and a checkpoint holds): the trainable parameters (an nnx.State in
  master dtype), the optimizer state, the number of optimizer steps taken (int32 scalar)."""
  params: Any
  opt_state: Any
  step: jax.Array


class Trainer:
  """Trains `model` (an `LTXVideoTransformer`, loaded or random) as `config` says.

  LoRA mode attaches the adapters to `model` now (PEFT's initialisation, from the seed); full
  mode trains the model's chosen parameters. mesh, rules, context_attention: where the step
  runs (ltx_jax/sharding.py; the model's parameters already placed by the loaders on that
  mesh). Bad configurations are refused here, before anything compiles.
  """

  def __init__(self, model: nnx.Module, config: TrainConfig, *, mesh=None, rules=None,
               context_attention: str = 'allgather'):
    self.config = config
    self.mesh = None if mesh is None else sharding_lib.accept_mesh(mesh, rules)
    self.rules = rules
    self.partitioning = (None if self.mesh is None else sharding_lib.Partitioning.create(
        self.mesh, rules, context_attention))
    self.model = model
    key = jax.random.fold_in(jax.random.key(config.seed), -1 & 0x7fffffff)  # not a step key
    if isinstance(config.trainable, LoraConfig):
      self.selection: Selection = attach_lora(model, config.trainable, key, mesh=self.mesh,
                                              rules=rules)
    else:
      self.selection = select_full(model, config.trainable)
    model.remat = config.remat
    self.master = precision.parse(config.master_dtype, what='master')
    self.graph, self.params, self.rest = nnx.split(model, self.selection.is_trainable, ...)
    flat = {tuple(p): v.replace(self.selection.masks[tuple(p)])
            for p, v in nnx.to_flat_state(self.params)}  # the params' tree, masks as values
    self.mask_tree = nnx.State.from_flat_path(flat)
    self.tx = optimizer_lib.make_optimizer(config.optimizer)
    self.schedule = optimizer_lib.schedule(config.optimizer)
    self._step = jax.jit(self._step_impl, donate_argnums=0,
                         compiler_options=compiler_options(model) or None)
    self._grads = jax.jit(self._grads_impl)

  # ----------------------------------------------------------------------------- state

  def init_state(self) -> TrainState:
    """Step 0: the trainable parameters in master dtype and a fresh optimizer state."""
    return self._init(self.params)

  def _init(self, params) -> TrainState:
    params = jax.tree.map(lambda a: a.astype(self.master), params)
    return TrainState(params, self.tx.init(params), jnp.zeros((), jnp.int32))

  def abstract_state(self) -> TrainState:
    """The state's shapes and dtypes (works on abstract, `nnx.eval_shape`d, models)."""
    return jax.eval_shape(self._init, self.params)

  def lower(self, state: TrainState, batch: dict, draws: Draws | None = None):
    """The step lowered for these (concrete or abstract: jax.ShapeDtypeStruct) arguments;
    `.compile().memory_analysis()` gives XLA's memory plan without running it."""
    return self._step.lower(state, self.rest, batch, draws)

  def model_with(self, state: TrainState) -> nnx.Module:
    """The model with `state`'s trained parameters (in the model's own storage dtypes)."""
    params = jax.tree.map(lambda new, old: new.astype(old.dtype), state.params, self.params)
    return nnx.merge(self.graph, params, self.rest)

  def learning_rate(self, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based)."""
    return float(self.schedule(step))

  # ----------------------------------------------------------------------------- batches

  def check_batch(self, batch: dict) -> None:
    """Refuses a batch the step cannot take: missing keys, rows the accumulation or the mesh's
    batch axes do not divide."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
      raise UsageError(f"training batch lacks {missing}; it needs {list(BATCH_KEYS)}")
    rows = batch['latents'].shape[0]
    a = self.config.accumulation
    if rows % a:
      raise UsageError(f"a batch of {rows} rows does not split into accumulation={a} "
                       "micro-batches")
    if self.mesh is not None:
      shards = self.mesh.shape['data'] * self.mesh.shape['fsdp']
      if (rows // a) % shards:
        raise UsageError(f"micro-batches of {rows // a} rows do not divide over the mesh's data x "
                         f"fsdp = {shards} devices; use a multiple of {shards} rows per micro-batch")

  def place(self, batch: dict) -> dict:
    """The batch's arrays on the mesh, rows over the batch axes (checked first)."""
    self.check_batch(batch)
    if self.mesh is None:
      return {k: jnp.asarray(batch[k]) for k in BATCH_KEYS}
    out = {}
    for k in BATCH_KEYS:
      a = np.asarray(batch[k])
      names = ('batch',) + (None,) * (a.ndim - 1)
      out[k] = sharding_lib.place(a, self.partitioning.sharding(a.shape, names))
    return out

  # ----------------------------------------------------------------------------- the step

  def step(self, state: TrainState, batch: dict, draws: Draws | None = None
           ) -> tuple[TrainState, dict]:
    """One optimizer step; `state` is donated. Returns the new state and metrics (loss: the
    mean of the micro-batches' losses; grad_norm before clipping; learning_rate used)."""
    self.check_batch(batch)
    return self._step(state, self.rest, batch, draws)

  def loss_and_grads(self, state: TrainState, batch: dict, draws: Draws | None = None
                     ) -> tuple[jax.Array, Any]:
    """The loss and the (accumulated, unclipped) gradients of the trainable parameters."""
    self.check_batch(batch)
    return self._grads(state, self.rest, batch, draws)

  def _micro(self, tree, a: int):
    """[B, ...] -> [A, B / A, ...], micro-batch i = rows i, i + A, ..."""
    def split(x):
      x = x.reshape(x.shape[0] // a, a, *x.shape[1:])
      return jnp.swapaxes(x, 0, 1)
    return jax.tree.map(split, tree)

  def _loss(self, params, rest, batch, draws, key):
    model = nnx.merge(self.graph, params, rest)
    if key is not None:
      k_drop = jax.random.fold_in(key, 3)
      for n, layer in enumerate(lora_layers(model)):
        if layer.dropout > 0:
          lead = layer.scale.get_value().shape[:-1]
          keys = jax.random.split(jax.random.fold_in(k_drop, n), int(np.prod(lead)) or 1)
          layer.rng = nnx.data(LoRAWeight(jax.random.key_data(keys).reshape(lead + (-1,))))
    return objective.loss_fn(model, batch, draws)

  def _grads_impl(self, state: TrainState, rest, batch, draws):
    with sharding_lib.activate(self.partitioning):
      a = self.config.accumulation
      step_key = jax.random.fold_in(jax.random.key(self.config.seed), state.step)
      micro_batches = self._micro(batch, a)
      micro_draws = None if draws is None else self._micro(draws, a)
      grad_fn = jax.value_and_grad(self._loss)

      def body(acc, xs):
        i, mb, md = xs
        key = jax.random.fold_in(step_key, i)
        if md is None:
          md = objective.draw(self.config.objective, key, mb['latents'])
        loss, grads = grad_fn(state.params, rest, mb, md, key)
        grads = jax.tree.map(lambda g, m: g * m, grads, self.mask_tree)
        return jax.tree.map(jnp.add, acc, (loss, grads)), None

      zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
      (loss, grads), _ = jax.lax.scan(body, zero, (jnp.arange(a), micro_batches, micro_draws))
      return loss / a, jax.tree.map(lambda g: g / a, grads)

  def _step_impl(self, state: TrainState, rest, batch, draws):
    loss, grads = self._grads_impl(state, rest, batch, draws)
    with sharding_lib.activate(self.partitioning):
      updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
      updates = jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, self.mask_tree)
      params = optax.apply_updates(state.params, updates)
      metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads),
                 'learning_rate': self.schedule(state.step)}
      return TrainState(params, opt_state, state.step + 1), metrics
