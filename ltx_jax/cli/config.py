"""The generation config (ml_collections) and its checks, which run before any model loads.

`base_config(preset)` is what configs/t2v.py and configs/i2v.py return. `check(config)` refuses
bad values with a `UsageError` whose message is one line, and returns the `Plan`: the prompts,
seeds and output paths of the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from pathlib import Path

import ml_collections

from ltx_jax.errors import UsageError
from ltx_jax.cli import presets
from ltx_jax.sources.resolve import HUB_ID

DTYPES = ('float32', 'bfloat16', 'float16')
TASKS = ('t2v', 'i2v')
SMOKE = 'smoke'  # model.source naming ltx_jax.smoke's random-weight plumbing model


def base_config(preset: str = presets.DEFAULT) -> ml_collections.ConfigDict:
  """Defaults of every key, then the named release preset's sampling values."""
  c = ml_collections.ConfigDict()
  c.task = 't2v'
  c.preset = preset
  c.prompt = 'A red fox trots through fresh snow in a quiet birch forest at dawn, soft light.'
  c.prompt_file = ''  # one prompt per line (blank lines and lines starting with # skipped)
  c.negative_prompt = presets.NEGATIVE
  c.image = ''  # i2v: the first frame (path)
  c.seeds = (171198,)
  c.output_dir = 'outputs'
  c.overwrite = False
  c.save_png = False
  c.save_gif = False
  c.crf = 17  # H.264 quality (0 lossless .. 51 worst)
  # Denoising progress bar, on a terminal only. It is a host callback inside the loop, which
  # keeps the loop out of the persistent compilation cache: False makes warm starts faster.
  c.progress = True

  c.model = ml_collections.ConfigDict()
  c.model.source = presets.HUB_REPO  # folder, file, converted checkpoint, hub id, or 'smoke'
  c.model.file = ''  # the official .safetensors inside a folder / hub repo
  c.model.release = ''  # name it (e.g. 'ltxv-2b-0.9.6-dev') when files cannot tell
  c.model.dtype = 'bfloat16'
  c.model.text_encoder_dtype = ''  # default: model.dtype
  c.model.attention = 'auto'
  c.model.offline = False  # hub: only the local cache
  c.model.hash_files = True  # sha256 of the weight files into the sidecar (cached per file)

  # Device mesh (docs/sharding.md): sizes of the (data, fsdp, tensor, context) axes, one of them
  # may be -1 (the rest of the devices); all 1 on one device.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.context = 1
  c.mesh.context_attention = 'allgather'  # or 'ring': self-attention over the context axis
  # Multi-host (one process per host); empty / 0 / -1: from JAX_COORDINATOR_ADDRESS,
  # JAX_NUM_PROCESSES, JAX_PROCESS_ID, else a single process. auto: JAX's cluster detection.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator = ''
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  c.distributed.auto = False

  # LTXPipeline.__call__ arguments (diffusers' names; timesteps on the 0..1000 scale).
  c.height = 704
  c.width = 1216
  c.num_frames = 121
  c.frame_rate = 30.0
  c.num_inference_steps = 40
  c.timesteps = ()  # non-empty: an explicit schedule that replaces num_inference_steps
  c.guidance_scale = 3.0
  c.guidance_rescale = 0.0
  c.stg_scale = 0.0
  c.stg_rescale = 0.7
  c.skip_block_list = ()
  c.skip_layer_strategy = 'attention_values'
  c.cfg_star_rescale = False
  # Per-interval guidance (official 13B dev configs): non-empty guidance_timesteps replaces the
  # constant values above by one entry per interval from the *_schedule tuples.
  c.guidance_timesteps = ()
  c.guidance_scale_schedule = ()
  c.stg_scale_schedule = ()
  c.stg_rescale_schedule = ()
  c.skip_block_schedule = ()
  c.decode_timestep = 0.05
  c.decode_noise_scale = 0.025
  c.max_sequence_length = 256
  c.stochastic_sampling = False
  if preset:
    override(c, presets.get(preset))
  return c


