"""The released LTX-Video files' config metadata as public sources record it, and `shrink`.

Every dict below is copied verbatim from ../shared/RELEASE_METADATA.md (section numbers in the
comments), which names each value's public source and how sure it is. Reconstructions (a
release whose entry no public source shows) are built from the recorded dicts exactly as that
document infers them, and say so. `allowed_inference_steps` is the literal of the distilled files
(0.9937 is a float32 artefact of the official writer: never recompute it).

`shrink(config, kind)` makes a recorded entry tiny for tests: it changes only size fields
(layers, heads, head dim, widths, latent channels, block channels / num_layers) and leaves every
other key, value form, null and absent key as the release has it. The official VAE entries name
no base channels (the official class defaults to 128); shrinking adds `encoder_base_channels` /
`decoder_base_channels`, the official keys for those widths.
"""

from __future__ import annotations

import copy

# -- 0.9.0 (`ltx-video-2b-v0.9.safetensors`) --------------------------------------------------

# §2.1: Lightricks' transformer/transformer_config.json of 0.9.0 (HF history of
# Lightricks/LTX-Video; = OURS_TRANSFORMER_CONFIG of ltx_video/utils/diffusers_config_mapping.py).
TRANSFORMER_090 = {
    "_class_name": "Transformer3DModel",
    "_diffusers_version": "0.25.1",
    "_name_or_path": "PixArt-alpha/PixArt-XL-2-256x256",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 64,
    "attention_type": "default",
    "caption_channels": 4096,
    "cross_attention_dim": 2048,
    "double_self_attention": False,
    "dropout": 0.0,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 128,
    "project_to_2d_pos": True,
    "upcast_attention": False,
    "use_linear_projection": False,
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000,
}
# §2.2: Lightricks' vae/config.json of 0.9.0 (437 bytes, json.dumps of this dict).
VAE_090 = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
           "latent_channels": 128,
           "blocks": [["res_x", 4], ["compress_all", 1], ["res_x_y", 1], ["res_x", 3],
                      ["compress_all", 1], ["res_x_y", 1], ["res_x", 3], ["compress_all", 1],
                      ["res_x", 3], ["res_x", 4]],
           "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4,
           "latent_log_var": "uniform", "use_quant_conv": False, "causal_decoder": False}
# §2.3: Lightricks' scheduler/scheduler_config.json of 0.9.0, first upload (commit 179180d) and
# after "Add stretching to scheduler_config" (6e9082f; = OURS_SCHEDULER_CONFIG), the likelier one.
SCHEDULER_090_FIRST = {
    "_class_name": "RectifiedFlowScheduler",
    "_diffusers_version": "0.25.1",
    "num_train_timesteps": 1000,
    "shifting": "SD3",
    "base_resolution": None,
}
SCHEDULER_090 = {
    "_class_name": "RectifiedFlowScheduler",
    "_diffusers_version": "0.25.1",
    "num_train_timesteps": 1000,
    "shifting": "SD3",
    "base_resolution": None,
    "target_shift_terminal": 0.1,
}

# -- 0.9.1 (`ltx-video-2b-v0.9.1.safetensors`) ------------------------------------------------

# §3.1: ComfyUI's VideoVAE.guess_config(version=1) (comfyanonymous/ComfyUI@060dbf5), its mixed
# block forms likely copied from the header. Transformer and scheduler: not found; §3 infers the
# 0.9.0 ones (project_to_2d_pos still in the code, causal_temporal_positioning not yet).
VAE_091 = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "decoder_blocks": [
        ["res_x", {"num_layers": 5, "inject_noise": True}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 6, "inject_noise": True}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 7, "inject_noise": True}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 8, "inject_noise": False}]
    ],
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}],
        ["compress_all", {}],
        ["res_x_y", 1],
        ["res_x", {"num_layers": 3}],
        ["compress_all", {}],
        ["res_x_y", 1],
        ["res_x", {"num_layers": 3}],
        ["compress_all", {}],
        ["res_x", {"num_layers": 3}],
        ["res_x", {"num_layers": 4}]
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": True,
}
TRANSFORMER_091 = TRANSFORMER_090  # inferred (§3)
SCHEDULER_091 = SCHEDULER_090  # inferred (§3: diffusers converts 0.9.1 with SD3 + terminal 0.1)

# -- 0.9.5+ (`ltx-video-2b-v0.9.5.safetensors`, 0.9.6, 2B 0.9.8) ------------------------------

# §4.1 (Kosinkadink/Dinkster@4258cb5 tools/gen_ltx_model_goldens.py): 0.9.0's dict without
# project_to_2d_pos, plus causal_temporal_positioning true.
TRANSFORMER_095 = {k: v for k, v in TRANSFORMER_090.items() if k != "project_to_2d_pos"} | {
    "causal_temporal_positioning": True}
