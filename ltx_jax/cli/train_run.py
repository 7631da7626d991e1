"""One training run: check the config, build the model and the trainer, resume or start, train,
validate, checkpoint, export.

  check (no device, no model)  ->  distributed start  ->  output folder claimed or resumed
  ->  pipeline (transformer + VAE + T5) on the mesh  ->  dataset (made first by the smoke recipe)
  ->  Trainer (ltx_jax.training)  ->  restore the latest / named checkpoint
  ->  loop: step, metrics, validation every K, checkpoint every N, SIGINT / SIGTERM: finish the
      step, save, exit 130 / 143  ->  final checkpoint, validation, export

Every process runs the same program; process 0 writes the files (checkpoints: every process
writes its shards through orbax).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable

from absl import logging

from ltx_jax.cli import train_config
from ltx_jax.errors import LTXError, UsageError


class Interrupted(LTXError):
  """SIGINT / SIGTERM: the step finished, a checkpoint was saved; `status` 130 / 143."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status


SIGNAL_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopFlag:
  """Records SIGINT / SIGTERM instead of raising, so the running step completes."""

  def __init__(self):
    self.signum: int | None = None
    self._old = {}

  def __enter__(self):
    for s in SIGNAL_STATUS:
      self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)

  def agreed(self) -> int | None:
    """The signal any process received (all processes stop at the same step)."""
    import jax
    if jax.process_count() == 1:
      return self.signum
    import numpy as np
    from jax.experimental import multihost_utils
    got = multihost_utils.process_allgather(np.int32(self.signum or 0))
    nonzero = [int(s) for s in np.ravel(got) if s]
    return nonzero[0] if nonzero else None


# ------------------------------------------------------------------------------ the pieces


def model_dtypes(c) -> dict:
  """The transformer's compute / storage dtypes from acceleration.*: bf16 or fp16 mixed
  precision computes (and stores the frozen base) in that dtype, 'no' in f32; fp8-quanto
  stores the frozen block weights in fp8. Trainable parameters are f32 either way."""
  dtype = {'no': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}[
      c.acceleration.mixed_precision_mode]
  return {'dtype': dtype, 'param_dtype': 'fp8' if c.acceleration.quantization else ''}


def train_config_of(c):
  """ltx_jax.training.TrainConfig from the config (refusals name the config key)."""
  from ltx_jax import training
  o = c.optimization
  try:
    trainable = (training.LoraConfig(rank=c.lora.rank, alpha=float(c.lora.alpha),
                                     dropout=float(c.lora.dropout),
                                     targets=tuple(c.lora.target_modules))
                 if c.model.training_mode == 'lora' else training.FullConfig())
    fm = c.flow_matching
    sampler = training.SamplerConfig(name=fm.timestep_sampling_mode,
                                     **fm.timestep_sampling_params.to_dict())
    return training.TrainConfig(
        trainable=trainable,
        objective=training.ObjectiveConfig(
            sampler=sampler, first_frame_p=float(c.conditioning.first_frame_conditioning_p)),
        optimizer=training.OptimizerConfig(
            learning_rate=float(o.learning_rate), steps=o.steps, schedule=o.scheduler_type,
            schedule_params=o.scheduler_params.to_dict(),
            max_grad_norm=float(o.max_grad_norm)),
        accumulation=o.gradient_accumulation_steps,
        remat='full' if o.enable_gradient_checkpointing else 'none', seed=c.seed,
        strategy=strategy_of(c))
  except TypeError as e:  # an unknown key in a *_params section
    raise UsageError(f"config: {e}") from None


