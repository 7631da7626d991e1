"""The training config (ml_collections), the official recipes' values, and the checks that run
before anything loads.

Keys keep LTX-Video-Trainer's names and sections (model, lora, conditioning, optimization,
acceleration, data, validation, checkpoints, flow_matching, seed, output_dir), so a recipe's yaml
reads across key for key; ltx_jax adds resume, export, metrics, mesh and distributed. The
official keys that only steer PyTorch (`compile_with_inductor`, `compilation_mode`,
`load_text_encoder_in_8bit`: text embeddings are precomputed here) and the hub / W&B sections
are not carried. `RECIPES` holds each official recipe's values with the file they come from.

`check(config)` refuses a bad value with a `UsageError` whose message is one line (exit 2) and a
damaged dataset with a `DataError` (exit 1); it returns the `TrainPlan`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import ml_collections

from ltx_jax import checks, presets
from ltx_jax.cli import config as config_lib
from ltx_jax.errors import UsageError

SMOKE = 'smoke'  # model.source naming ltx_jax.smoke's random-weight plumbing model
TRAINING_MODES = ('lora', 'full')
# none, IC-LoRA (LTX-Video-Trainer's), and ltx_jax's prefix / suffix strategies
# (ltx_jax.training.conditioned: image-to-video, extension forward / backward)
CONDITIONING_MODES = ('none', 'reference_video', 'prefix', 'suffix')
OPTIMIZERS = ('adamw', 'adamw8bit')
SCHEDULERS = ('constant', 'linear', 'cosine', 'cosine_with_restarts', 'polynomial')
MIXED_PRECISION = ('no', 'fp16', 'bf16')
QUANTIZATION = ('', 'fp8-quanto')  # fp8-quanto: frozen transformer weights stored in fp8
TIMESTEP_SAMPLING = ('uniform', 'shifted_logit_normal')
# The modules LoRA can target, by their diffusers names inside each transformer block.
LORA_TARGETS = ('to_k', 'to_q', 'to_v', 'to_out.0', 'ff.net.0.proj', 'ff.net.2')
EXPORT_FORMATS = ('diffusers', 'comfyui')
# Sections whose values decide the training trajectory: a run resumed into an output folder must
# agree on them; the rest (checkpoints, validation, metrics, export, mesh) may change on resume.
TRAJECTORY_KEYS = ('model', 'lora', 'conditioning', 'optimization', 'acceleration',
                   'flow_matching', 'seed', 'data.preprocessed_data_root')

# LTX-Video-Trainer's model_source names -> ltx_jax release presets (ltx_jax/presets.py).
MODEL_SOURCES = {'LTXV_2B_0.9.0': 'ltxv-2b-0.9.0', 'LTXV_2B_0.9.1': 'ltxv-2b-0.9.1',
                 'LTXV_2B_0.9.5': 'ltxv-2b-0.9.5', 'LTXV_2B_0.9.6_DEV': 'ltxv-2b-0.9.6-dev',
                 'LTXV_2B_0.9.6_DISTILLED': 'ltxv-2b-0.9.6-distilled',
                 'LTXV_13B_097_DEV': 'ltxv-13b-0.9.7-dev',
                 'LTXV_13B_097_DISTILLED': 'ltxv-13b-0.9.7-distilled'}

_PROMPTS_2B = ('a professional portrait video of a person with blurry bokeh background',
               'a video of a person wearing a nice suit')

# The official recipes (Lightricks/LTX-Video-Trainer at 31b1273, configs/<file>), as overrides of
# base_config(); sections as in the yaml. ltxv_13b_lora is the 13B LoRA recipe the repository
# ships filled in (ltxv_13b_lora_cakeify.yaml: ltxv_13b_lora_template.yaml at rank 128).
RECIPES: dict[str, dict[str, Any]] = {
    'ltxv_2b_lora': {
        'file': 'configs/ltxv_2b_lora.yaml',
        'values': {
            'model': {'release': 'ltxv-2b-0.9.6-dev', 'training_mode': 'lora'},
            'lora': {'rank': 32, 'alpha': 32, 'dropout': 0.0,
                     'target_modules': ('to_k', 'to_q', 'to_v', 'to_out.0')},
            'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.1},
            'optimization': {'learning_rate': 2e-4, 'steps': 1500, 'batch_size': 1,
                             'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                             'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                             'enable_gradient_checkpointing': False},
            'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': ''},
            'data': {'num_dataloader_workers': 2},
            'validation': {'prompts': _PROMPTS_2B, 'images': (), 'video_dims': (768, 448, 89),
                           'seed': 42, 'inference_steps': 50, 'interval': 100,
                           'videos_per_prompt': 1, 'guidance_scale': 3.5},
            'checkpoints': {'interval': 250, 'keep_last_n': -1},
            'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal'},
            'seed': 42, 'output_dir': 'outputs/ltxv_lora'}},
    'ltxv_2b_full': {
        'file': 'configs/ltxv_2b_full.yaml',
        'values': {
            'model': {'release': 'ltxv-2b-0.9.6-dev', 'training_mode': 'full'},
            'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.1},
            'optimization': {'learning_rate': 1e-5, 'steps': 1000, 'batch_size': 1,
                             'gradient_accumulation_steps': 4, 'max_grad_norm': 1.0,
                             'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                             'enable_gradient_checkpointing': False},
            'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': ''},
            'data': {'num_dataloader_workers': 2},
            'validation': {'prompts': _PROMPTS_2B, 'images': (), 'video_dims': (768, 448, 89),
                           'seed': 42, 'inference_steps': 50, 'interval': 200,
                           'videos_per_prompt': 1, 'guidance_scale': 3.5},
            'checkpoints': {'interval': 500, 'keep_last_n': -1},
            'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal'},
            'seed': 42, 'output_dir': 'outputs/ltxv_full_finetune'}},
    'ltxv_2b_lora_low_vram': {
        'file': 'configs/ltxv_2b_lora_low_vram.yaml',
        'values': {
            'model': {'release': 'ltxv-2b-0.9.6-dev', 'training_mode': 'lora'},
            'lora': {'rank': 32, 'alpha': 32, 'dropout': 0.0,
                     'target_modules': ('to_k', 'to_q', 'to_v', 'to_out.0')},
            'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.1},
            'optimization': {'learning_rate': 2e-4, 'steps': 1500, 'batch_size': 1,
                             'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                             'optimizer_type': 'adamw8bit', 'scheduler_type': 'linear',
                             'enable_gradient_checkpointing': True},
            'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': 'fp8-quanto'},
            'data': {'num_dataloader_workers': 2},
            'validation': {'prompts': _PROMPTS_2B, 'images': (), 'video_dims': (768, 448, 89),
                           'seed': 42, 'inference_steps': 50, 'interval': 100,
                           'videos_per_prompt': 1, 'guidance_scale': 3.5},
            'checkpoints': {'interval': 250, 'keep_last_n': -1},
            'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal'},
            'seed': 42, 'output_dir': 'outputs/ltxv_lora'}},
    'ltxv_13b_lora': {
        'file': 'configs/ltxv_13b_lora_cakeify.yaml',
        'values': {
            'model': {'release': 'ltxv-13b-0.9.7-dev', 'training_mode': 'lora'},
            'lora': {'rank': 128, 'alpha': 128, 'dropout': 0.0,
                     'target_modules': ('to_k', 'to_q', 'to_v', 'to_out.0')},
            'conditioning': {'mode': 'none', 'first_frame_conditioning_p': 0.5},
            'optimization': {'learning_rate': 2e-4, 'steps': 2000, 'batch_size': 1,
                             'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                             'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                             'enable_gradient_checkpointing': True},
            'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': ''},
            'data': {'num_dataloader_workers': 2},
            'validation': {
                'prompts': ('CAKEIFY a person using a knife to cut a cake shaped like bottle of '
                            'mouthwash',
                            'CAKEIFY a person using a knife to cut a cake shaped like potted '
                            'plant',
                            'CAKEIFY a person using a knife to cut a cake shaped like a jar of '
                            'Nutella'),
                'images': (), 'video_dims': (576, 576, 121), 'seed': 42, 'inference_steps': 50,
                'interval': 250, 'videos_per_prompt': 1, 'guidance_scale': 3.5},
            'checkpoints': {'interval': 250, 'keep_last_n': -1},
            'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal'},
            'seed': 42, 'output_dir': 'outputs/cakeify_lora_13b'}},
    'ltxv_13b_ic_lora': {
        'file': 'configs/ltxv_13b_ic_lora.yaml',
        'values': {
            'model': {'release': 'ltxv-13b-0.9.7-dev', 'training_mode': 'lora'},
            'lora': {'rank': 128, 'alpha': 128, 'dropout': 0.0,
                     'target_modules': ('to_k', 'to_q', 'to_v', 'to_out.0', 'ff.net.0.proj',
                                        'ff.net.2')},
            'conditioning': {'mode': 'reference_video', 'first_frame_conditioning_p': 0.2,
                             'reference_latents_dir': 'reference_latents'},
            'optimization': {'learning_rate': 2e-4, 'steps': 2000, 'batch_size': 1,
                             'gradient_accumulation_steps': 1, 'max_grad_norm': 1.0,
                             'optimizer_type': 'adamw', 'scheduler_type': 'linear',
                             'enable_gradient_checkpointing': True},
            'acceleration': {'mixed_precision_mode': 'bf16', 'quantization': ''},
            'data': {'num_dataloader_workers': 2},
            'validation': {'prompts': ('First validation prompt', 'Second validation prompt',
                                       'Third validation prompt'),
                           'images': (),
                           'reference_videos': ('/path/to/reference_a.mp4',
                                                '/path/to/reference_b.mp4',
                                                '/path/to/reference_c.mp4'),
                           'video_dims': (512, 512, 81), 'seed': 42, 'inference_steps': 50,
                           'interval': 250, 'videos_per_prompt': 1, 'guidance_scale': 3.5},
            'checkpoints': {'interval': 250, 'keep_last_n': 3},
            'flow_matching': {'timestep_sampling_mode': 'shifted_logit_normal'},
            'seed': 42, 'output_dir': 'outputs/ic_lora_13b'}},
}
DEFAULT_RECIPE = 'ltxv_2b_lora'


def base_config(recipe: str = DEFAULT_RECIPE) -> ml_collections.ConfigDict:
  """Defaults of every key (LTX-Video-Trainer's defaults where it has the key), then the named
  recipe's values ('' for none)."""
  c = ml_collections.ConfigDict()
  c.recipe = recipe
  c.model = ml_collections.ConfigDict()
  c.model.release = 'ltxv-13b-0.9.7-dev'  # a release preset: its file in presets.HUB_REPO
  c.model.source = ''  # folder, file, hub id, or 'smoke'; empty: the release's file on the hub
  c.model.file = ''
  c.model.training_mode = 'lora'
  c.model.attention = 'auto'
  c.model.offline = False
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 64
  c.lora.alpha = 64
  c.lora.dropout = 0.0
  c.lora.target_modules = ('to_k', 'to_q', 'to_v', 'to_out.0')
  c.conditioning = ml_collections.ConfigDict()
  c.conditioning.mode = 'none'
  c.conditioning.first_frame_conditioning_p = 0.1
  c.conditioning.reference_latents_dir = 'ref_latents'
  c.conditioning.latent_frames = 1  # prefix / suffix: clean latent frames (1: an image)
  c.conditioning.prefix_p = 1.0  # prefix: per-sample probability of the clean prefix
  c.optimization = ml_collections.ConfigDict()
  c.optimization.learning_rate = 5e-4
  c.optimization.steps = 3000
  c.optimization.batch_size = 2
  c.optimization.gradient_accumulation_steps = 1
  c.optimization.max_grad_norm = 1.0
  c.optimization.optimizer_type = 'adamw'
  c.optimization.scheduler_type = 'linear'
  c.optimization.scheduler_params = ml_collections.ConfigDict()
  c.optimization.enable_gradient_checkpointing = False
  c.acceleration = ml_collections.ConfigDict()
  c.acceleration.mixed_precision_mode = 'bf16'
  c.acceleration.quantization = ''
  c.data = ml_collections.ConfigDict()
  c.data.preprocessed_data_root = ''
  c.data.num_dataloader_workers = 2
  # The smoke recipe's own clip set: this many random clips made and preprocessed with the smoke
  # model into <output_dir>/dataset when preprocessed_data_root is empty (0: none).
  c.data.smoke_clips = 0
  c.validation = ml_collections.ConfigDict()
  c.validation.prompts = ()
  c.validation.negative_prompt = presets.NEGATIVE
  c.validation.images = ()  # one first-frame image per prompt, or none
  c.validation.reference_videos = ()  # IC-LoRA: one reference video per prompt
  c.validation.video_dims = (704, 480, 161)  # width, height, frames
  c.validation.frame_rate = 25.0
  c.validation.seed = 42
  c.validation.inference_steps = 50
  c.validation.interval = 100  # 0: no validation
  c.validation.videos_per_prompt = 1
  c.validation.guidance_scale = 3.5
  c.validation.skip_initial_validation = False
  c.checkpoints = ml_collections.ConfigDict()
  c.checkpoints.interval = 0  # 0: only at the end (and on SIGINT / SIGTERM)
  c.checkpoints.keep_last_n = 1  # -1: all
  c.flow_matching = ml_collections.ConfigDict()
  c.flow_matching.timestep_sampling_mode = 'shifted_logit_normal'
  c.flow_matching.timestep_sampling_params = ml_collections.ConfigDict()
  c.seed = 42
  c.output_dir = 'outputs/train'
  # 'latest': continue from the output folder's latest checkpoint when it holds this run (a
  # fresh start when it holds none); a step number: from that checkpoint; 'never': refuse an
  # output folder that already holds a run.
  c.resume = 'latest'
  c.export = ml_collections.ConfigDict()
  c.export.formats = EXPORT_FORMATS
  # 'latest' or a step: export that checkpoint of output_dir and exit without training.
  c.export.checkpoint = ''
  c.metrics = ml_collections.ConfigDict()
  c.metrics.log_every = 1  # steps between metric records (TensorBoard, metrics.jsonl)
  c.metrics.progress = True  # a progress bar with loss and ETA on a terminal
  c.metrics.peak_tflops = 0.0  # per device, for MFU; 0: the known peak of the device kind
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # data parallel over every device by default
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.context = 1
  c.mesh.context_attention = 'allgather'
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator = ''
  c.distributed.num_processes = 0
  c.distributed.process_id = -1
  c.distributed.auto = False
  if recipe:
    if recipe not in RECIPES:
      raise UsageError(f"unknown training recipe {recipe!r}; choose one of "
                       f"{', '.join(RECIPES)}")
    override(c, RECIPES[recipe]['values'])
  return c


def override(c: ml_collections.ConfigDict, values: dict) -> None:
  for k, v in values.items():
    if isinstance(v, dict) and k in c and isinstance(c[k], ml_collections.ConfigDict):
      override(c[k], v)
    else:
      c[k] = v


@dataclasses.dataclass(frozen=True)
class TrainPlan:
  """What the checks resolved: the output folder, the dataset folder (None: made by the smoke
  recipe), where to resume from ('latest', a step, or None for a fresh run), and the release."""
  output_dir: Path
  dataset: Path | None
  resume: str | int | None
  export_only: str | int | None
  release: str


def _fail(msg: str):
  raise UsageError(msg)


def _int(name: str, v: Any, minimum: int, *, allowed: tuple = ()) -> int:
  if isinstance(v, bool) or not isinstance(v, int) or (v < minimum and v not in allowed):
    more = f" (or {', '.join(map(str, allowed))})" if allowed else ''
    _fail(f"config.{name}={v!r} must be an integer >= {minimum}{more}")
  return v


def _number(name: str, v: Any, minimum: float | None = 0.0, maximum: float | None = None
            ) -> float:
  try:
    return checks.check_finite(name, v, minimum, maximum)
  except UsageError as e:
    _fail(f"config.{e}")


def _choice(name: str, v: Any, allowed: tuple) -> None:
  if v not in allowed:
    _fail(f"config.{name}={v!r}; choose one of {', '.join(repr(a) for a in allowed)}")


def _step_or(name: str, v: Any, words: tuple[str, ...]) -> str | int:
  """'latest' / another allowed word, or a step number (given as text or integer)."""
  if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
    return v
  if isinstance(v, str) and v.strip() in words:
    return v.strip()
  if isinstance(v, str) and v.strip().isdigit():
    return int(v.strip())
  _fail(f"config.{name}={v!r}; expected {' / '.join(repr(w) for w in words)} or a step number")


def check_model(c) -> str:
  """The model keys; returns the release name ('smoke' for the smoke model)."""
  m = c.model
  _choice('model.training_mode', m.training_mode, TRAINING_MODES)
  if m.source == SMOKE:
    return SMOKE
  if m.release not in presets.PRESETS:
    _fail(f"config.model.release={m.release!r}; choose one of {', '.join(presets.names())} "
          "(or set config.model.source='smoke')")
  if m.source:
    path = Path(m.source).expanduser()
    if not path.exists():
      from ltx_jax.sources.resolve import HUB_ID
      if not HUB_ID.match(m.source):
        _fail(f"config.model.source={m.source!r}: no such file or folder (nor a hub repo id)")
  return m.release


def check_lora(c) -> None:
  if c.model.training_mode != 'lora':
    return
  _int('lora.rank', c.lora.rank, 1)
  _number('lora.alpha', c.lora.alpha, 0.0)
  if c.lora.alpha <= 0:
    _fail(f"config.lora.alpha={c.lora.alpha!r} must be > 0")
  _number('lora.dropout', c.lora.dropout, 0.0, 1.0)
  if c.lora.dropout >= 1.0:
    _fail(f"config.lora.dropout={c.lora.dropout!r} must be below 1")
  targets = c.lora.target_modules
  if isinstance(targets, str) or not targets:
    _fail(f"config.lora.target_modules={targets!r} must be a non-empty tuple of module names, "
          f"e.g. '(\"to_q\", \"to_k\")'; choose from {', '.join(LORA_TARGETS)}")
  bad = [t for t in targets if t not in LORA_TARGETS]
  if bad:
    _fail(f"config.lora.target_modules: {', '.join(map(repr, bad))} not supported; choose from "
          f"{', '.join(LORA_TARGETS)}")


def check_optimization(c) -> None:
  o = c.optimization
  _number('optimization.learning_rate', o.learning_rate, 0.0)
  if o.learning_rate <= 0:
    _fail(f"config.optimization.learning_rate={o.learning_rate!r} must be > 0")
  _int('optimization.steps', o.steps, 1)
  _int('optimization.batch_size', o.batch_size, 1)
  _int('optimization.gradient_accumulation_steps', o.gradient_accumulation_steps, 1)
  _number('optimization.max_grad_norm', o.max_grad_norm, 0.0)
  _choice('optimization.optimizer_type', o.optimizer_type, OPTIMIZERS)
  if o.optimizer_type == 'adamw8bit':
    _fail("config.optimization.optimizer_type='adamw8bit' (bitsandbytes' 8-bit AdamW) has no "
          "optax counterpart in ltx_jax yet; pass --config.optimization.optimizer_type=adamw")
  _choice('optimization.scheduler_type', o.scheduler_type, SCHEDULERS)
  if not isinstance(o.enable_gradient_checkpointing, bool):
    _fail("config.optimization.enable_gradient_checkpointing must be True or False")


def check_conditioning(c) -> None:
  k = c.conditioning
  _choice('conditioning.mode', k.mode, CONDITIONING_MODES)
  _number('conditioning.first_frame_conditioning_p', k.first_frame_conditioning_p, 0.0, 1.0)
  if k.mode in ('prefix', 'suffix'):
    _int('conditioning.latent_frames', k.latent_frames, 1)
    _number('conditioning.prefix_p', k.prefix_p, 0.0, 1.0)


def check_validation(c, compression: tuple[int, int]) -> None:
  v = c.validation
  _int('validation.interval', v.interval, 0)
  if not v.interval and v.skip_initial_validation is False and not v.prompts:
    return
  prompts = v.prompts
  if isinstance(prompts, str):
    _fail("config.validation.prompts must be a tuple of prompts, e.g. '(\"a cat\",)'")
  if v.interval and not prompts:
    _fail("config.validation.prompts is empty; give prompts or set config.validation.interval=0")
  for key in ('images', 'reference_videos'):
    items = v[key]
    if isinstance(items, str):
      _fail(f"config.validation.{key} must be a tuple of paths")
    if items and len(items) != len(prompts):
      _fail(f"config.validation.{key} has {len(items)} entries for {len(prompts)} prompts; "
            "give one per prompt or none")
    if v.interval:
      for p in items:
        if not Path(p).expanduser().is_file():
          _fail(f"config.validation.{key}: {p!r} does not exist")
  if v.reference_videos and c.conditioning.mode != 'reference_video':
    _fail("config.validation.reference_videos needs config.conditioning.mode='reference_video'")
  dims = tuple(v.video_dims)
  if len(dims) != 3:
    _fail(f"config.validation.video_dims={dims!r}; expected (width, height, frames)")
  try:
    checks.check_video_size(dims[1], dims[0], dims[2], compression[1], compression[0])
    checks.check_frame_rate(v.frame_rate)
  except UsageError as e:
    _fail(f"config.validation.video_dims / frame_rate: {e}")
  _int('validation.inference_steps', v.inference_steps, 1)
  _int('validation.videos_per_prompt', v.videos_per_prompt, 1)
  _int('validation.seed', v.seed, 0)
  _number('validation.guidance_scale', v.guidance_scale, 1.0)
  if v.interval and v.reference_videos:  # each guide must fit the validation video
    from ltx_jax.pipeline.conditioning import read_media
    from ltx_jax.pipeline.guides import Guide, check_guides
    guides = [Guide(video=str(Path(p).expanduser())) for p in v.reference_videos]
    try:
      check_guides(guides, [read_media(g).shape[0] for g in guides], tuple(v.video_dims)[2],
                   temporal=compression[0])
    except UsageError as e:
      _fail(f"config.validation.reference_videos: {e}")


def check_output_dir(c) -> Path:
  """The output folder (absolute), if it can be written: generation's check."""
  return config_lib.check_output_dir(c).absolute()


def check_data(c) -> Path | None:
  root = c.data.preprocessed_data_root
  _int('data.num_dataloader_workers', c.data.num_dataloader_workers, 0)
  _int('data.smoke_clips', c.data.smoke_clips, 0)
  if not root:
    if c.data.smoke_clips and c.model.source == SMOKE:
      return None
    _fail("config.data.preprocessed_data_root is empty; pass the folder written by "
          "python -m ltx_jax.preprocess")
  path = Path(root).expanduser()
  if not path.is_dir():
    _fail(f"config.data.preprocessed_data_root={root!r}: no such folder (make it with "
          "python -m ltx_jax.preprocess)")
  return path


def compression(c) -> tuple[int, int]:
  """(temporal, spatial) compression of the configured model's VAE: every release and the
  smoke model have (8, 32)."""
  if c.model.source == SMOKE:
    from ltx_jax import smoke
    return smoke.VAE.temporal_compression, smoke.VAE.spatial_compression
  return 8, 32


def check_mesh(c) -> None:
  """config.mesh: generation's check (the same keys and values)."""
  config_lib.check_mesh(c)


def check(c) -> TrainPlan:
  """Every check that needs no model and no device: a UsageError (one line) for the first
  problem found."""
  release = check_model(c)
  check_lora(c)
  check_conditioning(c)
  check_optimization(c)
  _choice('acceleration.mixed_precision_mode', c.acceleration.mixed_precision_mode,
          MIXED_PRECISION)
  _choice('acceleration.quantization', c.acceleration.quantization, QUANTIZATION)
  if c.acceleration.quantization and c.model.training_mode == 'full':
    _fail("config.acceleration.quantization stores frozen weights in fp8: it needs "
          "config.model.training_mode='lora'")
  if c.acceleration.quantization and c.model.source == SMOKE:
    _fail("the smoke model has no fp8 storage: set config.acceleration.quantization=''")
  _choice('flow_matching.timestep_sampling_mode', c.flow_matching.timestep_sampling_mode,
          TIMESTEP_SAMPLING)
  _int('checkpoints.interval', c.checkpoints.interval, 0)
  _int('checkpoints.keep_last_n', c.checkpoints.keep_last_n, 1, allowed=(-1,))
  _int('seed', c.seed, 0)
  _int('metrics.log_every', c.metrics.log_every, 1)
  _number('metrics.peak_tflops', c.metrics.peak_tflops, 0.0)
  formats = tuple(c.export.formats) if not isinstance(c.export.formats, str) else (
      c.export.formats,)
  bad = [f for f in formats if f not in EXPORT_FORMATS]
  if bad:
    _fail(f"config.export.formats: {', '.join(map(repr, bad))}; choose from "
          f"{', '.join(EXPORT_FORMATS)}")
  check_mesh(c)
  check_validation(c, compression(c))
  resume = _step_or('resume', c.resume, ('latest', 'never'))
  export_only = (_step_or('export.checkpoint', c.export.checkpoint, ('latest',))
                 if c.export.checkpoint != '' else None)
  dataset = check_data(c) if export_only is None else None
  out = check_output_dir(c)
  return TrainPlan(out, dataset, None if resume == 'never' else resume, export_only, release)


def trajectory(c) -> dict:
  """The values of `c` that decide the training trajectory (TRAJECTORY_KEYS), as plain data."""
  d = c.to_dict()
  out = {}
  for key in TRAJECTORY_KEYS:
    section, _, name = key.partition('.')
    value = d[section][name] if name else d[section]
    out[key] = _plain(value)
  return out


def _plain(v):
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in sorted(v.items())}
  if isinstance(v, (tuple, list)):
    return [_plain(x) for x in v]
  if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 2 ** 53:
    return float(v)
  return v


def differences(saved: dict, current: dict) -> list[str]:
  """The keys where two trajectory dicts differ, as 'key: saved -> current'."""
  out = []

  def walk(a, b, prefix):
    if isinstance(a, dict) and isinstance(b, dict):
      for k in sorted(set(a) | set(b)):
        walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
    elif a != b:
      out.append(f"{prefix}: {a!r} -> {b!r}")

  walk(saved, current, '')
  return out
