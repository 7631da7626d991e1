"""The preprocessing command's config (ml_collections) and run: checks before any model loads,
then `ltx_jax.data.preprocess` (or `decode_samples` with config.decode)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ml_collections
from absl import logging

from ltx_jax import checks
from ltx_jax.errors import DataError, UsageError

SMOKE = 'smoke'


def base_config(variant: str = '') -> ml_collections.ConfigDict:
  """Every key with its default; variant 'smoke' selects ltx_jax.smoke's tiny random model."""
  if variant not in ('', SMOKE):
    raise UsageError(f"configs/preprocess.py:{variant}: unknown variant; use '' or 'smoke'")
  c = ml_collections.ConfigDict()
  c.input = ''  # listing (.csv / .json / .jsonl) or folder of media + .txt captions
  c.output_dir = ''  # default: <listing folder>/.precomputed or <media folder>/.precomputed
  c.caption_column = 'caption'
  c.media_column = 'media_path'
  c.reference_column = ''  # IC-LoRA reference (control / source) videos, same size and length
  c.reference = 'column'  # IC-LoRA references: 'column' (reference_column), or computed from
  #   each clip: 'canny' (edges, as LTX-Video-Trainer's compute_condition.py), 'blur'
  c.reference_blur_factor = 4  # reference='blur': downscale factor (area down, bilinear up)
  c.trigger_word = ''  # prepended to every caption ('WORD caption'), as the trainer's --id-token
  c.buckets = '768x512x49'  # 'WxHxF;WxHxF': W, H multiples of 32, F = 8N+1 (1: images)
  c.frame_rate = 0.0  # resample videos to this rate; 0: the source rate (first frames)
  c.latents = 'sample'  # 'sample' (LTX-Video-Trainer) or 'mean' of the VAE posterior
  c.seed = 0  # keys the posterior draws
  c.max_sequence_length = 256  # T5 tokens (the trainer's default)
  c.batch_size = 1
  c.shard_size = 64  # samples per ArrayRecord shard
  c.workers = 4  # threads decoding and resizing media ahead of the encoders
  c.strict = False  # refuse the first bad input instead of skipping it
  c.overwrite = False  # replace an existing cache made with other parameters or models
  c.progress = True
  # Inspection: decode a data folder's latents back to mp4 / png.
  c.decode = ''  # a data folder; when set, nothing is preprocessed
  c.decode_dir = ''  # default: <decode>/decoded
  c.decode_count = 0  # 0: every sample
  c.decode_timestep = 0.05
  c.decode_noise_scale = 0.025

  c.model = ml_collections.ConfigDict()
  c.model.source = SMOKE if variant == SMOKE else 'Lightricks/LTX-Video'
  c.model.file = ''
  c.model.release = ''
  c.model.dtype = 'float32' if variant == SMOKE else 'bfloat16'
  c.model.text_encoder_dtype = ''
  c.model.attention = 'auto'
  c.model.offline = False
  c.model.allow_nonfinite = False
  c.model.allow_custom = False  # weights of no known release (their identity is still recorded)
  if variant == SMOKE:
    c.buckets = '96x64x9;64x64x1'
    c.max_sequence_length = 32
  return c


def _check(c) -> tuple:
  """Refusals that need no model: (buckets, frame_rate)."""
  from ltx_jax.data import LATENT_KINDS, parse_buckets
  buckets = parse_buckets(c.buckets, name='config.buckets')
  frame_rate = checks.check_finite('config.frame_rate', c.frame_rate, 0.0) or None
  if c.latents not in LATENT_KINDS:
    raise UsageError(f"config.latents={c.latents!r}; choose one of {', '.join(LATENT_KINDS)}")
  for name in ('max_sequence_length', 'batch_size', 'shard_size', 'workers'):
    v = c[name]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise UsageError(f"config.{name}={v!r} must be a positive integer")
  from ltx_jax.data.conditions import check_reference
  check_reference(c.reference, c.reference_blur_factor)
  if c.reference != 'column' and c.reference_column:
    raise UsageError(f"config.reference={c.reference!r} computes the references; it cannot be "
                     f"combined with config.reference_column={c.reference_column!r}")
  if c.model.dtype not in ('float32', 'bfloat16', 'float16'):
    raise UsageError(f"config.model.dtype={c.model.dtype!r}; choose float32, bfloat16 or "
                     "float16")
  return buckets, frame_rate


def _load(c):
  from ltx_jax.data import load_encoders
  m = c.model
  return load_encoders(m.source, file=m.file, release=m.release, dtype=m.dtype,
                       text_encoder_dtype=m.text_encoder_dtype, attention=m.attention,
                       offline=m.offline, allow_nonfinite=m.allow_nonfinite,
                       allow_custom=m.allow_custom)


def run(c) -> int:
  """Preprocesses (or decodes, with config.decode); returns the number of samples in the
  folder (files decoded). Raises UsageError / DataError with one-line messages."""
  from ltx_jax import data
  if c.decode:
    folder = Path(os.path.expanduser(c.decode))
    data.read_index(folder)  # a damaged or missing index refused before the model loads
    files = data.decode_samples(folder, _load(c), c.decode_dir or folder / 'decoded',
                                count=c.decode_count, decode_timestep=c.decode_timestep,
                                decode_noise_scale=c.decode_noise_scale,
                                overwrite=c.overwrite)
    for f in files:
      print(f)
    return len(files)
  if not c.input:
    raise UsageError("config.input is required: a .csv / .json / .jsonl listing or a folder of "
                     "media with .txt captions")
  buckets, frame_rate = _check(c)
  items, problems = data.list_items(c.input, caption_column=c.caption_column,
                                    media_column=c.media_column,
                                    reference_column=c.reference_column,
                                    trigger_word=c.trigger_word)
  if c.strict and problems:
    raise DataError(str(problems[0]))
  src = Path(os.path.expanduser(c.input))
  out = Path(os.path.expanduser(c.output_dir)) if c.output_dir else (
      (src if src.is_dir() else src.parent) / '.precomputed')
  if not items:
    for p in problems:
      print(f"skipped {p}", file=sys.stderr)
    raise DataError(f"nothing usable in {c.input!r}: {len(problems)} inputs skipped")
  config = data.PreprocessConfig(buckets, frame_rate, batch_size=c.batch_size,
                                 shard_size=c.shard_size, strict=c.strict, workers=c.workers,
                                 reference=c.reference,
                                 reference_blur_factor=c.reference_blur_factor)
  pipe = _load(c)
  encoders = data.Encoders(pipe, latents=c.latents, max_sequence_length=c.max_sequence_length,
                           seed=c.seed, batch_size=c.batch_size)
  logging.info("caching into %s", out)
  summary = data.preprocess(items, encoders, out, config, problems=problems,
                            overwrite=c.overwrite, progress=c.progress)
  for line in summary.lines():
    print(line, file=sys.stderr)
  if summary.total == 0:
    raise DataError(f"nothing usable in {c.input!r}: every input was skipped")
  print(out)
  return summary.total
