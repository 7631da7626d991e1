"""The generation config (ml_collections) and its checks, which run before any model loads.

`base_config(preset)` is what configs/t2v.py and configs/i2v.py return. `check(config)` refuses
bad values with a `UsageError` whose message is one line, and returns the `Plan`: the prompts,
seeds and output paths of the run.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import re
import tempfile
from pathlib import Path

import ml_collections

from ltx_jax import checks, presets
from ltx_jax.errors import LTXError, UsageError
from ltx_jax.sources.resolve import HUB_ID

DTYPES = ('float32', 'bfloat16', 'float16')
TASKS = ('t2v', 'i2v', 'keyframes', 'extend', 'v2v', 'control')
SMOKE = 'smoke'  # model.source naming ltx_jax.smoke's random-weight plumbing model


def base_config(preset: str = presets.DEFAULT) -> ml_collections.ConfigDict:
  """Defaults of every key, then the named release preset's sampling values."""
  c = ml_collections.ConfigDict()
  c.task = 't2v'
  c.preset = preset
  c.prompt = 'A red fox trots through fresh snow in a quiet birch forest at dawn, soft light.'
  c.prompt_file = ''  # one prompt per line (blank lines and lines starting with # skipped)
  c.negative_prompt = presets.NEGATIVE
  c.image = ''  # i2v: the first frame (path); shorthand for conditions=('PATH:0',)
  # Conditioning items 'PATH:FRAME[:STRENGTH]' (an image, or a video of 8N+1 frames by its
  # suffix), e.g. ('first.png:0', 'last.png:120') or ('clip.mp4:0',); strength 1 by default.
  c.conditions = ()
  c.condition_preprocessing = 'official'  # 'official' (blur + CRF 29), 'diffusers', 'none'
  c.image_cond_noise_scale = 0.15  # noise on hard-conditioned tokens (0: none)
  c.input_video = ''  # v2v: the video to re-render (path)
  c.denoise_strength = 1.0  # v2v: the share of the schedule run on it (below 1)
  # LoRA adapters merged into the transformer (IC-LoRA control models too): a path, or
  # '((path, scale), ...)' with scales of any sign; lora_strict=False skips (with a warning)
  # LoRA modules that match no layer instead of refusing the file.
  c.loras = ''
  c.lora_strict = True
  # IC-LoRA control (ltx_jax.Guide): a reference video of 8N+1 frames (depth / pose / canny
  # maps, any clip) or an image, appended as guiding tokens; its LoRA is loaded with the model.
  c.control_video = ''
  c.control_strength = 1.0  # 1: kept as encoded; below 1: noised to 1 - strength at first
  c.control_frame = 0  # the video frame its first frame lands on (negative: from the end)
  c.seeds = (171198,)
  c.output_dir = 'outputs'
  c.overwrite = False
  c.save_png = False
  c.save_gif = False
  c.crf = 17  # H.264 quality (0 lossless .. 51 worst)
  # Denoising progress: a bar on a terminal, log lines (step, rate, ETA) otherwise. The loop
  # then runs one compiled step per call (ltx_jax/sampling/progress.py), cached as the scan.
  c.progress = True
  # Print the resolved config and every file the run would read (model, text encoder,
  # tokenizer, upsampler, LoRAs, inputs), then stop: nothing loads, compiles or is written.
  c.dry_run = False

  c.model = ml_collections.ConfigDict()
  c.model.source = presets.HUB_REPO  # folder, file, converted checkpoint, hub id, or 'smoke'
  # The official .safetensors inside a folder / hub repo. The presets name theirs; a diffusers
  # folder or a converted checkpoint without that file is read as it is (model_file()).
  # Empty: the one official file of a single-file folder.
  c.model.file = ''
  c.model.release = ''  # name it (e.g. 'ltxv-2b-0.9.6-dev') when files cannot tell
  # Accept a transformer shape of no release (a custom or tiny test model) as release
  # 'custom' (the same as model.release='custom').
  c.model.allow_custom = False
  c.model.dtype = 'bfloat16'
  c.model.text_encoder_dtype = ''  # default: model.dtype
  c.model.attention = 'auto'
  # Transformer weight storage ('' = model.dtype; 'fp8' as the official -fp8 files) and matmuls
  # ('fp8': fp8 x fp8 GEMMs on fp8 weights, fast on GPUs with fp8 tensor cores).
  c.model.param_dtype = ''
  c.model.matmul = 'default'
  c.model.offline = False  # hub: only the local cache
  c.model.hash_files = True  # sha256 of the weight files into the sidecar (cached per file)
  # The multi-scale recipe's latent upsampler: an official ltxv-spatial-upscaler-*.safetensors
  # or a diffusers latent_upsampler/ folder. Empty: the one beside the model, else (hub
  # sources) the preset's upscaler file from the same hub repo.
  c.model.upsampler = ''
  c.model.allow_nonfinite = False  # load weights holding NaN / Inf (refused by default)

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
  c.long_video = long_video_config()
  # Multi-scale (LTXMultiScalePipeline, the official recipe of every 0.9.7 / 0.9.8 release): a
  # first pass at downscale_factor of the size, the latent upsampler, a second pass at twice the
  # first pass's size, frames resized to height x width. first_pass / second_pass hold each
  # pass's schedule and guidance (LTXPipeline argument names; the keys the preset sets), and
  # replace the single-pass values above. False: one pass at the full size with those values.
  c.multi_scale = False
  c.downscale_factor = 0.6666666
  c.first_pass = ml_collections.ConfigDict()
  c.second_pass = ml_collections.ConfigDict()
  # Step cache (ltx_jax/sampling/cache.py): '' none, 'first_block' (diffusers' First Block
  # Cache) or 'teacache'; a higher threshold skips more steps.
  c.cache = ml_collections.ConfigDict()
  c.cache.kind = ''
  c.cache.threshold = 0.05
  if preset:
    override(c, preset_values(preset))
  return c


