"""Training data: media and captions -> cached VAE latents and T5 embeddings.

  python -m ltx_jax.preprocess --config configs/preprocess.py \
      --config.input=clips/dataset.json --config.buckets='768x512x49;512x512x1' \
      --config.model.source=/models/ltxv
  python -m ltx_jax.preprocess --config configs/preprocess.py:smoke --config.input=clips/
  python -m ltx_jax.preprocess --config configs/preprocess.py \
      --config.decode=clips/.precomputed          # decode the cache back to videos

`input` is a CSV / JSON / JSONL listing (columns caption_column, media_column and optionally
reference_column; paths relative to the listing) or a folder of media with same-named .txt
captions. The cache goes to output_dir (default: .precomputed beside the listing / inside the
folder); a rerun completes it. The part after ':' is 'smoke' for the tiny random-weight model
(no download; a plumbing check, its latents mean nothing).
"""

from ltx_jax.cli import preprocess_run


def get_config(variant: str = ''):
  return preprocess_run.base_config(variant)
