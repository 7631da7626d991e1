"""One generation run: check the config, load the model once, make every (prompt, seed) video.

All (prompt, seed) jobs share shapes, so the jitted text encoder, denoising loop and decoder
compile once and are reused. Each video gets an mp4 (optionally a GIF and PNG frames) and a JSON
sidecar with the resolved config, seed, release, source files (with hashes), devices and
stage timings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from absl import logging

from ltx_jax.cli import config as config_lib
from ltx_jax.cli import preflight
from ltx_jax.cli.config import pipeline_kwargs
from ltx_jax.errors import UsageError
from ltx_jax.sources.resolve import sha256

# ------------------------------------------------------------------------------------ noise


def quiet_libraries() -> None:
  """JAX's own INFO lines (backend probing such as "Unable to initialize backend 'tpu'", cache
  resets) off; its warnings stay. Call before JAX starts its backends."""
  import logging as std_logging
  std_logging.getLogger('jax').setLevel(std_logging.WARNING)


# ---------------------------------------------------------------------------------- signals


class Interrupted(BaseException):
  """SIGINT or SIGTERM arrived: raised where the run is, so every stage's cleanup runs (no
  temporary or half-written file, no empty folder); the CLI then exits 128 + the signal's
  number with one line. A BaseException, as KeyboardInterrupt, so no `except Exception`
  swallows it."""

  def __init__(self, signum: int):
    self.signum = signum
    super().__init__(f"interrupted by {signal.Signals(signum).name}; nothing was left half-written")

  @property
  def status(self) -> int:
    return 128 + self.signum


@contextlib.contextmanager
def interrupts_raise():
  """Within the block SIGINT and SIGTERM raise `Interrupted` (once: a second signal during the
  cleanup is ignored); the handlers before are restored after."""
  signums = (signal.SIGINT, signal.SIGTERM)

  def handler(signum, _frame):
    for s in signums:
      signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)

  before = {s: signal.signal(s, handler) for s in signums}
  try:
    yield
  finally:
    for s, h in before.items():
      signal.signal(s, h)


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
  model, else for hub sources the preset's upscaler file from the same repo); its path goes
  into the source facts ('upsampler') and its files into their list (once)."""
  from ltx_jax import load_latent_upsampler, presets
  m = c.model
  if m.source == config_lib.SMOKE and not m.upsampler:  # random weights, as the smoke model
    source['upsampler'] = 'random weights (ltx_jax.smoke)'
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
  source['upsampler'] = str(path)
  files = sorted(path.rglob('*')) if path.is_dir() else [path]
  listed = {Path(f['path']).resolve() for f in source['files']}
  source['files'] = source['files'] + [
      {'path': str(f), 'bytes': f.stat().st_size,
       'sha256': file_sha256(f) if m.hash_files else None}
      for f in files if f.is_file() and f.resolve() not in listed]
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
    start = time.perf_counter()
    logging.info("hashing %s (%.2f GB)...", real.name, st.st_size / 1e9)
    cache[key] = sha256(real)
    logging.info("hashed %s in %.1f s", real.name, time.perf_counter() - start)
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
            kwargs: dict, out, video: dict) -> dict:
  """The JSON written beside each video. out: the pipeline's output (schedule, windows, cache
  skips); video: what the mp4 holds (frames, size, fps, bytes)."""
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
      'loras': lora_facts(pipe),
      'passes': _passes(c, kwargs, source, out),
      'schedule': {'sigmas': [list(s) for s in out.sigmas]},
      'cache': {'kind': c.cache.kind or None, 'threshold': c.cache.threshold,
                'skipped_steps': out.skipped_steps},
      'devices': devices(), 'mesh': mesh_facts(pipe),
      'peak_device_bytes': peak_device_bytes(),
      'timings': {'this_video': _delta(before, stages.snapshot()), 'run': stages.snapshot()},
      'video': video,
      'outputs': [str(p) for p in outputs],
      'versions': versions(),
      'command': command(),
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