# Per-interval guidance: the LTXPipeline argument -> the config key holding its list.
SCHEDULE_KEYS = {'guidance_scale': 'guidance_scale_schedule', 'stg_scale': 'stg_scale_schedule',
                 'stg_rescale': 'stg_rescale_schedule', 'skip_block_list': 'skip_block_schedule'}


def preset_values(name: str) -> dict:
  """A release preset (ltx_jax.presets) as config values: its checkpoint file in the hub repo,
  and its sampling arguments under their config keys (an explicit schedule sets `timesteps`;
  per-interval guidance lists go to the *_schedule keys)."""
  p = presets.get(name)
  values = {'model': {'source': presets.HUB_REPO, 'file': p.file}}
  if p.multi_scale is not None:
    values.update(multi_scale=True, downscale_factor=p.multi_scale['downscale_factor'],
                  first_pass=dict(p.multi_scale['first_pass']),
                  second_pass=dict(p.multi_scale['second_pass']))
  per_interval = 'guidance_timesteps' in p.sampling
  for k, v in p.sampling.items():
    if k == 'timesteps':
      values['num_inference_steps'] = len(v)
    if per_interval and k in SCHEDULE_KEYS:
      values[SCHEDULE_KEYS[k]] = v
    else:
      values[k] = v
  return values


def override(c: ml_collections.ConfigDict, values: dict) -> None:
  for k, v in values.items():
    if isinstance(v, dict) and k in c:
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


def model_file(c) -> str:
  """The official file to read from config.model.source ('' : detect the layout).

  The presets name their release's file for the hub repo. A local diffusers folder or
  converted checkpoint has no such file: the preset's file is then dropped (the folder is
  read as it is); a file the user named must be there."""
  from ltx_jax.sources.resolve import is_whole_source_folder
  file, path = c.model.file, Path(c.model.source).expanduser()
  if not file or c.model.source == SMOKE or not path.is_dir() or (path / file).is_file():
    return file
  preset_file = presets.get(c.preset).file if c.preset in presets.PRESETS else None
  if file == preset_file and is_whole_source_folder(path):
    return ''
  official = sorted(p.name for p in path.glob('*.safetensors')
                    if p.name.startswith(('ltxv-', 'ltx-video-')) and 'upscaler' not in p.name)
  found = (f"it holds {', '.join(official)}: pass --config.model.file=NAME (or "
           "--config.model.file= for the only one)" if official else
           "pass --config.model.file= (empty) to read the folder as it is")
  origin = f" (the preset {c.preset}'s file)" if file == preset_file else ''
  _fail(f"config.model.file={file!r}{origin} is not in {path}; {found}")