def load_pipeline(c, mesh):
  """The pipeline whose transformer trains (its T5 and VAE make validation videos and the
  smoke recipe's latents) and its source facts."""
  from ltx_jax import presets
  from ltx_jax.cli import run as run_lib
  m = c.model
  dt = model_dtypes(c)
  if m.source == train_config.SMOKE:
    source, file = train_config.SMOKE, ''
  elif m.source:
    source, file = m.source, m.file
  else:
    source, file = presets.HUB_REPO, m.file or presets.get(m.release).file
  return run_lib.load_model(source, file=file, release='' if m.source == train_config.SMOKE
                            else m.release, dtype=dt['dtype'], text_encoder_dtype='',
                            attention=m.attention, offline=m.offline, hash_files=True,
                            mesh=mesh, context_attention=c.mesh.context_attention,
                            param_dtype=dt['param_dtype'])


def file_sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


@dataclasses.dataclass
class Run:
  """What the loop works with."""
  c: Any
  plan: train_config.TrainPlan
  pipe: Any
  source: dict
  trainer: Any
  loader: Any
  dataset: Path
  dataset_hash: str
  main: bool


# --------------------------------------------------------------------------------- the run


def run(c, *, on_step: Callable[[int, dict], None] | None = None) -> dict:
  """Trains as config `c` says; returns {'step', 'checkpoints', 'exports', 'losses'}.

  on_step(step, metrics): called after every step (tests interrupt runs with it).
  """
  plan = train_config.check(c)  # before anything loads or compiles
  from ltx_jax import distributed
  d = c.distributed
  distributed.initialize(d.coordinator or None, d.num_processes or None,
                         None if d.process_id < 0 else d.process_id, auto=d.auto)
  main = distributed.is_main_process()
  from ltx_jax.cli import train_checkpoint
  out = plan.output_dir
  train_checkpoint.check_resume(out, c, plan.resume if plan.export_only is None else 'latest')
  if plan.export_only is not None:
    return export_checkpoint(c, plan, main)
  return _train(c, plan, main, on_step)


def _mesh(c):
  from ltx_jax.cli import run as run_lib
  return run_lib.config_mesh(c)


def _build(c, plan, main) -> Run:
  from ltx_jax import training
  from ltx_jax.cli import train_data
  mesh = _mesh(c)
  tc = train_config_of(c)
  pipe, source = load_pipeline(c, mesh)
  dataset = train_data.dataset_folder(c, plan, pipe, main)
  loader = train_data.open_loader(c, dataset, pipe)
  trainer = training.Trainer(pipe.transformer, tc, mesh=mesh,
                             context_attention=c.mesh.context_attention)
  return Run(c, plan, pipe, source, trainer, loader, dataset,
             file_sha256(dataset / 'index.json'), main)


