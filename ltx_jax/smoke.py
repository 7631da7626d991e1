"""A tiny random-weight LTX-Video pipeline: a plumbing check, not a model.

Every component is ltx_jax's own module at toy size with random weights, and the tokenizer is a
small sentencepiece model trained in memory from a fixed text. Its videos are noise. It exists
so the whole path -- tokenize, T5, denoising loop, VAE decode, video files -- runs on a laptop
CPU in seconds, without any download. The VAE keeps the released models' compression (8x
temporal, 32x spatial), so size checks behave as with real weights.

Weights are drawn on the host with numpy into the models' abstract shapes (`nnx.eval_shape`,
then fill, then merge): running the modules' own initializers compiles one XLA program per
parameter shape, which costs more than a minute on a 2-core CPU.
"""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
from flax import nnx

from ltx_jax import sharding
from ltx_jax.models.random import random_weights
from ltx_jax.models.t5 import T5Config, T5Encoder, T5Tokenizer
from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig, add_loras
from ltx_jax.models.vae import VAEConfig, VideoAutoencoder
from ltx_jax.pipeline import LTXPipeline
from ltx_jax.sampling import SchedulerConfig
from ltx_jax.weights import precision

__all__ = ['RELEASE', 'T5', 'TRANSFORMER', 'VAE', 'build_pipeline', 'tokenizer']

RELEASE = 'smoke'
TEXT_DIM = 32
LATENT = 16
VOCAB = 96

TRANSFORMER = TransformerConfig(num_layers=2, num_heads=2, head_dim=16, in_channels=LATENT,
                                out_channels=LATENT, cross_attention_dim=32,
                                caption_channels=TEXT_DIM)
T5 = T5Config(vocab_size=VOCAB, d_model=TEXT_DIM, num_heads=2, head_dim=16, d_ff=48,
              num_layers=2, num_buckets=8, max_distance=20)


def _res(n: int, noise: bool = False) -> list:
  return ['res_x', {'num_layers': n, 'inject_noise': noise}]


# The 0.9.5+ VAE layout at toy width: typed space-to-depth encoder, residual timestep-conditioned
# decoder; patch 4 and three 2x2x2 stages give 8x temporal and 32x spatial compression.
VAE = VAEConfig.from_official({
    'dims': 3, 'in_channels': 3, 'out_channels': 3, 'latent_channels': LATENT,
    'encoder_blocks': [_res(1), ['compress_all_res', {'multiplier': 2}],
                       ['compress_all_res', {'multiplier': 2}],
                       ['compress_all_res', {'multiplier': 1}], _res(1)],
    'decoder_blocks': [_res(1, True), ['compress_all', {'residual': True, 'multiplier': 2}],
                       ['compress_all', {'residual': True, 'multiplier': 2}],
                       ['compress_all', {'residual': True, 'multiplier': 1}], _res(1)],
    'encoder_base_channels': 8, 'decoder_base_channels': 8, 'scaling_factor': 1.0,
    'norm_layer': 'pixel_norm', 'patch_size': 4, 'latent_log_var': 'uniform',
    'use_quant_conv': False, 'causal_decoder': False, 'timestep_conditioning': True,
})

# Fixed training text for the toy vocabulary (sentencepiece needs some variety to reach VOCAB).
_TEXT = """a cat sits on the mat while a dog runs in the park under a blue sky
video of waves crashing on rocks at sunset, the camera zooms slowly into the forest
a woman with long brown hair walks along a beach at dawn, seagulls fly overhead
close up of a red flower opening in the rain, drops of water on the petals
an old man reads a newspaper in a quiet cafe, warm light through the window
a futuristic city at night with neon signs, flying cars and crowded streets
two children play football on a green field, the ball rolls towards the goal
a river flows through a snowy valley surrounded by tall mountains and pine trees"""


@functools.lru_cache(maxsize=1)
def tokenizer_model() -> bytes:
  """A unigram sentencepiece model with T5's special ids (pad 0, eos 1, unk 2), trained from a
  fixed text; deterministic, a fraction of a second."""
  import sentencepiece as spm
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_TEXT.splitlines() * 4), model_writer=buf, vocab_size=VOCAB,
      model_type='unigram', pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
      num_threads=1, minloglevel=2)
  return buf.getvalue()


def tokenizer() -> T5Tokenizer:
  import sentencepiece as spm
  return T5Tokenizer(spm.SentencePieceProcessor(model_proto=tokenizer_model()))


def build_pipeline(seed: int = 0, dtype=jnp.float32, *, text_encoder_dtype=None,
                   attention: str = 'auto', mesh: jax.sharding.Mesh | None = None,
                   rules: sharding.Rules | None = None,
                   context_attention: str = 'allgather', loras=None,
                   lora_mode: str = 'merged', lora_strict: bool = True) -> LTXPipeline:
  """The smoke pipeline with random weights drawn from `seed`.

  The other arguments mean what they mean for `LTXPipeline.from_pretrained`: dtype (compute and
  storage of the transformer and VAE; text_encoder_dtype defaults to it), attention, and mesh /
  rules / context_attention (parameters placed on the mesh by the rules, activations
  constrained by them, self-attention context parallel over the 'context' axis), loras /
  lora_mode / lora_strict (LoRA files for the smoke transformer's shapes, `add_loras`).
  """
  dtype = precision.parse(dtype, what='compute')  # 'f32', 'bf16', jnp.bfloat16, ...
  te_dtype = dtype if text_encoder_dtype is None else precision.parse(text_encoder_dtype,
                                                                      what='compute')
  transformer = random_weights(
      lambda: LTXVideoTransformer(TRANSFORMER, dtype=dtype, param_dtype=dtype,
                                  attention=attention, rngs=nnx.Rngs(0)), seed)
  vae = random_weights(
      lambda: VideoAutoencoder(VAE, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)), seed + 1)
  text_encoder = random_weights(
      lambda: T5Encoder(T5, dtype=te_dtype, attention=attention, rngs=nnx.Rngs(0)), seed + 2)
  partitioning = None
  if mesh is not None:
    for module in (transformer, vae, text_encoder):
      sharding.shard_module(module, mesh, rules)
    partitioning = sharding.Partitioning.create(mesh, rules, context_attention)
  add_loras(transformer, loras, lora_mode=lora_mode, lora_strict=lora_strict, mesh=mesh,
            rules=rules)
  return LTXPipeline(transformer, vae, text_encoder, tokenizer(), SchedulerConfig(),
                     release=RELEASE, partitioning=partitioning)
