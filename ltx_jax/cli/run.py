"""One generation run: check the config, load the model once, make every (prompt, seed) video.

All (prompt, seed) jobs share shapes, so the jitted text encoder, denoising loop and decoder
compile once and are reused. Each video gets an mp4 (optionally a GIF and PNG frames) and a JSON
sidecar with the resolved config, seed, release, source files (with hashes), devices and
stage timings.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable

from absl import logging

from ltx_jax.cli import config as config_lib
from ltx_jax.cli import preflight
from ltx_jax.cli.config import pipeline_kwargs
from ltx_jax.errors import UsageError
from ltx_jax.sources.resolve import sha256

# ---------------------------------------------------------------------------------- loading


def load_model(source: str, *, file: str = '', release: str = '', dtype: str = 'bfloat16',
               text_encoder_dtype: str = '', attention: str = 'auto', offline: bool = False,
               hash_files: bool = False, mesh=None, context_attention: str = 'allgather',
               param_dtype: str = '', matmul: str = 'default',
               allow_nonfinite: bool = False, loras=(), lora_strict: bool = True,
               allow_custom: bool = False):
  """(LTXPipeline, source facts) from a folder, file, converted checkpoint, hub repo id, or
  'smoke' (ltx_jax.smoke's random-weight plumbing model). Names as in config.model (loras as
  ((path, scale), ...)); mesh: a device mesh (ltx_jax.sharding.make_mesh) or None for one
  device."""
  import jax.numpy as jnp
  dt = getattr(jnp, dtype)
  te_dtype = getattr(jnp, text_encoder_dtype or dtype)
  if source == config_lib.SMOKE:
    from ltx_jax import smoke
    pipe = smoke.build_pipeline(dtype=dt, text_encoder_dtype=te_dtype, attention=attention,
                                mesh=mesh, context_attention=context_attention,
                                loras=list(loras), lora_strict=lora_strict)
    return pipe, {
        'kind': 'smoke', 'note': 'random-weight plumbing check (ltx_jax.smoke), not a model',
        'files': []}
  from ltx_jax.pipeline import LTXPipeline
  pipe = LTXPipeline.from_pretrained(os.path.expanduser(source), dt, file=file or None,
                                     release=release or None, allow_custom=allow_custom,
                                     text_encoder_dtype=te_dtype,
                                     attention=attention, offline=True if offline else None,
                                     mesh=mesh, context_attention=context_attention,
                                     param_dtype=param_dtype or None, matmul=matmul,
                                     allow_nonfinite=allow_nonfinite, loras=list(loras),
                                     lora_strict=lora_strict)
  ms = pipe.source
  logging.info("source: %s (%s), release %s", ms.root, ms.kind, ms.release.name)
  if ms.vae_override:
    logging.info("VAE: %s overrides the single file's own VAE", ms.vae)
  files = [{'path': str(f), 'bytes': f.stat().st_size,
            'sha256': file_sha256(f) if hash_files else None} for f in ms.files()]
  return pipe, {'kind': ms.kind, 'root': str(ms.root), 'hub_repo': ms.hub_repo,
                'vae_override': str(ms.vae) if ms.vae_override else None, 'files': files}


def load_pipeline(c):
  """load_model with config.model's values, on config.mesh's mesh."""
  m = c.model
  return load_model(m.source, file=config_lib.model_file(c), release=m.release, dtype=m.dtype,
                    text_encoder_dtype=m.text_encoder_dtype, attention=m.attention,
                    offline=m.offline, hash_files=m.hash_files, mesh=config_mesh(c),
                    context_attention=c.mesh.context_attention, param_dtype=m.param_dtype,
                    matmul=m.matmul, allow_nonfinite=m.allow_nonfinite,
                    loras=config_lib.loras(c), lora_strict=c.lora_strict,
                    allow_custom=m.allow_custom)


def load_upsampler(c, pipe, source: dict):
  """The multi-scale recipe's latent upsampler (config.model.upsampler, else the one beside the
  model, else for hub sources the preset's upscaler file from the same repo); its file goes
  into the source facts."""
  from ltx_jax import load_latent_upsampler, presets
  m = c.model
  if m.source == config_lib.SMOKE and not m.upsampler:  # random weights, as the smoke model
    from flax import nnx
    from ltx_jax import smoke
    from ltx_jax.models.upsampler import LatentUpsampler, UpsamplerConfig
    return LatentUpsampler(UpsamplerConfig(in_channels=smoke.LATENT, mid_channels=32,
                                           num_blocks_per_stage=1), rngs=nnx.Rngs(0))
  path = Path(os.path.expanduser(m.upsampler)) if m.upsampler else None
  ms = pipe.source
  if path is None and ms is not None:
    path = ms.latent_upsampler
    if path is None and ms.hub_repo:
      from ltx_jax.sources.resolve import fetch_from_hub
      name = (presets.get(c.preset).upsampler if c.preset in presets.PRESETS else None) or \
          f"ltxv-spatial-upscaler-{ms.release.version}.safetensors"
      path = fetch_from_hub(ms.hub_repo, name, offline=True if m.offline else None) / name
  if path is None:
    raise UsageError("config.multi_scale=True needs a latent upsampler: none was found beside "
                     f"the model {m.source!r}; pass --config.model.upsampler=PATH "
                     "(ltxv-spatial-upscaler-*.safetensors) or --config.multi_scale=False")
  if not path.exists():
    raise UsageError(f"config.model.upsampler={m.upsampler!r}: no such file or folder")
  import jax.numpy as jnp
  upsampler = load_latent_upsampler(path, dtype=getattr(jnp, m.dtype), mesh=pipe.mesh)
  files = sorted(path.rglob('*')) if path.is_dir() else [path]
  source['files'] = source['files'] + [
      {'path': str(f), 'bytes': f.stat().st_size,
       'sha256': file_sha256(f) if m.hash_files else None} for f in files if f.is_file()]
  return upsampler


def config_mesh(c):
  """config.mesh's mesh over the devices of this run (None: one device); sizes that do not fit
  the devices are a UsageError naming config.mesh. Needs JAX's devices, so it runs after the
  config checks and the distributed start."""
  from ltx_jax import sharding
  try:
    return sharding.mesh_from_config(c.mesh)
  except UsageError as e:
    raise UsageError(f"config.{e}") from None


def file_sha256(path: Path) -> str:
  """sha256 of a file; free for hub-cache blobs (named by their hash), cached per
  (path, size, mtime) otherwise, since weight files are large."""
  real = Path(path).resolve()
  if real.parent.name == 'blobs' and len(real.name) == 64:
    return real.name
  st = real.stat()
  cache_file = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'ltx_jax' / \
      'sha256.json'
  key = f"{real}:{st.st_size}:{st.st_mtime_ns}"
  try:
    cache = json.loads(cache_file.read_text())
  except (OSError, ValueError):
    cache = {}
  if key not in cache:
    cache[key] = sha256(real)
    try:
      cache_file.parent.mkdir(parents=True, exist_ok=True)
      cache_file.write_text(json.dumps(cache))
    except OSError:
      pass
  return cache[key]


# -------------------------------------------------------------------------------------- run


def devices() -> list[str]:
  import jax
  return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]


def _delta(before: dict, after: dict) -> dict:
  return {part: {k: round(v - before[part].get(k, 0.0), 4) for k, v in after[part].items()
                 if k != 'load'} for part in after}


def mesh_facts(pipe) -> dict | None:
  """The pipeline's mesh as the sidecar records it; None on one device."""
  p = pipe.partitioning
  if p is None:
    return None
  return {'shape': {k: int(v) for k, v in p.mesh.shape.items()},
          'devices': int(p.mesh.devices.size), 'context_attention': p.context_attention}