def lora_facts(pipe) -> list[dict]:
  """The LoRAs in the transformer: those applied at load or run time (with the tensors each
  changed: 0 when lora_strict=False skipped them all, which is not applied), and those a
  converted checkpoint has merged into its weights ('baked_in')."""
  facts = [dict(dataclasses.asdict(a), baked_in=False, applied=a.modules_applied != 0)
           for a in pipe.lora_adapters]
  ms = pipe.source
  if ms is not None and ms.kind == 'orbax':
    from ltx_jax.weights.orbax_io import read_manifest
    _, manifest = read_manifest(ms.root)
    entry = manifest.get('components', {}).get('transformer', {})
    facts += [dict(a, baked_in=True) for a in entry.get('loras', [])]
  return facts


def peak_device_bytes() -> int | None:
  """The largest peak memory in use on this process's devices (None where the backend does not
  say, e.g. the CPU)."""
  import jax
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in jax.local_devices()]
  peaks = [int(p) for p in peaks if p is not None]
  return max(peaks) if peaks else None


def versions() -> dict:
  """ltx_jax, JAX, jaxlib, Flax, Python and (on GPUs) CUDA versions."""
  import importlib.metadata
  import jax
  import jaxlib
  import ltx_jax
  out = {'ltx_jax': ltx_jax.__version__, 'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
         'flax': importlib.metadata.version('flax'), 'python': platform.python_version(),
         'cuda': None}
  if any(d.platform == 'gpu' for d in jax.devices()):
    try:
      from jax._src.lib import cuda_versions  # no public query of the CUDA runtime
      v = cuda_versions.cuda_runtime_get_version()
      out['cuda'] = f"{v // 1000}.{v % 1000 // 10}"
    except (ImportError, AttributeError):
      out['cuda'] = 'unknown'
  return out


def command() -> list[str]:
  """The command as typed, without this machine's paths: `python -m ltx_jax.generate ...`
  when run as the module."""
  argv = list(sys.argv)
  here = Path(__file__).resolve().parents[1] / 'generate.py'
  if argv and Path(argv[0]).resolve() == here:
    return ['python', '-m', 'ltx_jax.generate', *argv[1:]]
  if argv:
    argv[0] = os.path.basename(argv[0])
  return argv


def _passes(c, kwargs: dict, source: dict, out) -> dict:
  """Which mode ran, for the sidecar: one pass at the size, the windows of a long video, or the
  two multi-scale passes (their sizes and arguments, the upsampler used)."""
  if c.long_video.enabled:
    return {'mode': 'long-video', 'size': [c.height, c.width],
            'temporal_tile_size': c.long_video.temporal_tile_size,
            'temporal_overlap': c.long_video.temporal_overlap,
            'windows_latent_frames': [list(w) for w in out.windows]}
  if not c.multi_scale:
    return {'mode': 'single-pass', 'size': [c.height, c.width]}
  from ltx_jax.sampling.latent_ops import first_pass_size
  h1, w1 = first_pass_size(c.height, c.width, c.downscale_factor)
  return {'mode': 'multi-scale', 'downscale_factor': c.downscale_factor,
          'upsampler': source.get('upsampler'),
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
    logging.info("loading %s...", c.model.source)
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
    for k, job in enumerate(plan.jobs, 1):
      logging.info("video %d/%d: prompt %d, seed %d", k, len(plan.jobs), job.index, job.seed)
      before = stages.snapshot()
      if c.long_video.enabled:
        per_call = {'cond_image': os.path.expanduser(c.image) if c.image else None}
      else:
        per_call = {'conditions': items or None, 'cache': cache, 'guides': control or None}
      out = generate(prompt=job.prompt, seed=job.seed, progress=c.progress, **kwargs,
                     **per_call)
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
        video = {'frames': int(frames.shape[0]), 'height': int(frames.shape[1]),
                 'width': int(frames.shape[2]), 'fps': c.frame_rate,
                 'bytes': paths[0].stat().st_size}
        published.append(video_io.write_json(
            paths[1], sidecar(c, job, pipe, source, stages, before, [paths[0], *extra], kwargs,
                               out, video),
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
