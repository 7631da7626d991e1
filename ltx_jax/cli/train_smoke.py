"""The smoke recipe's clip set: short videos of coloured squares moving over a gradient, with
captions from the smoke tokenizer's vocabulary, written as mp4 files and a captions JSON in
LTX-Video-Trainer's dataset format ([{"caption": ..., "media_path": ...}, ...]).

Deterministic for a seed. It gives the plumbing something to fit (each clip's motion is simple
and its caption names it), not a model worth training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CAPTIONS = ('a red flower opening in the rain', 'waves crashing on rocks at sunset',
            'a cat sits on the mat while a dog runs in the park',
            'a river flows through a snowy valley', 'two children play football on a green field',
            'a futuristic city at night with neon signs')


def clip(index: int, size: tuple[int, int, int], seed: int) -> np.ndarray:
  """uint8 [F, H, W, 3]: clip `index` of the set, F x H x W = size."""
  frames, height, width = size
  rng = np.random.default_rng([seed, index])
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  base = rng.uniform(40, 200, 3).astype(np.float32)
  tilt = rng.uniform(-1, 1, 2).astype(np.float32)
  background = base + 40 * (tilt[0] * y / height + tilt[1] * x / width)[..., None]  # [H, W, 3]
  side = max(height, width) // 4
  start = rng.uniform(0, [height - side, width - side])
  velocity = rng.uniform(-1, 1, 2) * side / 4
  colour = rng.uniform(0, 255, 3)
  out = np.empty((frames, height, width, 3), np.uint8)
  for f in range(frames):
    img = background.copy()
    top, left = (np.abs((start + velocity * f) % (2 * np.array([height - side, width - side]))
                        - np.array([height - side, width - side])) // 1).astype(int)
    img[top:top + side, left:left + side] = colour
    out[f] = np.clip(img, 0, 255).astype(np.uint8)
  return out


def make_clips(folder: Path, count: int, size: tuple[int, int, int], fps: float,
               seed: int = 0) -> Path:
  """Writes `count` clips and folder/captions.json (the dataset file the preprocessing reads);
  returns the captions file. Existing complete sets are kept."""
  from ltx_jax import video_io
  folder = Path(folder)
  captions = folder / 'captions.json'
  if captions.exists():
    return captions
  folder.mkdir(parents=True, exist_ok=True)
  rows = []
  for i in range(count):
    name = f"clip_{i:03d}.mp4"
    video_io.write_mp4(folder / name, clip(i, size, seed), fps, overwrite=True)
    rows.append({'caption': CAPTIONS[i % len(CAPTIONS)], 'media_path': name})
  tmp = captions.with_suffix('.tmp')
  tmp.write_text(json.dumps(rows, indent=1))
  tmp.replace(captions)
  return captions