# §4.2 (Dinkster tools/gen_ltx_vae_goldens.py; keys sorted by them).
VAE_095 = {
    "_class_name": "CausalVideoAutoencoder",
    "causal_decoder": False,
    "decoder_blocks": [
        ["res_x", {"inject_noise": False, "num_layers": 5}],
        ["compress_all", {"multiplier": 2, "residual": True}],
        ["res_x", {"inject_noise": False, "num_layers": 5}],
        ["compress_all", {"multiplier": 2, "residual": True}],
        ["res_x", {"inject_noise": False, "num_layers": 5}],
        ["compress_all", {"multiplier": 2, "residual": True}],
        ["res_x", {"inject_noise": False, "num_layers": 5}],
    ],
    "dims": 3,
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
    ],
    "in_channels": 3,
    "latent_channels": 128,
    "latent_log_var": "uniform",
    "norm_layer": "pixel_norm",
    "normalize_latent_channels": False,
    "out_channels": 3,
    "patch_size": 4,
    "scaling_factor": 1.0,
    "timestep_conditioning": True,
    "use_quant_conv": False,
}
# §6: LTX-2's verbatim scheduler entry (a public ltx-core fork's ORIGINAL_CONFIG_JSON), the
# evidence's best guess for every 0.9.5+ file (official configs say sampler "from_checkpoint";
# their guidance timesteps are unshifted LinearQuadratic points).
SCHEDULER_LTX2 = {"_class_name": "RectifiedFlowScheduler", "_diffusers_version": "0.25.1",
                  "num_train_timesteps": 1000, "shifting": None, "base_resolution": None,
                  "sampler": "LinearQuadratic"}
# §5: the distilled files' top-level `allowed_inference_steps` (0.9.6-distilled and 13B 0.9.8
# distilled exact; 2B 0.9.8 distilled quoted x1000; 13B 0.9.7 distilled inferred).
ALLOWED_INFERENCE_STEPS = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]

# -- 13B 0.9.7 / 0.9.8 -------------------------------------------------------------------------

# §7.1 reconstruction (no dump found): 0.9.5's dict with the 13B sizes of diffusers'
# get_transformer_config("0.9.7") and maxdiffusion's ltxv-13B.json. VAE: §7.2, 0.9.5's.
TRANSFORMER_13B = TRANSFORMER_095 | {"attention_head_dim": 128, "cross_attention_dim": 4096,
                                     "num_layers": 48}

# -- latent upscalers (§8) ---------------------------------------------------------------------

# Spatial 0.9.7 / 0.9.8 (a byte copy of 0.9.7): LatentUpsampler.config()'s keys with diffusers'
# get_spatial_latent_upsampler_config values. Temporal: inferred (§8, low confidence).
SPATIAL_UPSCALER = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 512,
                    "num_blocks_per_stage": 4, "dims": 3, "spatial_upsample": True,
                    "temporal_upsample": False}
TEMPORAL_UPSCALER = SPATIAL_UPSCALER | {"spatial_upsample": False, "temporal_upsample": True}

# -- diffusers folders (§9) --------------------------------------------------------------------

# Lightricks/LTX-Video transformer/config.json (0.9.0, 43b830b).
DIFFUSERS_TRANSFORMER_090 = {
    "_class_name": "LTXVideoTransformer3DModel",
    "_diffusers_version": "0.32.0.dev0",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 64,
    "attention_out_bias": True,
    "caption_channels": 4096,
    "cross_attention_dim": 2048,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "num_attention_heads": 32,
    "num_layers": 28,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "qk_norm": "rms_norm_across_heads",
}
# Lightricks/LTX-Video scheduler/scheduler_config.json (05be24f).
DIFFUSERS_SCHEDULER_090 = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.32.0.dev0",
    "base_image_seq_len": 1024,
    "base_shift": 0.95,
    "invert_sigmas": False,
    "max_image_seq_len": 4096,
    "max_shift": 2.05,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.1,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
