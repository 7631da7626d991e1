"""Tiny random LTX-Video components written in the real file formats by the references."""

import copy
import json
from pathlib import Path

import gguf
import numpy as np
import torch
from flax import nnx

from conftest import randomize_torch_module
from release_metadata import DIFFUSERS_SCHEDULER_090, TRANSFORMER_090, TRANSFORMER_095

LATENT = 8
TEXT_DIM = 32
# A 0.9.1-style VAE: timestep-conditioned decoder; spatial compression 8, temporal 4.
VAE_091 = dict(
    block_out_channels=(4, 8, 16, 16), layers_per_block=(1, 1, 1, 1, 1),
    spatio_temporal_scaling=(True, True, False, False),
    decoder_block_out_channels=(8, 16), decoder_layers_per_block=(1, 2, 1),
    decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(True, True, False),
    upsample_residual=(True, True), upsample_factor=(2, 2), timestep_conditioning=True)
# The recorded 0.9.0 diffusers scheduler_config.json (release_metadata.py), as kwargs.
SCHEDULER = {k: v for k, v in DIFFUSERS_SCHEDULER_090.items() if not k.startswith('_')}
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


def official_transformer_config(heads=2, head_dim=8, layers=2, in_channels=LATENT,
                                caption_channels=TEXT_DIM, causal=False):
  """An official `Transformer3DModel` config as the single files' metadata holds it: the
  recorded 0.9.5+ entry (causal) or 0.9.0 entry (release_metadata.py) with tiny sizes."""
  base = TRANSFORMER_095 if causal else TRANSFORMER_090
  return dict(copy.deepcopy(base), num_attention_heads=heads, attention_head_dim=head_dim,
              in_channels=in_channels, out_channels=in_channels, num_layers=layers,
              cross_attention_dim=heads * head_dim, caption_channels=caption_channels)


# A timestep-conditioned official VAE: spatial compression 8, temporal 4.
OFFICIAL_VAE = dict(
    _class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
    latent_channels=LATENT, norm_layer='pixel_norm', latent_log_var='uniform',
    use_quant_conv=False, scaling_factor=1.0, patch_size=2, encoder_base_channels=4,
    decoder_base_channels=4, spatial_padding_mode='zeros', timestep_conditioning=True,
    causal_decoder=False,
    encoder_blocks=[['res_x', {'num_layers': 1}], ['compress_space_res', {'multiplier': 2}],
                    ['compress_time_res', {'multiplier': 2}],
                    ['compress_all_res', {'multiplier': 2}], ['res_x_y', 1]],
    decoder_blocks=[['res_x', {'num_layers': 1, 'inject_noise': True}],
                    ['compress_all', {'residual': True, 'multiplier': 2}],
                    ['res_x_y', {'multiplier': 2}], ['compress_time', {}],
                    ['compress_space', {}], ['res_x', {'num_layers': 1}]])


def official_single_file(path: Path, scheduler: dict, seed: int = 0, causal: bool = True,
                         vae_config: dict | None = None):
  """An official single file (transformer + VAE + scheduler config) with random weights,
  written from official modules and read back by the official loaders (vae_config: an official
  VAE config, default OFFICIAL_VAE). Returns them."""
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  from ltx_video.models.transformers.transformer3d import Transformer3DModel
  from ltx_video.schedulers.rf import RectifiedFlowScheduler
  from ltx_jax.weights import write_safetensors
  torch.manual_seed(seed)
  tcfg = official_transformer_config(causal=causal)
  transformer = Transformer3DModel.from_config(tcfg)
  randomize_torch_module(transformer, seed=seed, std=0.1)
  vae_config = OFFICIAL_VAE if vae_config is None else vae_config
  vae = CausalVideoAutoencoder.from_config(json.loads(json.dumps(vae_config)))
  randomize_torch_module(vae, seed=seed + 1)
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if 'per_channel_scale' in name:
        p.zero_()
      if name.endswith('timestep_scale_multiplier'):
        p.fill_(1000.0)
  tensors = {f'model.diffusion_model.{k}': v.numpy() for k, v in transformer.state_dict().items()}
  tensors.update({f'vae.{k}': v.numpy() for k, v in vae.state_dict().items()})
  rng = np.random.default_rng(seed)
  stats = {'mean-of-means': rng.normal(size=LATENT) * 0.3,
           'std-of-means': rng.uniform(0.5, 2, LATENT),
           'mean-of-stds': rng.uniform(size=LATENT), 'channel': np.arange(LATENT)}
  for k, v in stats.items():
    tensors[f'vae.per_channel_statistics.{k}'] = np.asarray(v, np.float32)
  write_safetensors(path, tensors, {'config': json.dumps(
      {'transformer': tcfg, 'vae': vae_config, 'scheduler': scheduler})})
  return (Transformer3DModel.from_pretrained(str(path)).float().eval(),
          CausalVideoAutoencoder.from_pretrained(str(path)).float().eval(),
          RectifiedFlowScheduler.from_pretrained(str(path)))


