"""Validation videos during training: the configured prompts rendered with the live weights.

The pipeline's transformer is the model being trained (its LoRA factors, or its own weights in
a full fine-tune, are the train state's): `render` copies the current trainable values into it
and runs `LTXPipeline.__call__`, which splits the transformer at each call. Every validation video
has the same shapes and the weights are traced values, so the text encoder, the denoising loop
and the decoder compile once for the whole run.

Per validation step: <output_dir>/validation/step_NNNNNN/PP-slug-vV.mp4 for each prompt P and
video V, and step_NNNNNN.png, a contact sheet (one row per video, frames evenly spaced).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ltx_jax.cli.config import slug

SHEET_FRAMES = 5  # frames per contact-sheet row


class Validator:
  """Renders `config.validation` with a pipeline whose transformer is the trained model."""

  def __init__(self, pipe, c, output_dir: Path, *, main: bool):
    self.pipe, self.v, self.main = pipe, c.validation, main
    self.folder = Path(output_dir) / 'validation'
    self.reference = c.conditioning.mode == 'reference_video'

  def _call_args(self, index: int) -> dict:
    from ltx_jax.pipeline.conditioning import Condition
    from ltx_jax.pipeline.guides import Guide
    v = self.v
    width, height, frames = tuple(v.video_dims)
    kw = dict(negative_prompt=v.negative_prompt, height=height, width=width, num_frames=frames,
              frame_rate=v.frame_rate, num_inference_steps=v.inference_steps,
              guidance_scale=v.guidance_scale, decode_timestep=0.05, decode_noise_scale=0.025,
              progress=False)
    if v.images:
      kw['conditions'] = [Condition(image=os.path.expanduser(v.images[index]))]
    if v.reference_videos:
      kw['guides'] = [Guide(video=os.path.expanduser(v.reference_videos[index]))]
    return kw

  def render(self, step: int, sync: Callable[[], None],
             on_video: Callable[[str, np.ndarray], None] | None = None) -> list[Path]:
    """Renders every prompt at `step` after `sync()` has put the live weights into the
    pipeline's transformer; returns the mp4 paths (process 0 writes them). on_video(name,
    strip): each video's contact-sheet row (uint8 [H, n * W, 3])."""
    from ltx_jax import video_io
    sync()
    step_dir = self.folder / f"step_{step:06d}"
    rows, written = [], []
    for i, prompt in enumerate(self.v.prompts):
      for k in range(self.v.videos_per_prompt):
        out = self.pipe(prompt=prompt, seed=self.v.seed + k, **self._call_args(i))
        frames = out.frames[0]  # uint8 [F, H, W, 3]
        name = f"{i:02d}-{slug(prompt, 32)}-v{k}"
        rows.append(_sheet_row(frames))
        if not self.main:
          continue
        if on_video is not None:
          on_video(name, rows[-1])
        step_dir.mkdir(parents=True, exist_ok=True)
        path = video_io.write_mp4(step_dir / f"{name}.mp4", frames, self.v.frame_rate,
                                  overwrite=True)
        written.append(path)
    if self.main and rows:
      from PIL import Image
      sheet = self.folder / f"step_{step:06d}.png"
      tmp = sheet.with_suffix('.tmp.png')
      Image.fromarray(np.concatenate(rows, axis=0)).save(tmp)
      tmp.replace(sheet)
    return written


def _sheet_row(frames: np.ndarray) -> np.ndarray:
  """SHEET_FRAMES frames of a video side by side: uint8 [H, n * W, 3]."""
  idx = np.unique(np.linspace(0, len(frames) - 1, SHEET_FRAMES).round().astype(int))
  return np.concatenate([frames[j] for j in idx], axis=1)