def check_model_source(c) -> None:
  """A local path must exist; anything else must look like a hub repo id."""
  src = c.model.source
  if src == SMOKE:
    return
  if not src:
    _fail("config.model.source is empty; pass a folder, file or hub repo id (or 'smoke')")
  path = Path(src).expanduser()
  if path.exists():
    model_file(c)
    return
  if not HUB_ID.match(src):
    _fail(f"config.model.source={src!r}: no such file or folder (nor a hub repo id owner/name)")


def check_output_dir(c) -> Path:
  """The output folder, if it can be written (or created); nothing is left behind: the run
  creates the folder when it writes its first file."""
  out = Path(c.output_dir).expanduser().absolute()
  existing = next(p for p in (out, *out.parents) if p.exists())
  try:
    if not existing.is_dir():
      raise NotADirectoryError(20, 'Not a directory')
    with tempfile.NamedTemporaryFile(dir=existing, prefix='.write-check-'):
      pass
  except OSError as e:
    _fail(f"cannot write to config.output_dir={c.output_dir!r}: {e.strerror or e}")
  return Path(c.output_dir).expanduser()


def conditions(c) -> list:
  """The config's conditioning items: `image` (at frame 0) first, then `conditions`."""
  from ltx_jax.pipeline.conditioning import Condition, parse_condition
  items = ([Condition(image=os.path.expanduser(c.image))] if c.image else [])
  texts = (c.conditions,) if isinstance(c.conditions, str) else tuple(c.conditions)
  for i, text in enumerate(texts):
    try:
      items.append(parse_condition(text))
    except UsageError as e:
      _fail(f"config.conditions[{i}]: {e}")
  return items


def guides(c) -> list:
  """The config's guides: `control_video` (a video by its suffix, else an image) at
  `control_frame` with `control_strength`."""
  from ltx_jax.pipeline.conditioning import VIDEO_SUFFIXES
  from ltx_jax.pipeline.guides import Guide
  if not c.control_video:
    return []
  try:
    strength = checks.check_finite('control_strength', c.control_strength, 0.0, 1.0)
  except UsageError as e:
    _fail(f"config.{e}")
  path = os.path.expanduser(c.control_video)
  kind = 'video' if Path(path).suffix.lower() in VIDEO_SUFFIXES else 'image'
  return [Guide(**{kind: path}, frame_index=c.control_frame, strength=strength)]


def check_control(c, compression: tuple[int, int]) -> None:
  """The control video, read and checked against the video (frames, frame index, length)."""
  from ltx_jax.pipeline import conditioning, guides as guides_lib
  if c.task == 'control' and not c.control_video:
    _fail("config.control_video is empty; IC-LoRA control needs --config.control_video=PATH")
  items = guides(c)
  if not items:
    return
  if c.long_video.enabled:
    _fail("config.long_video.enabled takes no config.control_video; leave it empty")
  try:
    media = conditioning.read_media(items[0])
    guides_lib.check_guides(items, [media.shape[0]], c.num_frames, temporal=compression[0])
  except LTXError as e:
    _fail(f"config.control_video: {e}")