def gguf_name(hf: str) -> str:
  """transformers T5 encoder key -> llama.cpp name."""
  parts = hf.split('.')
  if hf == 'shared.weight':
    return 'token_embd.weight'
  if hf == 'encoder.final_layer_norm.weight':
    return 'enc.output_norm.weight'
  i, sub, rest = parts[2], parts[4], '.'.join(parts[5:])
  names = {
      ('0', 'layer_norm.weight'): 'attn_norm', ('1', 'layer_norm.weight'): 'ffn_norm',
      ('0', 'SelfAttention.q.weight'): 'attn_q', ('0', 'SelfAttention.k.weight'): 'attn_k',
      ('0', 'SelfAttention.v.weight'): 'attn_v', ('0', 'SelfAttention.o.weight'): 'attn_o',
      ('0', 'SelfAttention.relative_attention_bias.weight'): 'attn_rel_b',
      ('1', 'DenseReluDense.wi_0.weight'): 'ffn_gate',
      ('1', 'DenseReluDense.wi_1.weight'): 'ffn_up',
      ('1', 'DenseReluDense.wo.weight'): 'ffn_down'}
  return f'enc.blk.{i}.{names[sub, rest]}.weight'


def write_gguf(path, cfg, tensors, arch='t5encoder'):
  """tensors: {gguf name: (data, raw_dtype)}; writes llama.cpp's T5 metadata for `cfg` (an
  ltx_jax T5Config)."""
  w = gguf.GGUFWriter(str(path), arch)
  w.add_context_length(512)
  w.add_embedding_length(cfg.d_model)
  w.add_feed_forward_length(cfg.d_ff)
  w.add_block_count(cfg.num_layers)
  w.add_head_count(cfg.num_heads)
  w.add_key_length(cfg.head_dim)
  w.add_value_length(cfg.head_dim)
  w.add_layer_norm_rms_eps(cfg.eps)
  w.add_relative_attn_buckets_count(cfg.num_buckets)
  for name, (data, raw_dtype) in tensors.items():
    w.add_tensor(name, data, raw_dtype=raw_dtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def random_lora(path: Path, config, *, rank: int = 2, seed: int = 0,
                targets=('to_q', 'to_v', 'ff.net.2'), std: float = 0.3) -> Path:
  """A diffusers-layout LoRA file (`transformer.<module>.lora_A/B.weight`, alpha = rank) with
  random factors for every Linear of a DiT with `config` (ltx_jax TransformerConfig) whose
  diffusers module name ends in one of `targets`."""
  from ltx_jax.models.transformer import DIFFUSERS_TABLE, abstract_transformer
  from ltx_jax.weights import plan_from_table, write_safetensors
  model = abstract_transformer(config)
  variables = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)}
  rng = np.random.default_rng(seed)
  tensors = {}
  for p, src in plan_from_table(model, DIFFUSERS_TABLE).items():
    if p[-1] != 'kernel':
      continue
    d_in, d_out = variables[p].get_value().shape[-2:]
    for key in src.keys:
      module = key[:-len('.weight')]
      if module.endswith(tuple(targets)):
        tensors[f'transformer.{module}.lora_A.weight'] = rng.normal(
            0, std, (rank, d_in)).astype(np.float32)
        tensors[f'transformer.{module}.lora_B.weight'] = rng.normal(
            0, std, (d_out, rank)).astype(np.float32)
  write_safetensors(path, tensors)
  return path
