"""Tiny random LTX-Video components written in the real file formats by the references."""

import json
from pathlib import Path

import numpy as np
import torch

from conftest import randomize_torch_module

LATENT = 8
TEXT_DIM = 32
# A 0.9.1-style VAE: timestep-conditioned decoder; spatial compression 8, temporal 4.
VAE_091 = dict(
    block_out_channels=(4, 8, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, False, False),
    decoder_block_out_channels=(8, 16), decoder_layers_per_block=(1, 2, 1),
    decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(True, True, False),
    upsample_residual=(True, True), upsample_factor=(2, 2), timestep_conditioning=True)
SCHEDULER = dict(base_image_seq_len=1024, base_shift=0.95, max_image_seq_len=4096,
                 max_shift=2.05, num_train_timesteps=1000, shift=1.0, shift_terminal=0.1,
                 use_dynamic_shifting=True, time_shift_type='exponential')
WORDS = ("a cat sits on the mat while the dog runs in the park under the blue sky, "
         "video of waves crashing on rocks at sunset; zoom slowly into the forest").split()


def train_spiece(path: Path, vocab: int = 64) -> Path:
  """A small unigram sentencepiece model with T5's special ids (pad 0, eos 1, unk 2)."""
  import sentencepiece as spm
  rng = np.random.default_rng(0)
  text = '\n'.join(' '.join(rng.choice(WORDS, 12)) for _ in range(400))
  corpus = path.with_suffix('.txt')
  corpus.write_text(text)
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(path.with_suffix('')), vocab_size=vocab,
      model_type='unigram', pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
      minloglevel=2)
  return path.with_suffix('.model')


def tiny_repo(root: Path, seed: int = 0):
  """Writes a diffusers-layout LTX-Video repo with tiny random weights. Returns the torch
  components (transformer, vae, text_encoder, scheduler)."""
  from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler
  from diffusers import LTXVideoTransformer3DModel
  from transformers import T5Config, T5EncoderModel
  torch.manual_seed(seed)
  transformer = LTXVideoTransformer3DModel(
      in_channels=LATENT, out_channels=LATENT, num_attention_heads=2, attention_head_dim=8,
      cross_attention_dim=16, num_layers=2, caption_channels=TEXT_DIM).eval()
  randomize_torch_module(transformer, seed=seed, std=0.1)
  vae = AutoencoderKLLTXVideo(latent_channels=LATENT, patch_size=2, scaling_factor=1.0,
                              **VAE_091).eval()
  randomize_torch_module(vae, seed=seed + 1)
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if 'per_channel_scale' in name:
        p.zero_()  # noise injection is random: parity runs without it
      if name.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
    vae.latents_mean.copy_(torch.linspace(-0.5, 0.5, LATENT))
    vae.latents_std.copy_(torch.linspace(0.5, 2, LATENT))
  text_encoder = T5EncoderModel(T5Config(
      vocab_size=64, d_model=TEXT_DIM, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
      feed_forward_proj='gated-gelu', dropout_rate=0.0, relative_attention_num_buckets=8,
      relative_attention_max_distance=20)).eval()
  randomize_torch_module(text_encoder, seed=seed + 2)
  scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
  transformer.save_pretrained(root / 'transformer')
  vae.save_pretrained(root / 'vae')
  text_encoder.save_pretrained(root / 'text_encoder')
  scheduler.save_pretrained(root / 'scheduler')
  (root / 'tokenizer').mkdir(parents=True, exist_ok=True)
  train_spiece(root / 'tokenizer' / 'spiece.model')
  (root / 'model_index.json').write_text(json.dumps({
      '_class_name': 'LTXPipeline', 'scheduler': ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
      'text_encoder': ['transformers', 'T5EncoderModel'],
      'tokenizer': ['transformers', 'T5Tokenizer'],
      'transformer': ['diffusers', 'LTXVideoTransformer3DModel'],
      'vae': ['diffusers', 'AutoencoderKLLTXVideo']}))
  return transformer, vae, text_encoder, scheduler