def check_conditions(c, compression: tuple[int, int]) -> None:
  """Conditioning items and the video-to-video input, read and checked against the video."""
  from ltx_jax.pipeline import conditioning
  tc, sc = compression
  items = conditions(c)
  need = {'i2v': (len(items) >= 1, "config.image is empty; image-to-video needs "
                  "--config.image=PATH (or --config.conditions)"),
          'keyframes': (len(items) >= 2, "config.conditions: keyframes need two or more "
                        "items, e.g. '(\"first.png:0\", \"last.png:120\")'"),
          'extend': (any(x.video is not None for x in items), "config.conditions: extension "
                     "needs a video item, e.g. '(\"clip.mp4:0\",)'"),
          'v2v': (bool(c.input_video), "config.input_video is empty; video-to-video needs "
                  "--config.input_video=PATH")}
  ok, msg = need.get(c.task, (True, ''))
  if not ok:
    _fail(msg)
  try:
    checks.check_finite('image_cond_noise_scale', c.image_cond_noise_scale, 0.0, None)
    checks.check_finite('denoise_strength', c.denoise_strength, 0.0, 1.0)
  except UsageError as e:
    _fail(f"config.{e}")
  if c.condition_preprocessing not in conditioning.PREPROCESSING:
    _fail(f"config.condition_preprocessing={c.condition_preprocessing!r}; choose one of "
          f"{', '.join(conditioning.PREPROCESSING)}")
  try:
    conditioning.check_media(items, c.num_frames, c.height, c.width,
                             c.condition_preprocessing, temporal=tc, spatial=sc)
  except LTXError as e:
    _fail(f"config.{'image/conditions' if c.image else 'conditions'}: {e}")
  if c.input_video:
    if c.multi_scale:
      _fail(f"config.input_video (video-to-video) runs one pass, and the preset {c.preset!r} is "
            "multi-scale: add --config.multi_scale=False (its first-pass schedule at the full "
            "size), or use configs/v2v.py, which does")
    if c.denoise_strength >= 1:
      _fail(f"config.denoise_strength={c.denoise_strength}: video-to-video keeps part of the "
            "input only below 1 (e.g. 0.6)")
    try:
      frames = conditioning.read_media(conditioning.Condition(
          video=os.path.expanduser(c.input_video)))
    except LTXError as e:
      _fail(f"config.input_video: {e}")
    if frames.shape[0] < c.num_frames:
      _fail(f"config.input_video={c.input_video!r} has {frames.shape[0]} frames; "
            f"num_frames={c.num_frames} needs at least that many")


def pipeline_kwargs(c) -> dict:
  """The LTXPipeline.__call__ arguments of a config as plain values (prompt, seed, the
  conditioning items and the input video are per job: `conditions`, `input_video`)."""
  kw = {k: c[k] for k in _DIRECT}
  if c.image or c.conditions:
    kw['condition_preprocessing'] = c.condition_preprocessing
    kw['image_cond_noise_scale'] = c.image_cond_noise_scale
  if c.input_video:
    kw['condition_preprocessing'] = c.condition_preprocessing
    kw['denoise_strength'] = c.denoise_strength
  if c.control_video:
    kw['image_cond_noise_scale'] = c.image_cond_noise_scale
  if c.timesteps:
    kw['timesteps'] = list(c.timesteps)
  else:
    kw['num_inference_steps'] = c.num_inference_steps
  if c.guidance_timesteps:
    kw['guidance_timesteps'] = list(c.guidance_timesteps)
    for key, schedule in SCHEDULE_KEYS.items():
      kw[key] = [list(v) if isinstance(v, (tuple, list)) else v for v in c[schedule]] or (
          list(c[key]) if isinstance(c[key], (tuple, list)) else c[key])
  else:
    kw.update({key: c[key] for key in SCHEDULE_KEYS})
    kw['skip_block_list'] = list(c.skip_block_list)
  return kw


def multi_scale_kwargs(c) -> dict:
  """The LTXMultiScalePipeline.__call__ arguments of a config: downscale_factor, first_pass,
  second_pass, and the common arguments (pipeline_kwargs without the per-pass keys)."""
  common = {k: v for k, v in pipeline_kwargs(c).items() if k not in presets.PASS_KEYS}
  return dict(common, downscale_factor=c.downscale_factor,
              first_pass=_pass_values(c.first_pass), second_pass=_pass_values(c.second_pass))


def _pass_values(d) -> dict:
  return {k: presets._as_lists(tuple(v) if isinstance(v, list) else v)
          for k, v in d.to_dict().items()}


# Config keys passed to LTXPipeline.__call__ under the same name.
_DIRECT = ('height', 'width', 'num_frames', 'frame_rate', 'negative_prompt', 'decode_timestep',
           'decode_noise_scale', 'max_sequence_length', 'stochastic_sampling',
           'guidance_rescale', 'skip_layer_strategy', 'cfg_star_rescale')