def _train(c, plan, main, on_step) -> dict:
  import jax
  import numpy as np
  from ltx_jax.cli import train_checkpoint, train_metrics, train_validation
  r = _build(c, plan, main)
  trainer = r.trainer
  out = plan.output_dir
  if main:
    train_checkpoint.write_run_file(out, c)
  ckpt = train_checkpoint.Checkpoints(out, keep_last_n=c.checkpoints.keep_last_n)
  state = on_mesh(trainer, trainer.init_state())
  start, losses = 0, []
  resume_step = ckpt.resolve(plan.resume) if plan.resume is not None else None
  if resume_step is not None:
    later = ckpt.drop_after(resume_step)
    if later:
      logging.info("resuming from step %d replaces the later checkpoints %s", resume_step, later)
    state, meta = ckpt.restore(resume_step, _abstract(state), r.loader)
    start, losses = int(meta['step']), list(meta.get('losses', []))
    if meta.get('dataset_index_sha256') not in (None, r.dataset_hash):
      raise UsageError(f"{out} was trained on another dataset (index sha256 "
                       f"{meta['dataset_index_sha256'][:12]}...), not {r.dataset}; pass "
                       "another --config.output_dir")
    logging.info("resumed from checkpoint %d of %s", start, ckpt.folder)
  total = c.optimization.steps
  batch_iter = iter(r.loader)
  first = place(trainer, next(batch_iter)) if start < total else None
  flops = train_metrics.lowered_flops(trainer.lower(state, first)) if first is not None else None
  tokens = int(np.prod(first['latents'].shape[1:4])) if first is not None else 0
  metrics = train_metrics.Metrics(
      out, total_steps=total, start_step=start, log_every=c.metrics.log_every,
      samples_per_step=c.optimization.batch_size * jax.process_count(),
      tokens_per_sample=tokens, flops_per_step=flops,
      peak=train_metrics.peak_flops(jax.devices()[0], c.metrics.peak_tflops),
      num_devices=jax.device_count(), progress=c.metrics.progress, main=main)
  validator = train_validation.Validator(r.pipe, c, out, main=main)
  interval = c.validation.interval

  def validate(step, state):
    if not (interval and c.validation.prompts):
      return []
    t0 = time.perf_counter()
    paths = validator.render(step, lambda: _sync(trainer, state),
                             lambda name, strip: metrics.images(step, name, strip))
    logging.info("validation at step %d: %d video(s) in %.1f s", step, len(paths),
                 time.perf_counter() - t0)
    return paths

  def save(step, state):
    ckpt.save(step, state, r.loader, {
        'losses': losses, 'dataset_index_sha256': r.dataset_hash,
        'trajectory': train_config.trajectory(c), 'config': json.loads(c.to_json())})

  samples, validated = [], None
  step = start
  try:
    with StopFlag() as stop:
      if start == 0 and not c.validation.skip_initial_validation:
        samples, validated = validate(0, state), 0
      pending = first  # fetched before the loop to size the metrics
      while step < total:
        # the loader's state at a checkpoint must be "step batches consumed": fetch here
        batch = pending if pending is not None else place(trainer, next(batch_iter))
        pending = None
        t0 = time.perf_counter()
        state, m = trainer.step(state, batch)
        loss = float(m['loss'])  # waits for the step
        seconds = time.perf_counter() - t0
        step += 1
        losses.append(loss)
        metrics.step(step, {'loss': loss, 'grad_norm': float(m['grad_norm']),
                            'learning_rate': float(m['learning_rate'])}, seconds,
                     **_sigma_loss(trainer, state, batch, loss, c))
        if on_step is not None:
          on_step(step, {'loss': loss})
        signum = stop.agreed()
        if signum is not None:
          save(step, state)
          raise Interrupted(f"{signal.Signals(signum).name} at step {step}: checkpoint "
                            f"saved in {ckpt.folder}; run the same command to resume",
                            SIGNAL_STATUS[signum])
        if c.checkpoints.interval and step % c.checkpoints.interval == 0 and step < total:
          save(step, state)
        if interval and step % interval == 0 and step < total:
          samples, validated = validate(step, state), step
    if ckpt.latest() != step:
      save(step, state)
    if interval and c.validation.prompts and validated != step:  # the final weights
      samples = validate(step, state)
    exports = export_state(r, state, step, samples)
    if main:
      logging.info("trained %d steps; checkpoints %s; exports in %s", step, ckpt.steps(),
                   out / 'export')
    return {'step': step, 'checkpoints': ckpt.steps(), 'exports': exports, 'losses': losses,
            'state': state, 'trainer': trainer}
  finally:
    metrics.close()
    ckpt.close()


def strategy_of(c):
  """config.conditioning.mode -> the training strategy (None: the standard objective)."""
  from ltx_jax.training import conditioned
  k = c.conditioning
  if k.mode == 'reference_video':
    return conditioned.ReferenceVideo()
  if k.mode == 'prefix':
    return conditioned.Prefix(frames=k.latent_frames, p=float(k.prefix_p))
  if k.mode == 'suffix':
    return conditioned.Suffix(frames=k.latent_frames)
  return None