def sidecar(c, job, pipe, source: dict, stages, before: dict, outputs: list[Path],
            kwargs: dict, skipped_steps: int = 0) -> dict:
  import jax
  import ltx_jax
  from ltx_jax.pipeline import conditioning, guides
  return {
      'prompt': job.prompt, 'negative_prompt': c.negative_prompt, 'seed': job.seed,
      'image': c.image or None,
      'conditions': conditioning.describe(config_lib.conditions(c), c.condition_preprocessing,
                                          c.image_cond_noise_scale),
      'input_video': ({'path': c.input_video, 'denoise_strength': c.denoise_strength,
                       'preprocessing': c.condition_preprocessing} if c.input_video else None),
      'control': ({'guides': guides.describe(config_lib.guides(c))}
                  if c.control_video else None),
      'release': {'detected': pipe.release, 'preset': c.preset or None},
      'source': source, 'pipeline_kwargs': kwargs, 'config': c.to_dict(),
      'loras': [dataclasses.asdict(a) for a in pipe.lora_adapters],
      'passes': _passes(c, kwargs),
      'cache': {'kind': c.cache.kind or None, 'threshold': c.cache.threshold,
                'skipped_steps': skipped_steps},
      'devices': devices(), 'mesh': mesh_facts(pipe),
      'timings': {'this_video': _delta(before, stages.snapshot()), 'run': stages.snapshot()},
      'outputs': [str(p) for p in outputs],
      'versions': {'ltx_jax': ltx_jax.__version__, 'jax': jax.__version__,
                   'python': platform.python_version()},
      'command': sys.argv,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


def _passes(c, kwargs: dict) -> dict:
  """Which mode ran, for the sidecar: one pass at the size, or the two multi-scale passes
  (their sizes and arguments)."""
  if not c.multi_scale:
    return {'mode': 'single-pass', 'size': [c.height, c.width]}
  from ltx_jax.sampling.latent_ops import first_pass_size
  h1, w1 = first_pass_size(c.height, c.width, c.downscale_factor)
  return {'mode': 'multi-scale', 'downscale_factor': c.downscale_factor,
          'upsampler': c.model.upsampler or None,
          'first_pass': dict(kwargs['first_pass'], size=[h1, w1]),
          'second_pass': dict(kwargs['second_pass'], size=[2 * h1, 2 * w1]),
          'output_size': [c.height, c.width]}


def run(c, *, loaded: Callable[[Any, dict], None] | None = None) -> list[Path]:
  """Generates every (prompt, seed) video of config `c`; returns the mp4 paths.

  loaded: called with (the LTXPipeline, its source facts) once the model is loaded, before any
  generation (for tests and notebooks that inspect what the CLI built).
  """
  plan = config_lib.check(c)  # before anything loads or compiles
  preflight.check(c)  # what the files' metadata rules out, before any weight loads
  from ltx_jax import distributed
  d = c.distributed
  distributed.initialize(d.coordinator or None, d.num_processes or None,
                         None if d.process_id < 0 else d.process_id, auto=d.auto)
  main = distributed.is_main_process()  # every process computes, process 0 writes
  from ltx_jax import video_io
  from ltx_jax.cli import timing
  stages = timing.Stages()
  made: list[Path] = []  # output folders this run created: removed again if it fails unwritten
  try:
    logging.info("devices: %s", ', '.join(devices()))
    with stages('load'):
      pipe, source = load_pipeline(c)
      generate = pipe
      if c.multi_scale:
        from ltx_jax.pipeline import LTXMultiScalePipeline
        generate = LTXMultiScalePipeline(pipe, load_upsampler(c, pipe, source))
    pipe.timer = stages  # text / image encoding, denoise and decode are its stages
    if loaded is not None:
      loaded(pipe, source)
    kwargs = config_lib.multi_scale_kwargs(c) if c.multi_scale else pipeline_kwargs(c)
    cache = config_lib.step_cache(c)
    items = config_lib.conditions(c)  # image (frame 0) and conditions
    control = config_lib.guides(c)  # the IC-LoRA control video
    if c.input_video:  # single pass only (config.check refuses it with multi_scale)
      kwargs['video'] = os.path.expanduser(c.input_video)
    if c.long_video.enabled:  # temporal sliding windows; config.image is the cond_image
      from ltx_jax.pipeline import LTXLongVideoPipeline
      generate, kwargs = LTXLongVideoPipeline(pipe), config_lib.long_video_kwargs(c)
    logging.info("model: %s; %d prompt(s) x %d seed(s) at %dx%d, %d frames%s",
                 pipe.release, len({j.prompt for j in plan.jobs}), len(c.seeds), c.width,
                 c.height, c.num_frames,
                 '' if pipe.mesh is None else f"; mesh {dict(pipe.mesh.shape)}")
    written = []
    for job in plan.jobs:
      before = stages.snapshot()
      if c.long_video.enabled:
        per_call = {'cond_image': os.path.expanduser(c.image) if c.image else None}
      else:
        per_call = {'conditions': items or None, 'cache': cache, 'guides': control or None}
      out = generate(prompt=job.prompt, seed=job.seed,
                     progress=c.progress and sys.stderr.isatty(), **kwargs, **per_call)
      frames = out.frames[0]  # [F, H, W, 3] uint8
      paths = job.paths(c)
      if not main:
        written.append(paths[0])
        continue
      published: list[Path] = []  # this video's files: all of them or none
      try:
        with stages('write'):
          made += video_io.make_folder(paths[0].parent)  # made only when there is output
          published.append(video_io.write_mp4(paths[0], frames, c.frame_rate, crf=c.crf,
                                              overwrite=c.overwrite))
          extra = paths[2:]
          for p in extra:
            if p.suffix == '.gif':
              published.append(video_io.write_gif(p, frames, c.frame_rate, overwrite=c.overwrite))
            else:
              published.append(video_io.write_pngs(p, frames, overwrite=c.overwrite))
        published.append(video_io.write_json(
            paths[1], sidecar(c, job, pipe, source, stages, before, [paths[0], *extra], kwargs,
                               out.skipped_steps),
            overwrite=c.overwrite))
      except BaseException:
        video_io.remove(published)
        raise
      logging.info("wrote %s (prompt %d, seed %d)", paths[0], job.index, job.seed)
      written.append(paths[0])
    logging.info("stages: %s", stages.summary())
    return written
  except BaseException:  # a refused, failed or interrupted run leaves no empty output folder
    video_io.remove_empty(made)
    raise
  finally:
    stages.close()