def override(c: ml_collections.ConfigDict, values: dict) -> None:
  for k, v in values.items():
    if isinstance(v, dict):
      override(c[k], v)
    else:
      c[k] = v


@dataclasses.dataclass(frozen=True)
class Job:
  """One video: a prompt, a seed and where its files go."""
  index: int
  prompt: str
  seed: int
  stem: Path  # output path without suffix

  def paths(self, config) -> list[Path]:
    out = [self.stem.with_suffix('.mp4'), self.stem.with_suffix('.json')]
    if config.save_gif:
      out.append(self.stem.with_suffix('.gif'))
    if config.save_png:
      out.append(self.stem.parent / (self.stem.name + '_frames'))
    return out


@dataclasses.dataclass(frozen=True)
class Plan:
  jobs: list[Job]
  compression: tuple[int, int]  # (temporal, spatial) of the model's VAE


def _fail(msg: str):
  raise UsageError(msg)


def _number(c, key: str, lo: float | None = 0.0, hi: float | None = None) -> None:
  v = c[key]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
      lo is not None and v < lo) or (hi is not None and v > hi):
    bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
    _fail(f"config.{key}={v!r} must be a finite number {bounds}")


def slug(text: str, n: int = 40) -> str:
  s = re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:n].strip('-')
  return s or 'video'


def read_prompts(c) -> list[str]:
  if not c.prompt_file:
    if not c.prompt.strip():
      _fail("config.prompt is empty; pass --config.prompt='...' or --config.prompt_file=FILE")
    return [c.prompt]
  try:
    lines = Path(c.prompt_file).expanduser().read_text(encoding='utf-8').splitlines()
  except (OSError, UnicodeDecodeError) as e:
    _fail(f"cannot read config.prompt_file={c.prompt_file!r}: {e.__class__.__name__}: {e}")
  prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith('#')]
  if not prompts:
    _fail(f"config.prompt_file={c.prompt_file!r} holds no prompts (one per line)")
  return prompts


def model_compression(c) -> tuple[int, int]:
  """(temporal, spatial) compression of the configured model, from configs only. Every
  released VAE (and the smoke model) is (8, 32); local diffusers folders are read."""
  if c.model.source == SMOKE:
    from ltx_jax import smoke
    return smoke.VAE.temporal_compression, smoke.VAE.spatial_compression
  vae_cfg = Path(c.model.source).expanduser() / 'vae' / 'config.json'
  if vae_cfg.is_file():
    from ltx_jax.models.vae import VAEConfig
    cfg = VAEConfig.from_diffusers(json.loads(vae_cfg.read_text()))
    return cfg.temporal_compression, cfg.spatial_compression
  return 8, 32


def check_model_source(c) -> None:
  """A local path must exist; anything else must look like a hub repo id."""
  src = c.model.source
  if src == SMOKE:
    return
  if not src:
    _fail("config.model.source is empty; pass a folder, file or hub repo id (or 'smoke')")
  path = Path(src).expanduser()
  if path.exists():
    if c.model.file and path.is_dir() and not (path / c.model.file).is_file():
      _fail(f"config.model.file={c.model.file!r} is not in {path}")
    return
  if not HUB_ID.match(src):
    _fail(f"config.model.source={src!r}: no such file or folder (nor a hub repo id owner/name)")


def check_output_dir(c) -> Path:
  out = Path(c.output_dir).expanduser()
  try:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix='.write-check-'):
      pass
  except OSError as e:
    _fail(f"cannot write to config.output_dir={c.output_dir!r}: {e.strerror or e}")
  return out


def check_image(c) -> None:
  if c.task == 'i2v' and not c.image:
    _fail("config.image is empty; image-to-video needs --config.image=PATH")
  if c.image:
    from ltx_jax.pipeline.inputs import load_image
    try:
      load_image(os.path.expanduser(c.image))
    except ValueError as e:
      _fail(f"config.image: {e}")