def check_sampling(c, compression: tuple[int, int]) -> None:
  """The pipeline's own checks (ltx_jax.checks) on the config's pipeline arguments."""
  n = len(c.guidance_timesteps)
  for key in SCHEDULE_KEYS.values():
    if n and len(c[key]) not in (0, n):
      _fail(f"config.{key} has {len(c[key])} entries; config.guidance_timesteps has {n}")
  kw = pipeline_kwargs(c)
  tc, sc = compression
  if c.multi_scale:
    check_multi_scale(c, compression)
  try:
    checks.check_video_size(c.height, c.width, c.num_frames, 1 if c.multi_scale else sc, tc)
    checks.check_frame_rate(c.frame_rate)
    checks.check_finite('decode_timestep', c.decode_timestep, 0.0, 1.0)
    checks.check_finite('decode_noise_scale', c.decode_noise_scale, 0.0, 1.0)
    checks.check_schedule(kw.get('num_inference_steps'), kw.get('timesteps'))
    checks.check_guidance(kw.get('guidance_timesteps'), **{
        k: kw[k] for k in ('guidance_scale', 'guidance_rescale', 'stg_scale', 'stg_rescale',
                           'skip_block_list')})
  except UsageError as e:
    _fail(f"config.{e}")


def check_multi_scale(c, compression: tuple[int, int]) -> None:
  """The multi-scale keys: both passes set, their keys LTXPipeline arguments with valid
  schedules and guidance, a first pass of at least one latent pixel."""
  from ltx_jax.sampling.latent_ops import first_pass_size
  if not c.first_pass or not c.second_pass:
    _fail(f"config.multi_scale=True needs config.first_pass and config.second_pass (preset "
          f"{c.preset or '(none)'!r} sets none: its official config is single-pass); pass "
          "--config.multi_scale=False or a multi-scale preset such as "
          f"configs/t2v.py:{presets.DEFAULT}")
  if not (isinstance(c.downscale_factor, (int, float)) and 0 < c.downscale_factor <= 1):
    _fail(f"config.downscale_factor={c.downscale_factor!r} must be a number in (0, 1]")
  try:
    first_pass_size(c.height, c.width, c.downscale_factor, compression[1])
  except UsageError as e:
    _fail(f"config.{e}")
  for which in ('first_pass', 'second_pass'):
    kw = _pass_values(c[which])
    bad = sorted(set(kw) - presets.PASS_KEYS)
    if bad:
      _fail(f"config.{which}: {', '.join(bad)} are no per-pass keys; choose from "
            f"{', '.join(sorted(presets.PASS_KEYS))}")
    try:
      checks.check_schedule(kw.get('num_inference_steps'), kw.get('timesteps'))
      checks.check_guidance(kw.get('guidance_timesteps'), guidance_scale=kw.get(
          'guidance_scale', 1.0), guidance_rescale=c.guidance_rescale,
          stg_scale=kw.get('stg_scale', 0.0), stg_rescale=kw.get('stg_rescale', 0.7),
          skip_block_list=kw.get('skip_block_list'))
    except UsageError as e:
      _fail(f"config.{which}.{e}")
def step_cache(c):
  """config.cache as the pipeline's `cache=` argument (None without one)."""
  from ltx_jax.sampling.cache import KINDS, check_cache
  if not c.cache.kind:
    return None
  if c.cache.kind not in KINDS:
    _fail(f"config.cache.kind={c.cache.kind!r}; choose '' (none) or one of "
          f"{', '.join(sorted(KINDS))}")
  try:
    return check_cache(KINDS[c.cache.kind](threshold=c.cache.threshold))
  except UsageError as e:
    _fail(f"config.cache: {e}")


_PAIR = re.compile(r'[(\[]\s*([^()\[\],]+?)\s*,\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*[)\]]')


def _unquoted_pairs(text: str) -> list | None:
  """'((a.safetensors, 0.8), (/x/b.safetensors, -0.3))' (paths without quotes) -> pairs;
  None when the text is not only such pairs."""
  inner = text.strip()
  if inner[:1] in '([' and inner[-1:] in ')]' and inner[1:].lstrip()[:1] in ('(', '['):
    inner = inner[1:-1].strip()
  pairs = _PAIR.findall(inner)
  rest = _PAIR.sub('', inner).replace(',', '').strip()
  if not pairs or rest:
    return None
  return [(path.strip('\'"'), float(scale)) for path, scale in pairs]