def place(trainer, batch: dict) -> dict:
  """This process's rows of the global batch -> global arrays on the trainer's mesh (rows over
  its batch axes; process i holds global rows [i * b, (i + 1) * b)), checked by the trainer."""
  import jax
  import numpy as np
  if jax.process_count() == 1 or trainer.mesh is None:
    return trainer.place(batch)
  out = {}
  for k in trainer.batch_keys:
    a = np.asarray(batch[k])
    shape = (a.shape[0] * jax.process_count(),) + a.shape[1:]
    sharding = trainer.partitioning.sharding(shape, ('batch',) + (None,) * (a.ndim - 1))
    out[k] = jax.make_array_from_process_local_data(sharding, a, shape)
  trainer.check_batch(out)
  return out


def on_mesh(trainer, state):
  """`state` with its unplaced leaves (the step counters) replicated over the trainer's mesh,
  as the step returns them: the second step then reuses the first step's program instead of
  compiling again for other input shardings."""
  import jax
  from ltx_jax import sharding
  if trainer.mesh is None:
    return state
  return jax.tree.map(
      lambda x: x if isinstance(x.sharding, jax.sharding.NamedSharding)
      else sharding.replicated(trainer.mesh, x), state)


def _abstract(state):
  import jax
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      state)


def _sync(trainer, state) -> None:
  """Puts the live trainable values into the pipeline's transformer (validation)."""
  from flax import nnx
  import jax
  params = jax.tree.map(lambda new, old: new.astype(old.dtype), state.params, trainer.params)
  nnx.update(trainer.model, params)


def _sigma_loss(trainer, state, batch, loss, c) -> dict:
  """Per-sigma-range loss: exact when the step holds one sample (the official recipes'
  batch_size 1): its sigma is redrawn from the step's key, as the step drew it."""
  if batch['latents'].shape[0] != 1:
    return {}
  import jax
  import numpy as np
  from ltx_jax import training
  step = int(state.step) - 1
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(c.seed), step), 0)
  draws = training.draw(trainer.config.objective, key, batch['latents'])
  return {'sigmas': np.asarray(draws.sigmas), 'losses': np.asarray([loss])}


# ----------------------------------------------------------------------------------- export


def export_state(r: Run, state, step: int, samples: list[Path]) -> dict:
  from ltx_jax.cli import train_export
  return train_export.export(r.c, r.trainer, state, step, r.plan.output_dir / 'export',
                             base=r.source, release=r.plan.release, dataset_hash=r.dataset_hash,
                             samples=samples, main=r.main,
                             base_file=getattr(r.pipe.source, 'transformer', None),
                             release_facts=_release_facts(r.pipe))


def _release_facts(pipe) -> dict | None:
  """{'version', 'size', 'variant'} of the base release (a converted checkpoint's manifest)."""
  release = getattr(pipe.source, 'release', None)
  if release is None:
    return None
  return {k: str(getattr(release, k)) for k in ('version', 'size', 'variant')}


def export_checkpoint(c, plan, main) -> dict:
  """--config.export.checkpoint=STEP|latest: that checkpoint's adapter / weights exported,
  no training."""
  from ltx_jax.cli import train_checkpoint, train_data
  ckpt = train_checkpoint.Checkpoints(plan.output_dir, keep_last_n=-1)
  try:
    step = ckpt.resolve(plan.export_only)
    if step is None:
      raise UsageError(f"config.export.checkpoint={c.export.checkpoint!r}: "
                       f"{plan.output_dir} holds no checkpoint")
    meta = ckpt.meta(step)
    from ltx_jax import training
    mesh = _mesh(c)
    pipe, source = load_pipeline(c, mesh)
    trainer = training.Trainer(pipe.transformer, train_config_of(c), mesh=mesh,
                               context_attention=c.mesh.context_attention)
    state = on_mesh(trainer, trainer.init_state())
    state, meta = ckpt.restore(step, _abstract(state), train_data.NoLoader())
    r = Run(c, plan, pipe, source, trainer, None, Path(), meta.get('dataset_index_sha256'),
            main)
    exports = export_state(r, state, step, [])
    return {'step': step, 'checkpoints': ckpt.steps(), 'exports': exports,
            'losses': meta.get('losses', []), 'state': state}
  finally:
    ckpt.close()

