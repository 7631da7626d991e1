"""The training command's dataset: the preprocessed folder (made first, for the smoke recipe,
from clips it writes itself), its checks against the model, and the loader.

The folder is what `python -m ltx_jax.preprocess` writes (ltx_jax.data: index.json + ArrayRecord
shards); training refuses one whose latents or text embeddings another VAE or text encoder made
(the identities ltx_jax.data records), and one whose latents have another channel count.
"""

from __future__ import annotations

from pathlib import Path

from absl import logging

from ltx_jax.cli import train_config
from ltx_jax.errors import DataError, UsageError

SMOKE_CLIP = (17, 64, 64)  # frames, height, width of the smoke recipe's clips
SMOKE_FPS = 8.0
SMOKE_TEXT_LENGTH = 32


class NoLoader:
  """Stands in for the loader when a checkpoint is restored only to export it: its saved
  position is read and dropped."""

  def get_state(self):
    return {}

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
    from ltx_jax import data
    from ltx_jax.cli import train_smoke
    captions = train_smoke.make_clips(plan.output_dir / 'clips', c.data.smoke_clips,
                                      SMOKE_CLIP, SMOKE_FPS, seed=c.seed)
    items, problems = data.list_items(captions)
    frames, height, width = SMOKE_CLIP
    logging.info("smoke recipe: preprocessing %d clips into %s", len(items), folder)
    data.preprocess(items, data.Encoders(pipe, max_sequence_length=SMOKE_TEXT_LENGTH,
                                         seed=c.seed),
                    folder, data.PreprocessConfig(
                        data.parse_buckets(f"{width}x{height}x{frames}"),
                        # IC-LoRA: canny references computed from the clips
                        reference='canny' if c.conditioning.mode == 'reference_video'
                        else 'column'),
                    problems=problems, progress=False)
  _barrier('smoke dataset')
  return folder


def _barrier(name: str) -> None:
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def open_loader(c, folder: Path, pipe):
  """The loader over the folder (ltx_jax.data.BatchLoader): this process's rows of each global
  batch of optimization.batch_size, shuffled by config.seed. Refuses a folder that is damaged,
  whose latents another VAE made, or (IC-LoRA) that lacks reference latents."""
  import jax
  from ltx_jax import data
  batch = c.optimization.batch_size
  processes = jax.process_count()
  if batch % processes:
    raise UsageError(f"config.optimization.batch_size={batch} (the global batch) does not "
                     f"divide over {processes} processes; use a multiple of {processes}")
  # The identities the preprocessing recorded, computed the same way from this run's models.
  ids = data.Encoders(pipe, max_sequence_length=1).identities()
  loader = data.BatchLoader(folder, batch // processes, seed=c.seed, vae=ids['vae'],
                            text_encoder=ids['text_encoder'],
                            num_threads=max(c.data.num_dataloader_workers, 1))
  index = loader.index
  if c.conditioning.mode == 'reference_video' and not all(
      s.get('reference') for s in index.samples):
    raise DataError(f"{str(folder)!r} has samples without reference latents; IC-LoRA "
                    "(conditioning.mode='reference_video') needs a reference video per sample "
                    "at preprocessing")
  channels = pipe.transformer.config.in_channels
  shape = index.samples[0]['latent_shape']
  if shape[-1] != channels:
    raise DataError(f"{str(folder)!r} holds latents of {shape[-1]} channels; this model takes "
                    f"{channels}")
  return loader.iterator()