def loras(c) -> tuple[tuple[str, float], ...]:
  """config.loras as ((path, scale), ...): a path, or a Python literal of (path, scale)
  pairs (or paths); each file must exist."""
  text = c.loras
  if not isinstance(text, str):
    _fail(f"config.loras={text!r}; expected a path or '((path, scale), ...)'")
  text = text.strip()
  if not text:
    return ()
  if text[0] in '([':
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = _unquoted_pairs(text)
      if value is None:
        _fail(f"config.loras={text!r} is not a literal such as "
              "'((\"a.safetensors\", 0.8), (\"b.safetensors\", -0.3))'")
    items = [value] if (isinstance(value, tuple) and len(value) == 2
                        and isinstance(value[1], (int, float))) else list(value)
  else:
    items = [text]
  out = []
  for item in items:
    path, scale = (item, 1.0) if isinstance(item, str) else (
        tuple(item) if isinstance(item, (tuple, list)) and len(item) == 2 else (None, None))
    if (not isinstance(path, str) or isinstance(scale, bool)
        or not isinstance(scale, (int, float)) or not math.isfinite(scale)):
      _fail(f"config.loras entry {item!r}; expected a path or (path, finite scale)")
    if not Path(path).expanduser().exists():
      _fail(f"config.loras: LoRA file {path!r} does not exist")
    out.append((str(Path(path).expanduser()), float(scale)))
  return tuple(out)


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
  step_cache(c)
  if c.task not in TASKS:
    _fail(f"config.task={c.task!r}; choose one of {', '.join(TASKS)}")
  if c.model.dtype not in DTYPES or c.model.text_encoder_dtype not in DTYPES + ('',):
    _fail(f"config.model.dtype={c.model.dtype!r} / text_encoder_dtype="
          f"{c.model.text_encoder_dtype!r}; choose from {', '.join(DTYPES)}")
  if c.model.param_dtype not in DTYPES + ('fp8', ''):
    _fail(f"config.model.param_dtype={c.model.param_dtype!r}; choose from "
          f"{', '.join(DTYPES + ('fp8',))} (or '' for model.dtype)")
  if c.model.matmul not in ('default', 'fp8'):
    _fail(f"config.model.matmul={c.model.matmul!r}; choose default or fp8")
  if c.model.matmul == 'fp8' and c.model.param_dtype != 'fp8':
    _fail("config.model.matmul='fp8' multiplies fp8 weights: set config.model.param_dtype='fp8'")
  if c.model.source == SMOKE and (c.model.param_dtype or c.model.matmul != 'default'):
    _fail("the smoke model has no fp8 storage: leave config.model.param_dtype and "
          "config.model.matmul at their defaults")
  check_model_source(c)
  loras(c)
  tc, sc = model_compression(c)
  check_sampling(c, (tc, sc))
  if c.max_sequence_length < 1:
    _fail(f"config.max_sequence_length={c.max_sequence_length} must be >= 1")
  if not 0 <= c.crf <= 51:
    _fail(f"config.crf={c.crf} must be in [0, 51]")
  seeds = c.seeds if isinstance(c.seeds, (tuple, list)) else (c.seeds,)
  if not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                          and 0 <= s <= checks.MAX_SEED for s in seeds):
    _fail(f"config.seeds={c.seeds!r} must be a non-empty tuple of integers in "
          f"[0, {checks.MAX_SEED}], e.g. --config.seeds='(1,2,3)'")
  check_conditions(c, (tc, sc))
  check_control(c, (tc, sc))
  check_long_video(c, (tc, sc))
  prompts = [long_video_prompt(c)] if c.long_video.enabled else read_prompts(c)
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


# ------------------------------------------------------------------------------- long video


