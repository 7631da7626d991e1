"""Seeing what the model will train on: cached latents decoded back to video files.

`decode_samples(folder, pipe, out_dir)` decodes each sample's latents (and reference latents)
with the pipeline's VAE decoder (`LTXPipeline.decode`, the same path generation uses) and
writes NAME.mp4 at the sample's frame rate, or NAME.png for a one-frame sample, where NAME is
the source file's stem and the sample's index. The VAE must be the one that made the cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ltx_jax import video_io
from ltx_jax.data import records
from ltx_jax.data.loader import CachedSamples

__all__ = ['decode_samples']


def decode_samples(folder: str | Path, pipe, out_dir: str | Path, *, count: int = 0,
                   decode_timestep: float = 0.05, decode_noise_scale: float = 0.025,
                   overwrite: bool = False) -> list[Path]:
  """Decodes the first `count` samples (0: all) of a data folder into out_dir; returns the
  files written. Refuses (DataError) a pipeline whose VAE did not make the cache."""
  samples = CachedSamples(folder)
  records.check_models(samples.index, vae=records.model_identity(pipe.vae, pipe.release or ''))
  out = Path(out_dir).expanduser()
  out.mkdir(parents=True, exist_ok=True)
  written = []
  n = len(samples) if count <= 0 else min(count, len(samples))
  for i in range(n):
    meta = samples.index.samples[i]
    arrays = samples[i]
    name = f"{Path(meta['source']).stem}-{i:05d}"
    for suffix, key in (('', 'latents'), ('-reference', 'reference_latents')):
      if key not in arrays:
        continue
      frames = pipe.decode(arrays[key][None], decode_timestep, decode_noise_scale)[0]
      written.append(_write(out / f"{name}{suffix}", frames, meta['fps'], overwrite))
  samples.close()
  return written


def _write(stem: Path, frames: np.ndarray, fps: float, overwrite: bool) -> Path:
  """uint8 [F, H, W, 3] -> stem.mp4, or stem.png for one frame (published atomically)."""
  if frames.shape[0] > 1:
    return video_io.write_mp4(stem.with_suffix('.mp4'), frames, fps, overwrite=overwrite)
  from PIL import Image
  path = stem.with_suffix('.png')
  if path.exists() and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite to replace it")
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.stem}.', suffix='.png')
  os.close(fd)
  try:
    Image.fromarray(frames[0]).save(tmp, format='PNG')
    os.replace(tmp, path)
  finally:
    Path(tmp).unlink(missing_ok=True)
  return path