def check_guidance(c) -> None:
  _number(c, 'guidance_scale', 0.0)
  _number(c, 'guidance_rescale', 0.0, 1.0)
  _number(c, 'stg_scale', 0.0)
  _number(c, 'stg_rescale', 0.0, 1.0)
  n = len(c.guidance_timesteps)
  for key in ('guidance_scale_schedule', 'stg_scale_schedule', 'stg_rescale_schedule',
              'skip_block_schedule'):
    if n and len(c[key]) not in (0, n):
      _fail(f"config.{key} has {len(c[key])} entries; config.guidance_timesteps has {n}")
  if any(not 0 < t <= 1000 for t in c.guidance_timesteps):
    _fail(f"config.guidance_timesteps={tuple(c.guidance_timesteps)} must lie in (0, 1000]")


def check_mesh(c) -> None:
  from ltx_jax.sharding import CONTEXT_ATTENTION, MESH_AXES
  sizes = [c.mesh[a] for a in MESH_AXES]
  if (not all(isinstance(s, int) and not isinstance(s, bool) and (s >= 1 or s == -1)
              for s in sizes) or sizes.count(-1) > 1):
    _fail(f"config.mesh sizes {dict(zip(MESH_AXES, sizes))} must be integers >= 1, at most one "
          "of them -1 (the rest of the devices)")
  if c.mesh.context_attention not in CONTEXT_ATTENTION:
    _fail(f"config.mesh.context_attention={c.mesh.context_attention!r}; choose one of "
          f"{', '.join(CONTEXT_ATTENTION)}")


def check(c) -> Plan:
  """Every check that needs no model: a UsageError (one line) for the first problem found."""
  check_mesh(c)
  if c.task not in TASKS:
    _fail(f"config.task={c.task!r}; choose one of {', '.join(TASKS)}")
  if c.model.dtype not in DTYPES or c.model.text_encoder_dtype not in DTYPES + ('',):
    _fail(f"config.model.dtype={c.model.dtype!r} / text_encoder_dtype="
          f"{c.model.text_encoder_dtype!r}; choose from {', '.join(DTYPES)}")
  check_model_source(c)
  tc, sc = model_compression(c)
  from ltx_jax.pipeline.inputs import check_video_size
  try:
    check_video_size(c.height, c.width, c.num_frames, sc, tc)
  except ValueError as e:
    _fail(f"config.{e}")
  _number(c, 'frame_rate', 1e-3)
  _number(c, 'decode_timestep', 0.0, 1.0)
  _number(c, 'decode_noise_scale', 0.0, 1.0)
  check_guidance(c)
  if not c.timesteps and c.num_inference_steps < 1:
    _fail(f"config.num_inference_steps={c.num_inference_steps} must be >= 1")
  t = list(c.timesteps)
  if t and (any(not 0 < x <= 1000 for x in t) or any(b >= a for a, b in zip(t, t[1:]))):
    _fail(f"config.timesteps={tuple(t)} must be strictly decreasing in (0, 1000]")
  if c.max_sequence_length < 1:
    _fail(f"config.max_sequence_length={c.max_sequence_length} must be >= 1")
  if not 0 <= c.crf <= 51:
    _fail(f"config.crf={c.crf} must be in [0, 51]")
  seeds = c.seeds if isinstance(c.seeds, (tuple, list)) else (c.seeds,)
  if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                          for s in seeds):
    _fail(f"config.seeds={c.seeds!r} must be a non-empty tuple of integers >= 0, "
          "e.g. --config.seeds='(1,2,3)'")
  check_image(c)
  prompts = read_prompts(c)
  out = check_output_dir(c)
  jobs = [Job(i, p, int(s), out / f"{i:03d}-{slug(p)}-seed{s}")
          for i, p in enumerate(prompts) for s in seeds]
  if not c.overwrite:
    taken = [p for j in jobs for p in j.paths(c) if p.exists()]
    if taken:
      _fail(f"{taken[0]} exists (and {len(taken) - 1} more); pass --config.overwrite=True "
            "or another --config.output_dir" if len(taken) > 1 else
            f"{taken[0]} exists; pass --config.overwrite=True or another --config.output_dir")
  return Plan(jobs, (tc, sc))
