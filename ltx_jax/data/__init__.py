"""Training data: media and captions -> cached VAE latents and T5 embeddings -> batches.

  from ltx_jax import data
  items, problems = data.list_items('clips/dataset.json')
  encoders = data.Encoders(data.load_encoders('smoke'), max_sequence_length=256)
  data.preprocess(items, encoders, 'clips/.precomputed',
                  data.PreprocessConfig(data.parse_buckets('768x512x49')))
  loader = data.BatchLoader('clips/.precomputed', batch_size=4, seed=0)
  it = loader.iterator()          # or loader.iterator(saved_state)
  batch = next(it)                # latents, context, context_mask, frame_rate[, reference_latents]
  saved_state = it.get_state()    # JSON-serialisable

The command is `python -m ltx_jax.preprocess` (ltx_jax/preprocess.py, configs/preprocess.py).
"""

from ltx_jax.data.buckets import Bucket, choose_bucket, parse_buckets
from ltx_jax.data.encode import LATENT_KINDS, Encoders, load_encoders
from ltx_jax.data.inspect import decode_samples
from ltx_jax.data.items import Item, Problem, list_items
from ltx_jax.data.loader import BatchIterator, BatchLoader, CachedSamples, epoch_plan
from ltx_jax.data.prepare import PreprocessConfig, Summary, preprocess
from ltx_jax.data.records import Identity, Index, check_models, model_identity, read_index

__all__ = [
    'Bucket', 'choose_bucket', 'parse_buckets',
    'LATENT_KINDS', 'Encoders', 'load_encoders',
    'decode_samples',
    'Item', 'Problem', 'list_items',
    'BatchIterator', 'BatchLoader', 'CachedSamples', 'epoch_plan',
    'PreprocessConfig', 'Summary', 'preprocess',
    'Identity', 'Index', 'check_models', 'model_identity', 'read_index',
]