def long_video_config() -> ml_collections.ConfigDict:
  """`config.long_video.*`: LTXLongVideoPipeline's arguments (diffusers' names), used when
  `enabled` (configs/long.py). The window prompts are config.prompt split on '|', or
  `prompt_file` (one prompt per window, one per line); config.image is the cond_image."""
  lv = ml_collections.ConfigDict()
  lv.enabled = False
  lv.prompt_file = ''
  lv.temporal_tile_size = 80  # pixel frames per window
  lv.temporal_overlap = 24  # pixel frames shared by consecutive windows
  lv.temporal_overlap_cond_strength = 0.5
  lv.adain_factor = 0.25
  lv.cond_strength = 0.5
  lv.negative_index_strength = 1.0
  lv.skip_steps_sigma_threshold = 1.0
  lv.sigmas = ()  # explicit per-window schedule ending in 0; empty: timesteps / steps
  lv.eta = 0.0  # ancestral steps' noise (ComfyUI's euler_ancestral_RF: 1.0); 0: Euler
  lv.decode_horizontal_tiles = 4
  lv.decode_vertical_tiles = 4
  lv.decode_overlap = 3
  lv.decode_temporal_tile = 16  # latent frames per decoded chunk
  lv.decode_temporal_overlap = 4
  return lv


_LONG_DIRECT = ('temporal_tile_size', 'temporal_overlap', 'temporal_overlap_cond_strength',
                'adain_factor', 'cond_strength', 'negative_index_strength',
                'skip_steps_sigma_threshold', 'eta', 'decode_horizontal_tiles',
                'decode_vertical_tiles', 'decode_overlap', 'decode_temporal_tile',
                'decode_temporal_overlap')


def long_video_prompt(c) -> str:
  """The window prompts of a long video joined by '|' (long_video.prompt_file or prompt)."""
  lv = c.long_video
  if not lv.prompt_file:
    return c.prompt
  try:
    lines = Path(lv.prompt_file).expanduser().read_text(encoding='utf-8').splitlines()
  except (OSError, UnicodeDecodeError) as e:
    _fail(f"cannot read config.long_video.prompt_file={lv.prompt_file!r}: "
          f"{e.__class__.__name__}: {e}")
  prompts = [ln.strip().replace('|', ' ') for ln in lines
             if ln.strip() and not ln.lstrip().startswith('#')]
  if not prompts:
    _fail(f"config.long_video.prompt_file={lv.prompt_file!r} holds no prompts (one per window)")
  return ' | '.join(prompts)


def long_video_kwargs(c) -> dict:
  """LTXLongVideoPipeline.__call__ arguments of a config (prompt, image and seed per job)."""
  lv = c.long_video
  kw = {k: lv[k] for k in _LONG_DIRECT}
  kw.update({k: c[k] for k in ('height', 'width', 'num_frames', 'frame_rate', 'negative_prompt',
                               'guidance_scale', 'guidance_rescale', 'decode_timestep',
                               'decode_noise_scale', 'max_sequence_length')})
  if lv.sigmas:
    kw['sigmas'] = list(lv.sigmas)
  elif c.timesteps:
    kw['sigmas'] = [t / 1000 for t in c.timesteps] + [0.0]
  else:
    kw['num_inference_steps'] = c.num_inference_steps
  return kw


def check_long_video(c, compression: tuple[int, int]) -> None:
  """The long-video keys, without the model (a UsageError naming config.long_video.*)."""
  if not c.long_video.enabled:
    return
  from ltx_jax.pipeline import long_video
  lv = c.long_video
  if c.prompt_file:
    _fail("config.prompt_file makes one video per prompt; for a long video's window prompts "
          "use config.long_video.prompt_file (one per line) or '|' in config.prompt")
  if isinstance(c.guidance_scale, (tuple, list)) or c.guidance_timesteps:
    _fail("config.guidance_timesteps: a long video takes one guidance_scale")
  if c.multi_scale or c.cache.kind:
    _fail("config.long_video.enabled runs one pass per window: turn config.multi_scale and "
          "config.cache.kind off")
  if c.conditions or c.input_video:
    _fail("config.long_video.enabled takes config.image (the first frame) as its only "
          "conditioning: leave config.conditions and config.input_video empty")
  try:
    _, _, windows = long_video.check_windows(c.num_frames, lv.temporal_tile_size,
                                             lv.temporal_overlap, compression[0])
    long_video.check_strengths(**{k: lv[k] for k in (
        'temporal_overlap_cond_strength', 'adain_factor', 'cond_strength',
        'negative_index_strength', 'eta')})
    long_video.window_prompts(long_video_prompt(c), None, len(windows))
  except UsageError as e:
    _fail(f"config.long_video.{e}")