# diffusers/LTX-Video-0.9.0@cdeb3e0 vae/config.json.
DIFFUSERS_VAE_090 = {
    "_class_name": "AutoencoderKLLTXVideo",
    "_diffusers_version": "0.32.0.dev0",
    "block_out_channels": [128, 256, 512, 512],
    "decoder_causal": False,
    "encoder_causal": True,
    "in_channels": 3,
    "latent_channels": 128,
    "layers_per_block": [4, 3, 3, 3, 4],
    "out_channels": 3,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-06,
    "scaling_factor": 1.0,
    "spatio_temporal_scaling": [True, True, True, False],
}
# jbilcke-hf/LTX-Video-0.9.1-HFIE@25b26b8 vae/config.json (a mirror of 0.9.1).
DIFFUSERS_VAE_091 = {
    "_class_name": "AutoencoderKLLTXVideo",
    "_diffusers_version": "0.32.0.dev0",
    "block_out_channels": [128, 256, 512, 512],
    "decoder_block_out_channels": [256, 512, 1024],
    "decoder_causal": False,
    "decoder_inject_noise": [True, True, True, False],
    "decoder_layers_per_block": [5, 6, 7, 8],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "encoder_causal": True,
    "in_channels": 3,
    "latent_channels": 128,
    "layers_per_block": [4, 3, 3, 3, 4],
    "out_channels": 3,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-06,
    "scaling_factor": 1.0,
    "spatio_temporal_scaling": [True, True, True, False],
    "timestep_conditioning": True,
    "upsample_factor": [2, 2, 2],
    "upsample_residual": [True, True, True],
}
# callgg/ltxv0.9.8-decoder vae/config.json (third party; the 0.9.5+ VAE in diffusers form).
DIFFUSERS_VAE_095 = {
    "_class_name": "AutoencoderKLLTXVideo",
    "_diffusers_version": "0.34.0.dev0",
    "block_out_channels": [128, 256, 512, 1024, 2048],
    "decoder_block_out_channels": [256, 512, 1024],
    "decoder_causal": False,
    "decoder_inject_noise": [False, False, False, False],
    "decoder_layers_per_block": [5, 5, 5, 5],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "down_block_types": ["LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D",
                         "LTXVideo095DownBlock3D", "LTXVideo095DownBlock3D"],
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "encoder_causal": True,
    "in_channels": 3,
    "latent_channels": 128,
    "layers_per_block": [4, 6, 6, 2, 2],
    "out_channels": 3,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-06,
    "scaling_factor": 1.0,
    "spatial_compression_ratio": 32,
    "spatio_temporal_scaling": [True, True, True, True],
    "temporal_compression_ratio": 8,
    "timestep_conditioning": True,
    "upsample_factor": [2, 2, 2],
    "upsample_residual": [True, True, True],
}
# Lightricks/LTX-Video-0.9.7-dev transformer/config.json (refs/pr/3).
DIFFUSERS_TRANSFORMER_097 = DIFFUSERS_TRANSFORMER_090 | {
    "_diffusers_version": "0.34.0.dev0", "attention_head_dim": 128, "cross_attention_dim": 4096,
    "num_layers": 48}
# What diffusers' convert_ltx_to_diffusers.py writes for 0.9.5 / 0.9.7 (text not found):
# FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False), every other field its default,
# and LTXLatentUpsamplerModel with the spatial upscaler's values. Built from the installed
# diffusers classes (`diffusers_scheduler_095`, `diffusers_upsampler`).

# -- the releases --------------------------------------------------------------------------------

# name -> (file, transformer, vae, scheduler, allowed_inference_steps or None)
RELEASES = {
    'ltxv-2b-0.9.0-dev': ('ltx-video-2b-v0.9.safetensors', TRANSFORMER_090, VAE_090,
                          SCHEDULER_090, None),
    'ltxv-2b-0.9.1-dev': ('ltx-video-2b-v0.9.1.safetensors', TRANSFORMER_091, VAE_091,
                          SCHEDULER_091, None),
    'ltxv-2b-0.9.5-dev': ('ltx-video-2b-v0.9.5.safetensors', TRANSFORMER_095, VAE_095,
                          SCHEDULER_LTX2, None),
    'ltxv-2b-0.9.6-dev': ('ltxv-2b-0.9.6-dev-04-25.safetensors', TRANSFORMER_095, VAE_095,
                          SCHEDULER_LTX2, None),
    'ltxv-2b-0.9.6-distilled': ('ltxv-2b-0.9.6-distilled-04-25.safetensors', TRANSFORMER_095,
                                VAE_095, SCHEDULER_LTX2, ALLOWED_INFERENCE_STEPS),
    'ltxv-13b-0.9.7-dev': ('ltxv-13b-0.9.7-dev.safetensors', TRANSFORMER_13B, VAE_095,
                           SCHEDULER_LTX2, None),
    'ltxv-13b-0.9.7-distilled': ('ltxv-13b-0.9.7-distilled.safetensors', TRANSFORMER_13B,
                                 VAE_095, SCHEDULER_LTX2, ALLOWED_INFERENCE_STEPS),
    'ltxv-13b-0.9.8-dev': ('ltxv-13b-0.9.8-dev.safetensors', TRANSFORMER_13B, VAE_095,
                           SCHEDULER_LTX2, None),
    'ltxv-13b-0.9.8-distilled': ('ltxv-13b-0.9.8-distilled.safetensors', TRANSFORMER_13B,
                                 VAE_095, SCHEDULER_LTX2, ALLOWED_INFERENCE_STEPS),
    'ltxv-2b-0.9.8-distilled': ('ltxv-2b-0.9.8-distilled.safetensors', TRANSFORMER_095, VAE_095,
                                SCHEDULER_LTX2, ALLOWED_INFERENCE_STEPS),
}
UPSCALERS = {'ltxv-spatial-upscaler-0.9.7.safetensors': SPATIAL_UPSCALER,
             'ltxv-spatial-upscaler-0.9.8.safetensors': SPATIAL_UPSCALER,
             'ltxv-temporal-upscaler-0.9.7.safetensors': TEMPORAL_UPSCALER}
