"""The training command's dataset: the preprocessed folder (made first, for the smoke recipe,
from clips it writes itself), its checks against the model, and the loader.

The folder is what `python -m ltx_jax.preprocess` writes (ltx_jax.data: index.json + ArrayRecord
shards); training refuses one whose latents or text embeddings another VAE or text encoder made,
and an IC-LoRA recipe refuses one without reference latents.
"""

from __future__ import annotations

from pathlib import Path

from absl import logging

from ltx_jax.cli import train_config
from ltx_jax.errors import DataError, UsageError

SMOKE_CLIP = (17, 64, 64)  # frames, height, width of the smoke recipe's clips
SMOKE_FPS = 8.0


class NoLoader:
  """Stands in for the loader when a checkpoint is restored only to export it: its saved
  position is read and dropped."""

  def get_state(self):
    return b'{}'

  def set_state(self, state):
    del state


def dataset_folder(c, plan: train_config.TrainPlan, pipe, main: bool) -> Path:
  """The preprocessed data folder: config.data.preprocessed_data_root, or for the smoke recipe
  <output_dir>/dataset, made from data.smoke_clips clips with the smoke model's VAE and T5
  (process 0 makes it, the others wait)."""
  if plan.dataset is not None:
    return plan.dataset
  folder = plan.output_dir / 'dataset'
  if main and not (folder / 'index.json').exists():
    from ltx_jax.cli import train_smoke
    from ltx_jax.data import preprocess_items
    captions = train_smoke.make_clips(plan.output_dir / 'clips', c.data.smoke_clips,
                                      SMOKE_CLIP, SMOKE_FPS, seed=c.seed)
    frames, height, width = SMOKE_CLIP
    logging.info("smoke recipe: preprocessing %d clips into %s", c.data.smoke_clips, folder)
    preprocess_items(pipe, captions, folder, buckets=f"{width}x{height}x{frames}",
                     max_sequence_length=32, seed=c.seed)
  _barrier('smoke dataset')
  return folder


def _barrier(name: str) -> None:
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def check_dataset(c, folder: Path, pipe) -> None:
  """The folder's index and shards are sound, its latents come from this model's VAE (and its
  embeddings from this text encoder), and an IC-LoRA run has reference latents."""
  from ltx_jax.data import records
  index = records.read_index(folder)
  if not index.samples:
    raise DataError(f"{str(folder)!r} holds no samples")
  vae = records.model_identity(pipe.vae, pipe.release or 'unknown')
  records.check_models(index, vae=vae)
  if c.conditioning.mode == 'reference_video' and not all(
      s.get('reference') for s in index.samples):
    raise DataError(f"{str(folder)!r} has samples without reference latents; IC-LoRA "
                    "(conditioning.mode='reference_video') needs a reference video per sample "
                    "at preprocessing")
  latent = index.samples[0]['latent_shape']
  channels = pipe.transformer.config.in_channels
  if latent[-1] != channels:
    raise DataError(f"{str(folder)!r} holds latents with {latent[-1]} channels; this model "
                    f"takes {channels}")


def open_loader(c, folder: Path):
  """The grain loader over the folder: this process's share of each global batch, shuffled by
  config.seed, with a state the checkpoints save."""
  import jax
  from ltx_jax.data import Loader
  o = c.optimization
  per_process, rest = divmod(o.batch_size * jax.process_count(), jax.process_count())
  if o.batch_size % 1 or rest:
    raise UsageError(f"config.optimization.batch_size={o.batch_size}")
  return Loader(folder, batch_size=o.batch_size, seed=c.seed,
                reference=c.conditioning.mode == 'reference_video',
                workers=c.data.num_dataloader_workers)
