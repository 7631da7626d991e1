"""Fine-tune LTX-Video with one of LTX-Video-Trainer's recipes (LoRA, full, IC-LoRA).

  python -m ltx_jax.train --config configs/train/ltxv.py:ltxv_2b_lora \
      --config.data.preprocessed_data_root=data/my_clips
  python -m ltx_jax.train --config configs/train/ltxv.py:ltxv_13b_ic_lora \
      --config.data.preprocessed_data_root=data/pairs --config.optimization.steps=3000

The part after ':' names the recipe, whose values are those of the official trainer's yaml of
the same name: ltxv_2b_lora (the default), ltxv_2b_full, ltxv_2b_lora_low_vram, ltxv_13b_lora,
ltxv_13b_ic_lora. Every key is listed in ltx_jax/cli/train_config.py (base_config); the dataset
folder is what `python -m ltx_jax.preprocess` writes. Running the same command again resumes
from the output folder's latest checkpoint.
"""

from ltx_jax.cli import train_config


def get_config(recipe: str = train_config.DEFAULT_RECIPE):
  return train_config.base_config(recipe or train_config.DEFAULT_RECIPE)