# diffusers folders: name -> (transformer, vae, scheduler or None = diffusers_scheduler_095())
DIFFUSERS_RELEASES = {
    '0.9.0': (DIFFUSERS_TRANSFORMER_090, DIFFUSERS_VAE_090, DIFFUSERS_SCHEDULER_090),
    '0.9.1': (DIFFUSERS_TRANSFORMER_090, DIFFUSERS_VAE_091, DIFFUSERS_SCHEDULER_090),
    '0.9.5': (DIFFUSERS_TRANSFORMER_090, DIFFUSERS_VAE_095, None),
    '0.9.7': (DIFFUSERS_TRANSFORMER_097, DIFFUSERS_VAE_095, None),
}


def official_metadata(name: str, tiny: bool = True) -> dict:
  """The `config` JSON (as a dict) of release `name`'s single file, shrunk unless tiny=False."""
  _, transformer, vae, scheduler, allowed = RELEASES[name]
  out = {'transformer': shrink(transformer, 'transformer') if tiny else copy.deepcopy(transformer),
         'vae': shrink(vae, 'vae') if tiny else copy.deepcopy(vae),
         'scheduler': copy.deepcopy(scheduler)}
  if allowed is not None:
    out['allowed_inference_steps'] = list(allowed)
  return out


def diffusers_scheduler_095() -> dict:
  """diffusers' converter's 0.9.5 / 0.9.7 scheduler config, as save_pretrained writes it."""
  from diffusers import FlowMatchEulerDiscreteScheduler
  return dict(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False).config)


# -- shrinking -----------------------------------------------------------------------------------

LATENT = 8  # latent channels of every tiny model (released: 128)
TINY_TRANSFORMER = dict(num_layers=2, num_attention_heads=2, attention_head_dim=8,
                        cross_attention_dim=16, caption_channels=32, in_channels=LATENT,
                        out_channels=LATENT)
VAE_BASE = 8  # official base channels of the tiny VAEs (released: the class default 128)
WIDTH_DIVISOR = 16  # diffusers block_out_channels / decoder_block_out_channels: 128 -> 8


def _shrink_block(entry: list) -> list:
  """A block entry with num_layers 1, in the same form (bare int, dict, empty dict)."""
  name, params = entry
  if name == 'res_x' and isinstance(params, int):
    return [name, 1]
  if isinstance(params, dict) and 'num_layers' in params:
    return [name, {k: (1 if k == 'num_layers' else v) for k, v in params.items()}]
  return [name, copy.deepcopy(params)]


def shrink(config: dict, kind: str) -> dict:
  """`config` (a recorded entry) with tiny size fields; kind: 'transformer', 'vae',
  'upsampler', 'diffusers_transformer', 'diffusers_vae'. Every other key is kept as is."""
  out = copy.deepcopy(config)
  if kind in ('transformer', 'diffusers_transformer'):
    out.update({k: v for k, v in TINY_TRANSFORMER.items() if k in out})
  elif kind == 'vae':
    out['latent_channels'] = LATENT
    for key in ('blocks', 'encoder_blocks', 'decoder_blocks'):
      if key in out:
        out[key] = [_shrink_block(b) for b in out[key]]
    out['encoder_base_channels'] = out['decoder_base_channels'] = VAE_BASE
  elif kind == 'diffusers_vae':
    out['latent_channels'] = LATENT
    for key in ('block_out_channels', 'decoder_block_out_channels'):
      if key in out:
        out[key] = [c // WIDTH_DIVISOR for c in out[key]]
    for key in ('layers_per_block', 'decoder_layers_per_block'):
      if key in out:
        out[key] = [1] * len(out[key])
  elif kind == 'upsampler':
    out.update(in_channels=LATENT, mid_channels=32, num_blocks_per_stage=1)
  else:
    raise ValueError(f"kind={kind!r}")
  return out
